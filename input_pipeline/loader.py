"""grain loaders over the built TFDS array_record datasets.

Batches come from the prepared cache (``input_pipeline.cache``: uint8 images already normalised and
resized), one gather per batch; augmentation and the weights' mean / std run on the device
(``input_pipeline.augment``, inside the jitted step). Order is a pure function of (seed, step): the
epoch's permutation is drawn from ``(seed, epoch)``; each example carries its position in the global
batch (``index``), from which the step draws its augmentation. So a resumed iterator replays exactly the
batches an uninterrupted run would have seen, and the union of all hosts' batches does not depend on
the host count.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from input_pipeline import cache
from input_pipeline.features import CLASS_NAMES
from input_pipeline.labels import class_names, label_map
from input_pipeline.sources import data_dir_of, split_metadata
from input_pipeline.splits import Index, identities, resolve

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
    # train / validation / test (keys of group_split_fractions) when split_by="group" or "random".
    c.train_split = "train"
    c.eval_split = "validation"
    c.test_split = "test"
    c.task = "classification"  # or "segmentation": keeps only examples that carry a mask
    # The head's classes, comma-separated in head order ("glioma,meningioma,pituitary"); "" = the
    # classes of the configured sources (input_pipeline.class_names). num_classes: kept for configs
    # written before label sets; 0 = automatic, else it must match (4 with classes="" = the old head).
    c.classes = ""
    c.num_classes = 0
    c.image_size = 128
    c.upper_percentile = 99.5  # per-image intensity normalisation: min -> 0, this percentile -> 1
    # The prepared cache (uint8 images at image_size, per built split; input_pipeline.cache): "" = a
    # brain_jax_cache folder inside data_dir; set it where data_dir is shared or read-only.
    c.cache_dir = ""
    # Normalisation of the pretrained weights in use (ImageNet by default; ViT uses 0.5 / 0.5).
    c.mean = IMAGENET_MEAN
    c.std = IMAGENET_STD
    # Training augmentation, on the device inside the step (input_pipeline.augment): flips, rotation and
    # zoom about the centre, a random resized crop of area share crop_min..crop_max (off at crop_min=0),
    # brightness and contrast.
    c.augment = ml_collections.ConfigDict(dict(
        enabled=True, hflip=True, vflip=False, rotate_deg=10.0, scale_min=0.9, scale_max=1.1,
        brightness=0.1, contrast=0.1, crop_min=0.0, crop_max=1.0))
    # Duplicates: "none", "exact" (same pixels) or "near" (exact + pHash within near_dup_bits).
    c.dedup = "none"
    c.near_dup_bits = 4
    # "builder": the builder's own splits; "group": pool every split of every source, then split by
    # group with these fractions (deterministic from `seed`), where a group joins records of the same
    # patient and exact / near duplicates (within near_dup_bits), so no copy crosses a split;
    # "random": pool likewise and split each slice on its own (the paper's protocol: leaks copies and
    # patients; dedup still applies first, to measure the two leaks apart). input_pipeline.split_protocol
    # names the protocol in outputs.
    c.split_by = "builder"
    c.group_split_fractions = ml_collections.ConfigDict(dict(train=0.7, validation=0.15, test=0.15))
    # K-fold for split_by="group" / "random": num_folds = K (0 = off), test = fold `fold` (0-based),
    # validation / train = the other folds' groups by the train / validation shares above.
    c.num_folds = 0
    c.fold = 0
    c.seed = 0
    # Low-label fine-tunes: the train split keeps this share of its patients / duplicate groups, drawn per
    # class, deterministic from `seed` (splits.label_subset); 1 = all. Other splits are never thinned.
    c.label_fraction = 1.0
    # 0 = in-process; >0 = grain worker processes (same batches; resume with the same value, as the
    # iterator state's format depends on it).
    c.num_workers = 0
    return c


def num_examples(data_cfg, split: str) -> int:
    """Number of examples of `split` as the loader sees them (after dedup / filtering)."""
    return len(resolve(data_cfg, split))


# ----------------------------------------------------------------------------- loader


class _Batches:
    """Step of this host's stream -> the host's batch, gathered from the prepared cache (picklable for grain
    workers): no per-record work, one fancy index per array and source part."""

    def __init__(self, cfg, index: Index, caches: list, *, global_batch: int, train: bool, seed: int,
                 process_index: int, process_count: int, ids: dict[str, np.ndarray] | None = None,
                 head_classes: Sequence[str] | None = None):
        self.parts, self.part, self.record = index.parts, index.part, index.record
        self.caches = caches  # one cache.PartCache per index part
        # stored label -> head index; a run passes its RunSpec's classes, data tools use the config's. Pretraining
        # reads no label (and unlabelled datasets have no classes): its batches carry the stored labels as they are.
        pretraining = cfg.task == "fcmae"
        self.head = None if pretraining else label_map(class_names(cfg) if head_classes is None else head_classes)
        self.data_dir = data_dir_of(cfg)
        self.ids = ids  # host-side per-example strings (evaluation only)
        self.n = len(index)
        self.global_batch, self.train, self.seed = global_batch, train, seed
        self.per_host = global_batch // process_count
        self.host = process_index
        self.size = int(cfg.image_size)
        self.steps_per_epoch = self.n // global_batch if train else -(-self.n // global_batch)
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def __call__(self, step: int) -> dict[str, Any]:
        epoch, s = divmod(int(step), self.steps_per_epoch)
        slots = np.arange(self.per_host)
        pos = s * self.global_batch + self.host * self.per_host + slots
        valid = pos < self.n  # evaluation padding past the end
        k = self._permutation(epoch)[pos] if self.train else np.where(valid, pos, 0)
        b, size = len(pos), self.size
        out = {"image": np.zeros((b, size, size), np.uint8), "label": np.zeros(b, np.int32),
               "mask": np.zeros((b, size, size), np.uint8), "has_mask": np.zeros(b, bool),
               "spacing_mm": np.zeros((b, 2), np.float32), "valid": valid,
               # the example's position in the global batch: the device-side augmentation's key
               "index": (self.host * self.per_host + slots).astype(np.int32)}
        part, record = self.part[k], self.record[k]
        for p in np.unique(part[valid]):
            rows = np.flatnonzero(valid & (part == p))
            got = self.caches[p].gather(record[rows])
            labels = got["label"] if self.head is None else self.head[got["label"]]
            if np.any(labels < 0):
                bad = int(record[rows][np.flatnonzero(labels < 0)[0]])
                name, config, split = self.parts[p]
                meta = split_metadata(name, config, self.data_dir, split)
                raise ValueError(f"{name}:{meta['file_name'][bad]} has label {meta['label'][bad]!r} "
                                 f"({CLASS_NAMES[int(got['label'][np.flatnonzero(labels < 0)[0]])]!r}), which the head "
                                 "does not have (config field data.classes)")
            out["image"][rows] = got["image"]
            out["mask"][rows] = got["mask"]
            out["label"][rows] = labels
            out["has_mask"][rows] = got["has_mask"]
            out["spacing_mm"][rows] = got["spacing"]
        if self.ids is not None:
            out.update({key: np.where(valid, v[k], "") for key, v in self.ids.items()})
        return out


class Loader:
    """Iterable of per-host numpy batches; ``iter()`` gives a grain iterator with get_state/set_state
    (restorable with the same process and worker counts), ``resumable()`` one whose state is the step."""

    def __init__(self, build: Callable[[int], Any], example: _Batches, num_batches: int | None):
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
                process_count: int | None = None, class_names: Sequence[str] | None = None) -> Loader:
    """Per-host loader of `split`.

    Batch keys: ``image`` (B, S, S) uint8 (normalised to 0..255 and resized: ``input_pipeline.cache``),
    ``label`` (B,) int32 head index (``class_names``; the stored label with ``task="fcmae"``), ``mask``
    (B, S, S) uint8, ``has_mask`` (B,) bool, ``spacing_mm`` (B, 2) float32, ``valid`` (B,) bool, ``index``
    (B,) int32 (position in the global batch).
    The step turns them into model input (``input_pipeline.augment.prepare``: augmentation when training,
    mean / std). The split's prepared caches are built on first use (``data.cache_dir``).
    train=True: reshuffled every epoch from `seed`, drop remainder, infinite when
    num_epochs is None. train=False: fixed order, one pass when num_epochs is None,
    last batch padded with ``valid=False`` so every example is counted exactly once over all hosts; its
    batches also carry host-side string arrays ``example_id``, ``cluster_id``, ``cluster_kind``,
    ``source`` and ``dataset`` (``splits.identities``; "" on padding) that are not sent to devices.
    process_index / process_count default to jax.process_index() / jax.process_count(). ``class_names``: the
    head's classes (a run's ``RunSpec.class_names``); by default ``labels.class_names(data_cfg)``.
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
    caches = [cache.open_part(data_cfg, n, c, sp) for n, c, sp in index.parts]
    ex = _Batches(data_cfg, index, caches, global_batch=global_batch_size, train=train, seed=seed,
                  process_index=process_index, process_count=process_count, head_classes=class_names,
                  ids=None if train else identities(data_cfg, index))
    epochs = num_epochs if (num_epochs is not None or train) else 1
    num_batches = None if epochs is None else epochs * ex.steps_per_epoch
    workers = int(data_cfg.num_workers)
    if workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain reads absl flags; outside an absl app use defaults
            flags.FLAGS.mark_as_parsed()

    def build(first_step: int):
        # Batch j of this host's stream is a pure function of (seed, j): starting at a step is exact.
        ds = grain.MapDataset.range(first_step, _INFINITE if num_batches is None else num_batches).map(ex)
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
                                 "the batches would not be the ones the run would have seen; "
                                 "resume with the same value")
        self.step = int(state["step"])
        self._it = None
