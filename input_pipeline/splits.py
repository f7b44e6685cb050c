"""Split protocols: which records of the configured sources form a split, and what each record is.

``data.split_by``:
- ``"builder"``: each dataset's own splits, named in TFDS syntax (``fold1+fold2``, ``train[:90%]``).
- ``"group"``: pool every split of every source and split by *split group* (same patient, or exact /
  near copies; ``dedup``): no patient or copy crosses splits.
- ``"random"``: pool every split of every source and split each record (slice) on its own: the
  paper's protocol, which leaks copies and patients across splits. ``data.dedup`` still applies
  (dropping exact / near copies first), so the leak of copies and of patients can be measured apart;
  ``split_protocol`` names the variant in every output.

The group and random protocols draw a record's split from a hash of the seed and its group's key
(``group_split_fractions``; deterministic, independent of the other records), or with
``data.num_folds`` = K > 0 cut the pool into K stratified folds of whole groups (slices for
"random"): test = fold ``data.fold``, and the other folds' groups are split into train and
validation by the train / validation shares of ``group_split_fractions`` (so K = 3 still trains on
most of the pool). Builder folds (Figshare's patient-disjoint cvind folds ``fold1..fold5``) are
addressed by split strings; ``fold_splits`` gives the K split settings either way.

Evaluation batches carry each example's identity (``identities``): an id unique across sources and
stable across runs, and the cluster a bootstrap resamples (patient, else duplicate group, else the
slice), named by ``clusters``.
"""
from __future__ import annotations

import collections
import functools
import hashlib
from typing import Any

import numpy as np

from input_pipeline import dedup
from input_pipeline.sources import (
    META_KEYS,
    data_dir_of,
    dataset_name,
    example_ids,
    open_split,
    patient_keys,
    sources,
    split_metadata,
    split_names,
)

SPLIT_BY = ("builder", "group", "random")
FOLD_SPLITS = ("train", "validation", "test")  # the split names when data.num_folds > 0


class Index:
    """The records of one resolved split: parallel arrays of (source part, record index)."""

    def __init__(self, parts: list[tuple[str, str | None, str]], part: np.ndarray, record: np.ndarray):
        self.parts, self.part, self.record = parts, part, record

    def __len__(self) -> int:
        return len(self.record)


def _check(data_cfg) -> None:
    checks = (("dedup", ("none", "exact", "near")), ("task", ("classification", "segmentation", "fcmae")),
              ("split_by", SPLIT_BY))
    for field, allowed in checks:
        if data_cfg[field] not in allowed:
            raise ValueError(f"config field data.{field} must be one of {list(allowed)}, got {data_cfg[field]!r}")
    k, fold = int(data_cfg.num_folds), int(data_cfg.fold)
    if k and data_cfg.split_by == "builder":
        raise ValueError("config field data.num_folds applies to split_by='group' or 'random'; builder folds "
                         "(Figshare's fold1..fold5) are chosen with train_split / eval_split / test_split "
                         "(input_pipeline.fold_splits writes them)")
    frac = float(data_cfg.get("label_fraction", 1.0))
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"config field data.label_fraction must be in (0, 1], got {frac}")
    if k == 1 or k < 0 or (k and not 0 <= fold < k):
        raise ValueError(f"config fields data.num_folds={k}, data.fold={fold}: expected num_folds 0 (off) or >= 2 "
                         "and 0 <= fold < num_folds")


@functools.lru_cache(maxsize=16)
def _pool_meta(parts: tuple[tuple[str, str | None, str], ...], data_dir: str) -> dict[str, list]:
    """Metadata of every record of `parts`, in order, plus its ``dataset``."""
    metas = [split_metadata(n, c, data_dir, s) for n, c, s in parts]
    meta = {k: [v for m in metas for v in m[k]] for k in metas[0]}
    meta["dataset"] = [dataset_name(n, c) for (n, c, _), m in zip(parts, metas, strict=True) for _ in m["label"]]
    return meta


@functools.lru_cache(maxsize=16)
def _duplicate_groups(parts: tuple[tuple[str, str | None, str], ...], data_dir: str, bits: int | None) -> np.ndarray:
    """Bounded duplicate groups of the pooled records (cached: a pairwise pass over the pool)."""
    meta = _pool_meta(parts, data_dir)
    return dedup.duplicate_groups(meta["sha256"], meta["phash"], bits, patient_keys(meta))


