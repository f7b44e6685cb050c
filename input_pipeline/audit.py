"""Duplicate audit and split composition.

``run_audit`` finds exact and near-duplicate images within and across sources and splits and writes
``audit.json`` (counts, groups, example pairs) and ``duplicates.png`` (a contact sheet of example
pairs, cross-split and cross-source pairs first). ``split_composition`` tabulates what a data config's
splits hold (class x source x split, dropped duplicates, copies across splits, largest duplicate
groups); ``write_composition`` writes it as JSON, CSV and markdown.
"""
from __future__ import annotations

import collections
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from input_pipeline import dedup
from input_pipeline.builders import builder_class
from input_pipeline.builders import UNLABELLED
from input_pipeline.features import CLASS_NAMES, to_uint8
from input_pipeline.labels import class_names
from input_pipeline.sources import open_split, patient_keys, split_metadata, split_names
from input_pipeline.splits import index_metadata, resolve, split_protocol

MAX_GROUPS_LISTED = 200
MAX_PAIRS_SHOWN = 16


def parse_entry(entry: str) -> tuple[str, str | None, str | None]:
    """'name[/config][:split]' -> (name, config, split); config defaults to the builder's default."""
    spec, _, split = entry.partition(":")
    name, _, config = spec.partition("/")
    cls = builder_class(name)
    if not config and cls.BUILDER_CONFIGS:
        config = cls.DEFAULT_BUILDER_CONFIG_NAME or cls.BUILDER_CONFIGS[0].name
    return name, config or None, split or None


def _pair_kind(a: dict, b: dict) -> str:
    if a["dataset"] != b["dataset"]:
        return "across_datasets"
    if a["split"] != b["split"]:
        return "across_splits"
    return "within_split"


def run_audit(entries: list[str], data_dir: str, out_dir: str | Path, near_bits: int = 4) -> dict:
    """Audit the given datasets/splits; returns the audit dict (also written to out_dir)."""
    data_dir = str(Path(data_dir).expanduser())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recs: list[dict] = []
    shown: list[dict] = []
    for entry in entries:
        name, config, split = parse_entry(entry)
        splits = [split] if split else split_names(name, config, data_dir)
        for s in splits:
            meta = split_metadata(name, config, data_dir, s)
            ds_name = f"{name}/{config}" if config else name
            shown.append({"dataset": ds_name, "split": s, "num_examples": len(meta["sha256"])})
            for i in range(len(meta["sha256"])):
                recs.append({"dataset": ds_name, "name": name, "config": config, "split": s, "index": i,
                             **{k: meta[k][i] for k in ("sha256", "phash", "patient_id", "file_name", "label")}})
    sha, ph = [r["sha256"] for r in recs], [r["phash"] for r in recs]
    exact = dedup.exact_pairs(sha)
    exact_set = {(min(a, b), max(a, b)) for a, b in exact}
    near = [(a, b, d) for a, b, d in dedup.near_pairs(ph, near_bits) if (a, b) not in exact_set
            and sha[a] != sha[b]]
    patients = [f"{r['dataset']}:{r['patient_id']}" if r["patient_id"] else "" for r in recs]
    groups = dedup.duplicate_groups(sha, ph, near_bits, patients)
    members = collections.defaultdict(list)
    for i, g in enumerate(groups):
        members[int(g)].append(i)
    dup_groups = [m for m in members.values() if len(m) > 1]

    def desc(i: int) -> dict:
        r = recs[i]
        return {k: r[k] for k in ("dataset", "split", "index", "file_name", "patient_id", "label")}

    pairs = [(a, b, 0, "exact") for a, b in exact] + [(a, b, d, "near") for a, b, d in near]
    kinds = collections.Counter((t, _pair_kind(recs[a], recs[b])) for a, b, _, t in pairs)
    patient_splits = collections.defaultdict(set)
    for r in recs:
        if r["patient_id"]:
            patient_splits[(r["dataset"], r["patient_id"])].add(r["split"])
    leaks = {f"{d}:{p}": sorted(s) for (d, p), s in patient_splits.items() if len(s) > 1}
    order = {"across_splits": 0, "across_datasets": 1, "within_split": 2}
    examples = sorted(pairs, key=lambda p: (order[_pair_kind(recs[p[0]], recs[p[1]])], p[2]))[:MAX_PAIRS_SHOWN]
    report = {
        "data_dir": data_dir,
        "inputs": shown,
        "num_records": len(recs),
        "near_dup_bits": near_bits,
        "exact_duplicate_pairs": len(exact),
        "near_duplicate_pairs": len(near),
        "pairs_by_kind": {f"{t}/{k}": n for (t, k), n in sorted(kinds.items())},
        "duplicate_groups": len(dup_groups),
        "records_in_duplicate_groups": int(sum(len(m) for m in dup_groups)),
        "records_after_dedup": len(members),
        # Groups are bounded (every member near its leader); chaining near matches would reach this far:
        "largest_group": max((len(m) for m in members.values()), default=0),
        "largest_group_if_chained": int(np.bincount(dedup.transitive_groups(sha, ph, near_bits), minlength=1).max()),
        "patients_in_several_splits": leaks,
        "groups": [[desc(i) for i in m] for m in dup_groups[:MAX_GROUPS_LISTED]],
        "example_pairs": [{"kind": t, "where": _pair_kind(recs[a], recs[b]), "hamming_bits": d,
                           "a": desc(a), "b": desc(b)} for a, b, d, t in examples],
        "contact_sheet": "duplicates.png" if examples else None,
    }
    (out / "audit.json").write_text(json.dumps(report, indent=1, default=str))
    if examples:
        _contact_sheet(examples, recs, data_dir, out / "duplicates.png")
    return report


