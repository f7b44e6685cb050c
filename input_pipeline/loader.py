"""grain loaders over the built TFDS array_record datasets.

Order is a pure function of (seed, step): the per-host stream position j maps to global step
``j // b`` and slot ``j % b``; the epoch's permutation is drawn from ``(seed, epoch)`` and the
augmentation from ``(seed, epoch, global position)``. So a resumed iterator (grain's
``get_state()/set_state()``, a small JSON-able dict) replays exactly the batches an uninterrupted run
would have seen, and the union of all hosts' batches does not depend on the host count.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

import ml_collections
import numpy as np

from input_pipeline import transforms
from input_pipeline.builders import build_command, builder_class, get_builder
from input_pipeline.features import CLASS_NAMES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INFINITE = 2**62


def default_data_config() -> ml_collections.ConfigDict:
    """Data fields shared by every experiment config (override per experiment)."""
    c = ml_collections.ConfigDict()
    # Dataset: one name, or several joined by "+" to merge sources; "name/config" picks a builder
    # config per source, otherwise `builder_config` applies to builders that have configs.
    c.name = "brain_phantoms"
    c.builder_config = "small"
    c.data_dir = os.environ.get("BRAIN_JAX_DATA", str(Path("~/tensorflow_datasets").expanduser()))
    # Split strings in TFDS syntax ("fold1+fold2+fold3+fold4", "train[:90%]") when split_by="builder";
    # train / validation / test (keys of group_split_fractions) when split_by="group".
    c.train_split = "train"
    c.eval_split = "validation"
    c.test_split = "test"
    c.task = "classification"  # or "segmentation": keeps only examples that carry a mask
    c.num_classes = len(CLASS_NAMES)
    c.image_size = 128
    c.upper_percentile = 99.5  # per-image intensity normalisation: min -> 0, this percentile -> 1
    # Normalisation of the pretrained weights in use (ImageNet by default; ViT uses 0.5 / 0.5).
    c.mean = IMAGENET_MEAN
    c.std = IMAGENET_STD
    c.augment = ml_collections.ConfigDict(dict(
        enabled=True, hflip=True, vflip=False, rotate_deg=10.0, scale_min=0.9, scale_max=1.1,
        brightness=0.1, contrast=0.1))
    # Duplicates: "none", "exact" (same pixels) or "near" (exact + pHash within near_dup_bits).
    c.dedup = "none"
    c.near_dup_bits = 4
    # "builder": the builder's own splits; "group": pool every split of every source, then split by
    # group with these fractions (deterministic from `seed`), where a group joins records of the same
    # patient and exact / near duplicates (within near_dup_bits), so no copy crosses a split.
    c.split_by = "builder"
    c.group_split_fractions = ml_collections.ConfigDict(dict(train=0.7, validation=0.15, test=0.15))
    c.seed = 0
    # 0 = in-process; >0 = grain worker processes (same batches; resume with the same value, as the
    # iterator state's format depends on it).
    c.num_workers = 0
    return c


# ----------------------------------------------------------------------------- sources


def _sources(cfg) -> list[tuple[str, str | None]]:
    out = []
    for part in str(cfg.name).split("+"):
        name, _, config = part.strip().partition("/")
        if not config and builder_class(name).BUILDER_CONFIGS:
            config = cfg.builder_config or None
        out.append((name, config or None))
    return out


@functools.lru_cache(maxsize=64)
def _open(name: str, config: str | None, data_dir: str, split: str | None):
    """TFDS data source (or dict of them for split=None); FileNotFoundError if not built."""
    b = get_builder(name, data_dir, builder_config=config)
    if not b.is_prepared():
        shown = f"{name}/{config}" if config else name
        raise FileNotFoundError(
            f"dataset {shown} is not built in data_dir {data_dir}; build it with: "
            f"{build_command(name, data_dir, config)}"
        )
    if split is not None:
        try:
            return b.as_data_source(split=split)
        except (ValueError, KeyError) as e:
            raise ValueError(f"dataset {name}: bad split {split!r} (available: "
                             f"{sorted(b.info.splits.keys())}): {e}") from None
    return {s: b.as_data_source(split=s) for s in sorted(b.info.splits.keys())}


_META_KEYS = ("sha256", "phash", "patient_id", "source", "label", "has_mask", "file_name")


@functools.lru_cache(maxsize=64)
def _metadata(name: str, config: str | None, data_dir: str, split: str) -> dict[str, list]:
    """Per-record metadata of a split (decodes every record once per process)."""
    ds = _open(name, config, data_dir, split)
    meta: dict[str, list] = {k: [] for k in _META_KEYS}
    for i in range(len(ds)):
        ex = ds[i]
        for k in _META_KEYS:
            v = ex[k]
            meta[k].append(v.decode() if isinstance(v, bytes) else (bool(v) if k == "has_mask" else v))
    return meta


class Index:
    """The records of one resolved split: parallel arrays of (source part, record index)."""

    def __init__(self, parts: list[tuple[str, str | None, str]], part: np.ndarray, record: np.ndarray):
        self.parts, self.part, self.record = parts, part, record

    def __len__(self) -> int:
        return len(self.record)


def resolve(cfg, split: str) -> Index:
    """Records of `split` after source merging, de-duplication and (optional) group re-splitting."""
    data_dir = str(Path(cfg.data_dir).expanduser())
    srcs = _sources(cfg)
    if cfg.dedup not in ("none", "exact", "near"):
        raise ValueError(f"data.dedup must be 'none', 'exact' or 'near', got {cfg.dedup!r}")
    if cfg.task not in ("classification", "segmentation"):
        raise ValueError(f"data.task must be 'classification' or 'segmentation', got {cfg.task!r}")
    if cfg.split_by == "builder":
        parts = [(n, c, split) for n, c in srcs]
        sizes = [len(_open(n, c, data_dir, split)) for n, c in srcs]
    elif cfg.split_by == "group":
        if split not in cfg.group_split_fractions:
            raise ValueError(f"with data.split_by='group' the split must be one of "
                             f"{list(cfg.group_split_fractions)}, got {split!r}")
        parts = [(n, c, s) for n, c in srcs for s in _open(n, c, data_dir, None)]
        sizes = [len(_open(n, c, data_dir, s)) for n, c, s in parts]
    else:
        raise ValueError(f"data.split_by must be 'builder' or 'group', got {cfg.split_by!r}")
    part = np.concatenate([np.full(k, i) for i, k in enumerate(sizes)]).astype(np.int64)
    record = np.concatenate([np.arange(k) for k in sizes]).astype(np.int64)
    need_meta = cfg.dedup != "none" or cfg.split_by == "group" or cfg.task == "segmentation"
    if not need_meta:
        return Index(parts, part, record)
    from input_pipeline import dedup

    metas = [_metadata(n, c, data_dir, s) for n, c, s in parts]
    meta = {k: [v for m in metas for v in m[k]] for k in _META_KEYS}
    keep = np.ones(len(record), bool)
    if cfg.task == "segmentation":
        keep &= np.array(meta["has_mask"], bool)
    near_bits = int(cfg.near_dup_bits)
    if cfg.dedup != "none":
        bits = near_bits if cfg.dedup == "near" else None
        groups = dedup.duplicate_groups(meta["sha256"], meta["phash"], bits)
        keep &= groups == np.arange(len(record))  # one representative: the first member
    if cfg.split_by == "group":
        # Copies always stay together, whether or not they are dropped: near groups + same patient.
        near = dedup.duplicate_groups(meta["sha256"], meta["phash"], near_bits)
        patients = [f"{s}:{p}" if p else "" for s, p in zip(meta["source"], meta["patient_id"])]
        sg = dedup.split_groups(near, patients)
        names = dedup.assign_splits(sg, meta["sha256"], dict(cfg.group_split_fractions), int(cfg.seed))
        keep &= names == split
    return Index(parts, part[keep], record[keep])


def num_examples(data_cfg, split: str) -> int:
    """Number of examples of `split` as the loader sees them (after dedup / filtering)."""
    return len(resolve(data_cfg, split))


# ----------------------------------------------------------------------------- loader


class _Example:
    """Position in this host's stream -> transformed example (picklable for grain workers)."""

    def __init__(self, cfg, index: Index, *, global_batch: int, train: bool, seed: int,
                 process_index: int, process_count: int):
        self.data_dir = str(Path(cfg.data_dir).expanduser())
        self.parts, self.part, self.record = index.parts, index.part, index.record
        self.n = len(index)
        self.global_batch, self.train, self.seed = global_batch, train, seed
        self.per_host = global_batch // process_count
        self.host = process_index
        self.size = int(cfg.image_size)
        self.mean, self.std = tuple(cfg.mean), tuple(cfg.std)
        self.percentile = float(cfg.upper_percentile)
        self.aug = cfg.augment if (train and cfg.augment.enabled) else None
        self.steps_per_epoch = self.n // global_batch if train else -(-self.n // global_batch)
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def __call__(self, j: int) -> dict[str, Any]:
        step, slot = divmod(int(j), self.per_host)
        epoch, s = divmod(step, self.steps_per_epoch)
        pos = s * self.global_batch + self.host * self.per_host + slot
        if pos >= self.n:  # evaluation padding
            return self._padding()
        k = int(self._permutation(epoch)[pos]) if self.train else pos
        name, config, split = self.parts[self.part[k]]
        ex = _open(name, config, self.data_dir, split)[int(self.record[k])]
        img = transforms.normalise_intensity(ex["image"], self.percentile)
        img, mask, spacing = transforms.resize(img, ex["mask"], ex["pixel_spacing_mm"], self.size)
        if self.aug is not None:
            rng = np.random.default_rng([self.seed, epoch, pos, 1])
            img, mask, spacing = transforms.augment(img, mask, spacing, rng, self.aug)
        return {
            "image": transforms.to_model_input(img, self.mean, self.std),
            "label": np.int32(ex["label"]),
            "mask": (mask > 0).astype(np.int32),
            "has_mask": np.bool_(ex["has_mask"]),
            "spacing_mm": np.asarray(spacing, np.float32),
            "valid": np.bool_(True),
        }

    def _padding(self) -> dict[str, Any]:
        s = self.size
        return {"image": np.zeros((s, s, 3), np.float32), "label": np.int32(0),
                "mask": np.zeros((s, s), np.int32), "has_mask": np.bool_(False),
                "spacing_mm": np.zeros(2, np.float32), "valid": np.bool_(False)}