def _assign(data_cfg, parts: tuple, data_dir: str) -> np.ndarray:
    """Split name per pooled record under the group / random protocol."""
    meta = _pool_meta(parts, data_dir)
    n = len(meta["sha256"])
    fractions = dict(data_cfg.group_split_fractions)
    if data_cfg.split_by == "group":
        near = _duplicate_groups(parts, data_dir, int(data_cfg.near_dup_bits))
        units, keys = dedup.split_groups(near, patient_keys(meta)), list(meta["sha256"])
    else:  # random: every record on its own, keyed by its id (exact copies split independently)
        units, keys = np.arange(n), list(example_ids(meta["dataset"], meta["file_name"]))
    seed, k = int(data_cfg.seed), int(data_cfg.num_folds)
    if not k:
        return dedup.assign_splits(units, keys, fractions, seed)
    folds = dedup.assign_folds(units, np.asarray(meta["label"]), keys, k, seed)
    shares = {s: float(fractions.get(s, 0.0)) for s in ("train", "validation")}
    if shares["train"] <= 0:
        raise ValueError(f"config field data.group_split_fractions needs a positive 'train' share, got {fractions}")
    rest = dedup.assign_splits(units, keys, shares, seed) if shares["validation"] > 0 else np.full(n, "train", object)
    return np.where(folds == int(data_cfg.fold), "test", rest)


def resolve(data_cfg, split: str) -> Index:
    """Records of `split` after source merging, task filtering, de-duplication and the split protocol."""
    _check(data_cfg)
    data_dir = data_dir_of(data_cfg)
    srcs = sources(data_cfg)
    if data_cfg.split_by == "builder":
        # "fold1+fold2" is fold1's records then fold2's (as TFDS reads it): one part each, so the prepared
        # cache (input_pipeline.cache, one per built split) is shared by every fold's split string
        pieces = [p.strip() for p in str(split).split("+")]
        if not all(pieces):
            raise ValueError(f"split {split!r} of {data_cfg.name}: an empty name between '+' signs")
        parts = tuple((n, c, p) for n, c in srcs for p in pieces)
    else:
        allowed = FOLD_SPLITS if int(data_cfg.num_folds) else list(data_cfg.group_split_fractions)
        if split not in allowed:
            raise ValueError(f"with data.split_by={data_cfg.split_by!r}"
                             f"{' and data.num_folds' if int(data_cfg.num_folds) else ''} the split must be one "
                             f"of {list(allowed)}, got {split!r}")
        parts = tuple((n, c, s) for n, c in srcs for s in split_names(n, c, data_dir))
    sizes = [len(open_split(n, c, data_dir, s)) for n, c, s in parts]
    part = np.concatenate([np.full(k, i) for i, k in enumerate(sizes)]).astype(np.int64)
    record = np.concatenate([np.arange(k) for k in sizes]).astype(np.int64)
    thin = split == data_cfg.train_split and float(data_cfg.get("label_fraction", 1.0)) < 1.0
    if data_cfg.split_by == "builder" and data_cfg.dedup == "none" and data_cfg.task != "segmentation" and not thin:
        return Index(list(parts), part, record)  # no metadata needed
    meta = _pool_meta(parts, data_dir)
    keep = np.ones(len(record), bool)
    if data_cfg.task == "segmentation":
        keep &= np.array(meta["has_mask"], bool)
    if data_cfg.dedup != "none":
        bits = int(data_cfg.near_dup_bits) if data_cfg.dedup == "near" else None
        # one representative per group: its leader
        keep &= _duplicate_groups(parts, data_dir, bits) == np.arange(len(record))
    if data_cfg.split_by != "builder":
        keep &= _assign(data_cfg, parts, data_dir) == split
    index = Index(list(parts), part[keep], record[keep])
    return label_subset(data_cfg, index) if thin else index


# ----------------------------------------------------------------------------- low-label fine-tunes