def _contact_sheet(pairs, recs, data_dir: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(pairs), 2, figsize=(5, 2.6 * len(pairs)), squeeze=False)
    for row, (a, b, d, t) in enumerate(pairs):
        for col, i in enumerate((a, b)):
            r = recs[i]
            img = open_split(r["name"], r["config"], data_dir, r["split"])[r["index"]]["image"]
            ax = axes[row, col]
            ax.imshow(to_uint8(img), cmap="gray")
            ax.set_title(f"{r['dataset']}:{r['split']}\n{Path(str(r['file_name'])).name}", fontsize=7)
            ax.axis("off")
        axes[row, 0].text(0, -0.25, f"{t} (Hamming {d} bits)", transform=axes[row, 0].transAxes, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)




# ----------------------------------------------------------------------------- split composition


def _copy_flags(train_meta: dict[str, list], meta: dict[str, list], bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(exact, near) per record of `meta`: an exact copy (same pixels) in `train_meta`, or only a near one
    (pHash within `bits`)."""
    train_sha = set(train_meta["sha256"])
    exact = np.array([h in train_sha for h in meta["sha256"]], bool)
    near = np.zeros(len(exact), bool)
    tb = dedup.phash_bits(train_meta["phash"]) if train_meta["phash"] else np.zeros(0, np.uint64)
    ob = dedup.phash_bits(meta["phash"]) if meta["phash"] else np.zeros(0, np.uint64)
    for start in range(0, len(ob), 512):
        if len(tb):
            d = np.bitwise_count(ob[start:start + 512, None] ^ tb[None, :])
            near[start:start + 512] = (d <= bits).any(1)
    return exact, near & ~exact


def _copies_of(train_meta: dict[str, list], meta: dict[str, list], bits: int) -> dict[str, int]:
    """How many records of `meta` have an exact copy (same pixels) in `train_meta`, and how many only a
    near one (pHash within `bits`)."""
    exact, near = _copy_flags(train_meta, meta, bits)
    return {"num_examples": len(exact), "exact": int(exact.sum()), "near": int(near.sum())}


def copies_in_training(data_cfg, split: str | None = None, *, per_example: bool = False) -> dict[str, Any]:
    """How many examples of `split` (default: the config's test split) have an exact copy (same pixels)
    in the training split, and how many only a near one (pHash within ``near_dup_bits``), as the loader
    sees both splits: ``{"num_examples", "exact", "near"}``. With ``per_example``, also ``by_example``:
    {example_id: "exact" | "near" | "none"} for every example of the split."""
    split = split or data_cfg.test_split
    train = index_metadata(data_cfg, resolve(data_cfg, data_cfg.train_split))
    meta = index_metadata(data_cfg, resolve(data_cfg, split))
    exact, near = _copy_flags(train, meta, int(data_cfg.near_dup_bits))
    out: dict[str, Any] = {"num_examples": len(exact), "exact": int(exact.sum()), "near": int(near.sum())}
    if per_example:
        kinds = np.where(exact, "exact", np.where(near, "near", "none"))
        out["by_example"] = dict(zip(meta["example_id"], kinds.tolist(), strict=True))
    return out


def _class_of(dataset: str, label: int) -> str:
    """A record's class name; "-" for a dataset without labels (``unlabelled_mri`` stores a meaningless 0)."""
    return "-" if dataset.partition("/")[0] in UNLABELLED else CLASS_NAMES[label]


def split_composition(data_cfg, splits: Sequence[str] | None = None, *, max_groups: int = 10) -> dict[str, Any]:
    """Class x source x split counts of `splits` (default: the config's train / eval / test splits) as
    the loader sees them, with what de-duplication dropped, how many examples of each other split have
    an exact or near copy in the first (training) split, how many patients sit in several splits, and
    the largest duplicate groups (exact and near copies, bounded as in ``dedup.duplicate_groups``) over
    the splits before de-duplication."""
    if splits is None:
        # an empty eval_split (no periodic evaluation) is not a split
        splits = [s for s in dict.fromkeys([data_cfg.train_split, data_cfg.eval_split, data_cfg.test_split]) if s]
    bits = int(data_cfg.near_dup_bits)
    raw_cfg = data_cfg.copy_and_resolve_references()
    raw_cfg.dedup = "none"
    kept = {s: index_metadata(data_cfg, resolve(data_cfg, s)) for s in splits}
    raw = {s: index_metadata(raw_cfg, resolve(raw_cfg, s)) for s in splits}
    counts = collections.Counter()
    for s, m in kept.items():
        counts.update((s, src, _class_of(d, lab))
                      for d, src, lab in zip(m["dataset"], m["source"], m["label"], strict=True))
    dropped = {s: dict(collections.Counter(raw[s]["source"]) - collections.Counter(kept[s]["source"]))
               for s in splits}
    pool = [(s, i) for s in splits for i in range(len(raw[s]["sha256"]))]
    groups = dedup.duplicate_groups([raw[s]["sha256"][i] for s, i in pool], [raw[s]["phash"][i] for s, i in pool],
                                    bits, [k for s in splits for k in patient_keys(raw[s])])
    members = collections.defaultdict(list)
    for j, g in enumerate(groups.tolist()):
        s, i = pool[j]
        members[g].append({"example_id": raw[s]["example_id"][i], "source": raw[s]["source"][i], "split": s,
                           "class": _class_of(raw[s]["dataset"][i], raw[s]["label"][i])})
    dup = sorted((m for m in members.values() if len(m) > 1), key=lambda m: (-len(m), m[0]["example_id"]))
    patient_splits = collections.defaultdict(set)
    for s, m in kept.items():
        for d, p in zip(m["dataset"], m["patient_id"], strict=True):
            if p:
                patient_splits[(d, p)].add(s)
    return {
        "dataset": str(data_cfg.name),
        "protocol": split_protocol(data_cfg),
        "classes": list(class_names(data_cfg)),
        "splits": list(splits),
        "near_dup_bits": bits,
        "counts": [{"split": s, "source": src, "class": c, "count": n} for (s, src, c), n in sorted(counts.items())],
        "totals": {s: len(kept[s]["sha256"]) for s in splits},
        "duplicates_dropped": dropped,
        "copies_in_first_split": {s: _copies_of(kept[splits[0]], kept[s], bits) for s in splits[1:]},
        "patients": len(patient_splits),
        "patients_in_several_splits": sum(len(v) > 1 for v in patient_splits.values()),
        "duplicate_groups": len(dup),
        "records_in_duplicate_groups": sum(len(m) for m in dup),
        "largest_duplicate_groups": [{"size": len(m), "members": m} for m in dup[:max_groups]],
    }


def composition_rows(comp: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (source, class): the count in every split and the total."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in comp["counts"]:
        row = rows.setdefault((r["source"], r["class"]), {"source": r["source"], "class": r["class"],
                                                          **dict.fromkeys(comp["splits"], 0)})
        row[r["split"]] += r["count"]
    for row in rows.values():
        row["total"] = sum(row[s] for s in comp["splits"])
    return [rows[k] for k in sorted(rows)]


def composition_markdown(comp: dict[str, Any]) -> str:
    """The composition as markdown: protocol, class x source x split table, dropped duplicates, copies
    of training examples in the other splits, largest duplicate groups."""
    splits = comp["splits"]
    lines = [f"**{comp['dataset']}** — {comp['protocol']}; classes: {', '.join(comp['classes'])}", "",
             "| source | class | " + " | ".join(splits) + " | total |",
             "|---|---|" + "---:|" * (len(splits) + 1)]
    for r in composition_rows(comp):
        cells = " | ".join(str(r[s]) for s in splits)
        lines.append(f"| {r['source']} | {r['class']} | {cells} | {r['total']} |")
    lines.append("| **all** | | " + " | ".join(str(comp["totals"][s]) for s in splits)
                 + f" | {sum(comp['totals'].values())} |")
    dropped = {s: sum(d.values()) for s, d in comp["duplicates_dropped"].items()}
    lines += ["", "Duplicates dropped: " + ", ".join(f"{s} {n}" for s, n in dropped.items()),
              f"Patients: {comp['patients']}, of which {comp['patients_in_several_splits']} in several splits"]
    for s, c in comp["copies_in_first_split"].items():
        lines.append(f"{s}: {c['exact']} of {c['num_examples']} examples have an exact copy in {splits[0]}, "
                     f"{c['near']} more a near copy (pHash within {comp['near_dup_bits']} bits)")
    lines += ["", f"{comp['duplicate_groups']} duplicate groups ({comp['records_in_duplicate_groups']} records); "
              "largest:", "", "| size | members (source: split, class) |", "|---:|---|"]
    for g in comp["largest_duplicate_groups"]:
        where = collections.Counter(f"{m['source']}: {m['split']}, {m['class']}" for m in g["members"])
        lines.append(f"| {g['size']} | " + "; ".join(f"{k} x{n}" if n > 1 else k for k, n in where.items()) + " |")
    return "\n".join(lines) + "\n"


def write_composition(comp: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """``composition.json``, ``composition.csv`` (source, class, one column per split, total) and
    ``composition.md`` in `out_dir`; returns their paths by suffix."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"composition.{k}" for k in ("json", "csv", "md")}
    paths["json"].write_text(json.dumps(comp, indent=1))
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["source", "class", *comp["splits"], "total"])
        w.writeheader()
        w.writerows(composition_rows(comp))
    paths["md"].write_text(composition_markdown(comp))
    return paths