class Loader:
    """Iterable of per-host numpy batches; ``iter()`` gives a grain iterator with get_state/set_state
    (restorable with the same process and worker counts), ``resumable()`` one whose state is the step."""

    def __init__(self, build: Callable[[int], Any], example: _Example, num_batches: int | None):
        self._build = build  # first step -> grain IterDataset from that step on
        self._example = example
        self.num_examples = example.n
        self.per_host_batch_size = example.per_host
        self.steps_per_epoch = example.steps_per_epoch
        self.num_batches = num_batches  # None = infinite

    def __iter__(self):
        return iter(self._build(0))

    def resumable(self) -> StepIterator:
        ex = self._example
        return StepIterator(lambda step: iter(self._build(step)), global_batch_size=ex.global_batch, seed=ex.seed)

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("infinite loader (num_epochs=None) has no length")
        return self.num_batches


def make_loader(data_cfg, split: str, *, global_batch_size: int, train: bool, seed: int,
                num_epochs: int | None = None, process_index: int | None = None,
                process_count: int | None = None) -> Loader:
    """Per-host loader of `split`.

    train=True: reshuffled every epoch from `seed`, augmented, drop remainder, infinite when
    num_epochs is None. train=False: fixed order, no augmentation, one pass when num_epochs is None,
    last batch padded with ``valid=False`` so every example is counted exactly once over all hosts.
    process_index / process_count default to jax.process_index() / jax.process_count().
    """
    import grain

    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple of the "
                         f"process count {process_count}")
    index = resolve(data_cfg, split)
    if len(index) == 0:
        raise ValueError(f"split {split!r} of {data_cfg.name} is empty after filtering")
    if train and len(index) < global_batch_size:
        raise ValueError(f"split {split!r} of {data_cfg.name} has {len(index)} examples, fewer than "
                         f"global_batch_size {global_batch_size} (training drops the remainder)")
    ex = _Example(data_cfg, index, global_batch=global_batch_size, train=train, seed=seed,
                  process_index=process_index, process_count=process_count)
    epochs = num_epochs if (num_epochs is not None or train) else 1
    num_batches = None if epochs is None else epochs * ex.steps_per_epoch
    length = _INFINITE if num_batches is None else num_batches * ex.per_host
    workers = int(data_cfg.num_workers)
    if workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain reads absl flags; outside an absl app use defaults
            flags.FLAGS.mark_as_parsed()

    def build(first_step: int):
        # Element j of this host's stream is a pure function of (seed, j): starting at a step is exact.
        ds = grain.MapDataset.range(first_step * ex.per_host, length).map(ex).batch(ex.per_host, drop_remainder=True)
        it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers)) if workers > 0 else it

    return Loader(build, ex, num_batches)


