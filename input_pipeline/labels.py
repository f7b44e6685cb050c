"""The classes a data config trains and reports, and the one map from dataset labels to the model's head.

Every builder stores its label as an index into ``features.CLASS_NAMES`` and declares the classes it
can hold (``CLASSES``: Figshare has no "notumor"). A pool's head has the classes of its sources, in
``CLASS_NAMES`` order (Figshare alone: glioma, meningioma, pituitary), unless ``data.classes`` lists
them (in head order; a dataset label the list leaves out is an error). ``data.num_classes`` is kept
for configs written before label sets: 0 = automatic; 4 (= len(CLASS_NAMES)) with ``data.classes``
empty = the old head over all of ``CLASS_NAMES``; any other value must equal the number of classes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from input_pipeline.builders import DATASET_CLASSES, check_name
from input_pipeline.features import CLASS_NAMES
from input_pipeline.sources import sources


def dataset_classes(name: str) -> tuple[str, ...]:
    """The classes builder ``name`` can store (a subset of CLASS_NAMES)."""
    return tuple(DATASET_CLASSES[check_name(name)])


def _explicit(data_cfg) -> tuple[str, ...]:
    value = data_cfg.get("classes", "")
    names = [c.strip() for c in value.split(",")] if isinstance(value, str) else [str(c).strip() for c in value]
    names = [c for c in names if c]
    unknown = [c for c in names if c not in CLASS_NAMES]
    if unknown:
        raise ValueError(f"config field data.classes names unknown class(es) {unknown}; "
                         f"expected names from {list(CLASS_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"config field data.classes lists a class twice: {names}")
    return tuple(names)


def class_names(data_cfg) -> tuple[str, ...]:
    """The head's classes for ``data_cfg`` (index = head output), see the module docstring."""
    explicit = _explicit(data_cfg)
    srcs = [name for name, _ in sources(data_cfg)]
    if explicit:
        for name in srcs:
            missing = [c for c in dataset_classes(name) if c not in explicit]
            if missing:
                raise ValueError(f"config field data.classes={','.join(explicit)!r} leaves label(s) {missing} of "
                                 f"dataset {name} unmapped; add them or drop {name} from data.name")
        names = explicit
    else:
        present = {c for name in srcs for c in dataset_classes(name)}
        names = tuple(c for c in CLASS_NAMES if c in present)
    n = int(data_cfg.get("num_classes", 0))
    if n and n != len(names):
        if not explicit and n == len(CLASS_NAMES):
            return tuple(CLASS_NAMES)  # a config from before label sets: the 4-class head
        raise ValueError(f"config field data.num_classes={n}, but {data_cfg.name} has {len(names)} classes "
                         f"{list(names)}; set data.num_classes=0 (automatic) or list the head's classes in "
                         "data.classes")
    return names


def label_map(names: Sequence[str]) -> np.ndarray:
    """Stored label (CLASS_NAMES index) -> head index, -1 for a class the head does not have."""
    out = np.full(len(CLASS_NAMES), -1, np.int32)
    for i, c in enumerate(names):
        out[CLASS_NAMES.index(c)] = i
    return out