def label_subset(data_cfg, index: Index) -> Index:
    """The records of ``index`` whose cluster (patient, else duplicate group, else slice: ``clusters``) is
    among the ``data.label_fraction`` share drawn for each class, at least one cluster per class.

    A cluster's class is its most frequent label. Clusters are ranked by a hash of (``data.seed``, cluster
    id), so the draw is deterministic, independent of record order, and nested: a smaller fraction keeps a
    subset of a larger one's clusters.
    """
    frac = float(data_cfg.label_fraction)
    meta = index_metadata(data_cfg, index)
    cid, _ = clusters(meta, int(data_cfg.near_dup_bits))
    labels = np.asarray(meta["label"])
    by_class: dict[int, set[str]] = collections.defaultdict(set)
    for c in np.unique(cid):
        vals, counts = np.unique(labels[cid == c], return_counts=True)
        by_class[int(vals[np.argmax(counts)])].add(str(c))
    seed = int(data_cfg.seed)
    chosen: set[str] = set()
    for members in by_class.values():
        ranked = sorted(members, key=lambda c: (_rank_hash(seed, c), c))
        chosen.update(ranked[:max(1, int(np.ceil(frac * len(ranked))))])
    keep = np.isin(cid, sorted(chosen))
    return Index(index.parts, index.part[keep], index.record[keep])


def _rank_hash(seed: int, key: str) -> int:
    """A stable 64-bit rank of ``key`` under ``seed`` (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")


def index_metadata(data_cfg, index: Index) -> dict[str, list]:
    """``META_KEYS`` + ``dataset`` + ``example_id`` for the records of a resolved split, in its order."""
    data_dir = data_dir_of(data_cfg)
    metas = [split_metadata(n, c, data_dir, s) for n, c, s in index.parts]
    out: dict[str, list] = {k: [] for k in (*META_KEYS, "dataset")}  # every key, also for an empty split
    for p, r in zip(index.part.tolist(), index.record.tolist(), strict=True):
        for k, v in metas[p].items():
            out[k].append(v[r])
        out["dataset"].append(dataset_name(*index.parts[p][:2]))
    out["example_id"] = list(example_ids(out["dataset"], out["file_name"]))
    return out


CLUSTER_KINDS = ("patient", "duplicate_group", "slice")


def clusters(meta: dict[str, list], near_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(cluster_id, cluster_kind) per record of one evaluated split: the resampling unit of a bootstrap.

    A cluster joins the split's records of the same patient and their exact / near copies
    (``dedup.split_groups`` over the bounded duplicate groups). Its kind is "patient" if any member
    has a patient id (id ``patient:<dataset>:<pid>``, the smallest such key), else "duplicate_group"
    if it has several members (id ``group:<smallest example id>``), else "slice" (``slice:<example id>``).
    Ids are named after members, not positions: the same split gives the same ids in every run.
    """
    pkeys = patient_keys(meta)
    ids = meta["example_id"]
    comp = dedup.split_groups(dedup.duplicate_groups(meta["sha256"], meta["phash"], near_bits, pkeys), pkeys)
    members: dict[int, list[int]] = collections.defaultdict(list)
    for i, g in enumerate(comp.tolist()):
        members[g].append(i)
    cid = np.empty(len(ids), dtype=object)
    kind = np.empty(len(ids), dtype=object)
    for m in members.values():
        pats = [pkeys[i] for i in m if pkeys[i]]
        if pats:
            name, k = f"patient:{min(pats)}", "patient"
        elif len(m) > 1:
            name, k = f"group:{min(ids[i] for i in m)}", "duplicate_group"
        else:
            name, k = f"slice:{ids[m[0]]}", "slice"
        cid[m], kind[m] = name, k
    return cid.astype(str), kind.astype(str)


def identities(data_cfg, index: Index) -> dict[str, np.ndarray]:
    """Host-side per-example keys of an evaluation split: ``example_id``, ``cluster_id``,
    ``cluster_kind``, ``source`` (the record's source field, e.g. ``brain_tumor_mri:<root>``) and
    ``dataset`` (``name/config``); numpy string arrays in the index's order."""
    meta = index_metadata(data_cfg, index)
    cid, kind = clusters(meta, int(data_cfg.near_dup_bits))
    return {"example_id": np.asarray(meta["example_id"], str), "cluster_id": cid, "cluster_kind": kind,
            "source": np.asarray(meta["source"], str), "dataset": np.asarray(meta["dataset"], str)}