class StepIterator:
    """Training batches from a step on. Its state is ``{"step", "global_batch_size", "seed"}``: the batch
    order depends on nothing else, so a run resumes exactly with any number of processes or loader
    workers; a different global batch size or seed is refused (the order would differ)."""

    def __init__(self, iterator_from: Callable[[int], Any], *, global_batch_size: int, seed: int):
        self._iterator_from = iterator_from
        self._fixed = {"global_batch_size": int(global_batch_size), "seed": int(seed)}
        self.step = 0
        self._it = None  # built lazily: worker processes start only when batches are asked for

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        if self._it is None:
            self._it = self._iterator_from(self.step)
        batch = next(self._it)
        self.step += 1
        return batch

    def get_state(self) -> dict[str, int]:
        return {"step": self.step, **self._fixed}

    def set_state(self, state: Any) -> None:
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError(f"data position in the checkpoint is {type(state).__name__}, not this loader's "
                             "{'step', 'global_batch_size', 'seed'}: it was written by another loader")
        for key, value in self._fixed.items():
            if key in state and int(state[key]) != value:
                field = "batch_size" if key == "global_batch_size" else key
                raise ValueError(f"the checkpoint's run used config field {field}={state[key]}, this one {value}: "
                                 "the batches would not be the ones the run would have seen; resume with the same value")
        self.step = int(state["step"])
        self._it = None
