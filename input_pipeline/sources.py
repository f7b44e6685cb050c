"""The built datasets a data config names: opening their splits, their per-record metadata, and the
example ids that name a record across sources and runs."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from input_pipeline.builders import HAS_BUILDER_CONFIGS, build_command, check_name, get_builder

# Per-record fields read without decoding the pixels (the metadata scan of a split).
META_KEYS = ("sha256", "phash", "patient_id", "source", "label", "has_mask", "file_name")


def sources(data_cfg) -> list[tuple[str, str | None]]:
    """(builder name, builder config) per source of ``data.name`` ("a+b/config": merged sources, a
    per-source config, else ``data.builder_config`` for builders that have configs)."""
    out = []
    for part in str(data_cfg.name).split("+"):
        name, _, config = part.strip().partition("/")
        if not config and check_name(name) in HAS_BUILDER_CONFIGS:
            config = data_cfg.builder_config or None
        out.append((name, config or None))
    return out


def dataset_name(name: str, config: str | None) -> str:
    """``name/config`` (or ``name``): how outputs name a source dataset."""
    return f"{name}/{config}" if config else name


def data_dir_of(data_cfg) -> str:
    return str(Path(data_cfg.data_dir).expanduser())


@functools.lru_cache(maxsize=64)
def prepared_builder(name: str, config: str | None, data_dir: str):
    """The builder of a built dataset; FileNotFoundError with the build command if it is not built."""
    b = get_builder(name, data_dir, builder_config=config)
    if not b.is_prepared():
        raise FileNotFoundError(f"dataset {dataset_name(name, config)} is not built in data_dir {data_dir}; "
                                f"build it with: {build_command(name, data_dir, config)}")
    return b


def split_names(name: str, config: str | None, data_dir: str) -> list[str]:
    """The splits a built dataset has, sorted."""
    return sorted(prepared_builder(name, config, data_dir).info.splits.keys())


@functools.lru_cache(maxsize=64)
def open_split(name: str, config: str | None, data_dir: str, split: str, *, skip_pixels: bool = False):
    """TFDS data source of ``split`` (any TFDS split string); ValueError naming the splits that exist.
    ``skip_pixels`` leaves image and mask undecoded (metadata scans)."""
    import tensorflow_datasets as tfds

    b = prepared_builder(name, config, data_dir)
    decoders = {"image": tfds.decode.SkipDecoding(), "mask": tfds.decode.SkipDecoding()} if skip_pixels else None
    try:
        return b.as_data_source(split=split, decoders=decoders)
    except (ValueError, KeyError) as e:
        raise ValueError(f"dataset {dataset_name(name, config)}: bad split {split!r} (available: "
                         f"{split_names(name, config, data_dir)}): {e}") from None


@functools.lru_cache(maxsize=64)
def split_metadata(name: str, config: str | None, data_dir: str, split: str) -> dict[str, list]:
    """Per-record metadata of a split (``META_KEYS``; one pass per process, pixels not decoded)."""
    ds = open_split(name, config, data_dir, split, skip_pixels=True)
    meta: dict[str, list] = {k: [] for k in META_KEYS}
    for i in range(len(ds)):
        ex = ds[i]
        for k in META_KEYS:
            v = ex[k]
            meta[k].append(v.decode() if isinstance(v, bytes) else bool(v) if k == "has_mask" else int(v))
    return meta


def example_ids(datasets: list[str], file_names: list[str]) -> np.ndarray:
    """``dataset:file_name#k`` per record, k counting earlier records of the same dataset and file (0 for
    the builders here, which store one image per file): unique over a merged pool and, as it depends on
    the built files only, the same in every run and under every split protocol."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for d, f in zip(datasets, file_names, strict=True):
        k = seen.get((d, f), 0)
        seen[(d, f)] = k + 1
        out.append(f"{d}:{f}#{k}")
    return np.array(out, dtype=str)


def patient_keys(meta: dict[str, list]) -> list[str]:
    """Dataset-qualified patient id per record ("" where unknown): ``name/config:pid``."""
    return [f"{d}:{p}" if p else "" for d, p in zip(meta["dataset"], meta["patient_id"], strict=True)]