def describe_clusters(data_cfg, split: str) -> dict[str, Any]:
    """The resampling unit of `split`: ``cluster_kind`` ("patient", "duplicate_group", "slice", or
    "mixed" when the examples' kinds differ), ``num_examples``, ``num_clusters`` and, per dataset, how
    many examples fall in clusters of each kind (``by_dataset``)."""
    ids = identities(data_cfg, resolve(data_cfg, split))
    by: dict[str, dict[str, int]] = {}
    for d, k in zip(ids["dataset"].tolist(), ids["cluster_kind"].tolist(), strict=True):
        by.setdefault(d, dict.fromkeys(CLUSTER_KINDS, 0))[k] += 1
    kinds = sorted(set(ids["cluster_kind"].tolist()))
    return {"cluster_kind": kinds[0] if len(kinds) == 1 else "mixed", "num_examples": len(ids["example_id"]),
            "num_clusters": len(set(ids["cluster_id"].tolist())), "by_dataset": by}


def split_protocol(data_cfg) -> str:
    """One phrase naming the split protocol (and de-duplication) of `data_cfg`, for every output."""
    _check(data_cfg)
    k, fold = int(data_cfg.num_folds), int(data_cfg.fold)
    folds = f", {k}-fold, test fold {fold + 1}" if k else ""
    bits = int(data_cfg.near_dup_bits)
    if data_cfg.split_by == "random":
        return {
            "none": "random slice-level split (the paper's protocol; leaks copies and patients)",
            "exact": "random slice-level split after dropping exact duplicates (leaks near copies and patients)",
            "near": f"random slice-level split after dropping exact and near duplicates (pHash within {bits} "
                    "bits; leaks patients)",
        }[data_cfg.dedup] + folds
    dropped = {"none": "", "exact": ", exact duplicates dropped",
               "near": f", exact and near duplicates (pHash within {bits} bits) dropped"}[data_cfg.dedup]
    if data_cfg.split_by == "group":
        return f"split by patient and duplicate group (no patient or copy crosses splits){folds}{dropped}"
    return (f"the datasets' own splits (train {data_cfg.train_split}, validation {data_cfg.eval_split}, "
            f"test {data_cfg.test_split}; copies between them are not checked){dropped}")


def fold_splits(data_cfg, num_folds: int) -> list[dict[str, Any]]:
    """The data-config overrides of each of `num_folds` folds, for a suite driver
    (``cfg.data.update(spec)``).

    - split_by "builder": every source must have splits fold1..foldK (Figshare's cvind folds,
      K = 5): fold i tests on fold i, validates on the next fold and trains on the rest; a source
      without folds is a ValueError naming the splits it has.
    - split_by "group" / "random": grouped (slice-level for "random") K-fold over the pool:
      ``num_folds`` = K, ``fold`` = i, splits train / validation / test.
    """
    if num_folds < 2:
        raise ValueError(f"a fold suite needs at least 2 folds, got {num_folds}")
    if data_cfg.split_by != "builder":
        return [{"num_folds": num_folds, "fold": i, "train_split": "train", "eval_split": "validation",
                 "test_split": "test"} for i in range(num_folds)]
    data_dir = data_dir_of(data_cfg)
    for name, config in sources(data_cfg):
        have = split_names(name, config, data_dir)
        folds = sorted((s for s in have if s.startswith("fold") and s[4:].isdigit()), key=lambda s: int(s[4:]))
        if not folds:
            raise ValueError(f"dataset {dataset_name(name, config)} has no folds (its splits: {', '.join(have)}); "
                             "use data.split_by='group' for a grouped K-fold over its patients / duplicate groups")
        if folds != [f"fold{i}" for i in range(1, num_folds + 1)]:
            raise ValueError(f"dataset {dataset_name(name, config)} has folds {', '.join(folds)}, not the "
                             f"{num_folds} asked for; ask for {len(folds)} folds or use data.split_by='group'")
    if num_folds < 3:
        raise ValueError(f"builder folds need at least 3 (test, validation and training folds), got {num_folds}")
    out = []
    for i in range(num_folds):
        val = (i + 1) % num_folds
        train = "+".join(f"fold{j + 1}" for j in range(num_folds) if j not in (i, val))
        out.append({"num_folds": 0, "fold": 0, "train_split": train, "eval_split": f"fold{val + 1}",
                    "test_split": f"fold{i + 1}"})
    return out
