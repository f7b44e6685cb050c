"""Duplicate audit: exact and near-duplicate images within and across sources and splits.

Writes ``audit.json`` (counts, groups, example pairs) and ``duplicates.png`` (a contact sheet of
example pairs, cross-split and cross-source pairs first) to the output folder.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path


from input_pipeline import dedup
from input_pipeline.builders import builder_class
from input_pipeline.features import to_uint8

MAX_GROUPS_LISTED = 200
MAX_PAIRS_SHOWN = 16


def parse_entry(entry: str) -> tuple[str, str | None, str | None]:
    """'name[/config][:split]' -> (name, config, split); config defaults to the builder's default."""
    spec, _, split = entry.partition(":")
    name, _, config = spec.partition("/")
    cls = builder_class(name)
    if not config and cls.BUILDER_CONFIGS:
        config = getattr(cls, "DEFAULT_CONFIG_NAME", None) or cls.BUILDER_CONFIGS[0].name
    return name, config or None, split or None


def _pair_kind(a: dict, b: dict) -> str:
    if a["dataset"] != b["dataset"]:
        return "across_datasets"
    if a["split"] != b["split"]:
        return "across_splits"
    return "within_split"


def run_audit(entries: list[str], data_dir: str, out_dir: str | Path, near_bits: int = 4) -> dict:
    """Audit the given datasets/splits; returns the audit dict (also written to out_dir)."""
    from input_pipeline.loader import _metadata, _open

    data_dir = str(Path(data_dir).expanduser())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recs: list[dict] = []
    shown: list[dict] = []
    for entry in entries:
        name, config, split = parse_entry(entry)
        splits = [split] if split else sorted(_open(name, config, data_dir, None))
        for s in splits:
            meta = _metadata(name, config, data_dir, s)
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
    groups = dedup.duplicate_groups(sha, ph, near_bits)
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

    from input_pipeline.loader import _open

    fig, axes = plt.subplots(len(pairs), 2, figsize=(5, 2.6 * len(pairs)), squeeze=False)
    for row, (a, b, d, t) in enumerate(pairs):
        for col, i in enumerate((a, b)):
            r = recs[i]
            img = _open(r["name"], r["config"], data_dir, r["split"])[r["index"]]["image"]
            ax = axes[row, col]
            ax.imshow(to_uint8(img), cmap="gray")
            ax.set_title(f"{r['dataset']}:{r['split']}\n{Path(str(r['file_name'])).name}", fontsize=7)
            ax.axis("off")
        axes[row, 0].text(0, -0.25, f"{t} (Hamming {d} bits)", transform=axes[row, 0].transAxes, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


