"""``brain-jax predict`` of one image, process start -> probabilities: wall time and peak memory, cold and warm.

    python benchmarks/bench_predict_startup.py --json predict_startup.json     # ConvNeXt V2-T at 224 px
    python benchmarks/bench_predict_startup.py --tiny                          # test-size model (CI)

Reusable pieces (tests/test_cli_startup.py): ``make_workdir``, ``make_image``, ``run_predict``.

A ConvNeXt V2 workdir with random weights (config.json from ``configs/convnextv2_cls.py``, model.json,
an orbax checkpoint, as ``brain-jax train`` leaves them) and one 512 x 512 PNG are written to a
temporary folder. Then ``brain-jax predict`` runs as a fresh process: once with an empty
compilation cache (cold: every program compiled and written to the cache), then ``--repeats`` times
with that cache (warm), and once with ``--no-compile-cache`` (the same cache named by
``BRAIN_JAX_COMPILATION_CACHE``, unused). Each run's wall time is from process
start to its exit (the probabilities are printed just before; writing predictions.json is the last
step), its peak resident memory (``getrusage`` in the process), and the run reports how many programs it
compiled and how many it loaded from the cache (JAX's monitoring events). ``--importtime`` also
prints the modules that take longest to import (``python -X importtime``).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Runs `brain-jax predict ARGS...` in this fresh interpreter, counting compilations and cache hits.
DRIVER = """
import json, sys, time
t0 = time.perf_counter()
import jax.monitoring as mon
counts = {"programs": 0, "cache_hits": 0}
def on_event(name, **kw):
    if name == "/jax/compilation_cache/cache_hits":
        counts["cache_hits"] += 1
def on_duration(name, secs, **kw):
    if name == "/jax/core/compile/backend_compile_duration":
        counts["programs"] += 1  # every program jit needs, compiled or loaded from the cache
mon.register_event_listener(on_event)
mon.register_event_duration_secs_listener(on_duration)
from brain_jax import cli
rc = cli.main(sys.argv[1:])
counts["rc"] = rc
counts["seconds_in_process"] = time.perf_counter() - t0
counts["tensorflow"] = sorted(m for m in ("tensorflow", "tensorflow_datasets") if m in sys.modules)
import resource
counts["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
print("DRIVER_RESULT " + json.dumps(counts))
"""


def make_workdir(wd: Path, variant: str, size: int, seed: int = 0) -> None:
    """A classification workdir as ``brain-jax train`` leaves it, with random weights."""
    import jax
    from flax import nnx

    from brain_jax import models, workdir
    from brain_jax.train import engine
    from brain_jax.train.checkpoints import Checkpointer
    from brain_jax.train.config import load_config
    from brain_jax.train.spec import RunSpec

    config = load_config(f"convnextv2_cls.py:variant={variant}", [f"--config.data.image_size={size}"])
    config.model.variant = variant
    wd.mkdir(parents=True)
    workdir.write_config(wd, config)
    num = RunSpec.from_config(config).num_classes
    abstract = nnx.eval_shape(lambda: models.create("convnextv2", variant, num, rngs=nnx.Rngs(seed)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    for _, var in nnx.to_flat_state(state):  # random weights without paying for XLA's initialisers
        sds = var.get_value()
        if isinstance(var, nnx.RngKey):
            value = jax.random.key(seed) if sds.shape == () else jax.random.split(jax.random.key(seed), sds.shape)
        elif isinstance(var, nnx.RngCount):
            value = np.zeros(sds.shape, sds.dtype)
        else:
            value = (rng.normal(size=sds.shape) * 0.02).astype(sds.dtype)
        var.set_value(value)
    model = nnx.merge(graphdef, state)
    workdir.write_model_json(wd, model.config.model_type, dataclasses.asdict(model.config))
    parts = engine.split_model(model)
    ck = Checkpointer(wd, async_save=False)
    ck.save(1, {"params": parts.params, "batch_stats": parts.batch_stats}, None, force=True)
    ck.close()


def make_image(path: Path, size: int = 512) -> None:
    from PIL import Image

    yy, xx = np.mgrid[:size, :size]
    img = 120 + 80 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2))
    img += np.random.default_rng(0).normal(0, 8, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


def run_predict(wd: Path, image: Path, out: Path, cache: Path, *, disabled: bool = False) -> dict:
    """One ``brain-jax predict`` process with ``BRAIN_JAX_COMPILATION_CACHE=cache`` (``--no-compile-cache``
    when ``disabled``): wall seconds, peak RSS (MiB), programs compiled and loaded from the cache, stdout."""
    argv = ["predict", "--workdir", str(wd), "--out", str(out), str(image)]
    argv += ["--no-compile-cache"] if disabled else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BRAIN_JAX_COMPILATION_CACHE": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed ({proc.returncode}):\n{stdout[-2000:]}\n{stderr[-3000:]}")
    match = re.search(r"^DRIVER_RESULT (.*)$", stdout, re.M)
    if match is None:
        raise RuntimeError(f"predict printed no result:\n{stdout[-2000:]}")
    res = json.loads(match.group(1))
    res["wall_s"] = wall
    res["compiled"] = res["programs"] - res["cache_hits"]
    res["stdout"] = stdout.replace(match.group(0), "").strip()
    return res


def importtime(top: int) -> list[tuple[str, float]]:
    """The ``top`` packages by cumulative import time (s) when the CLI's handlers are imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import brain_jax.app.commands"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    rows = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)", line)
        if m and "." not in m.group(3):  # packages (where first imported, with everything they import)
            rows[m.group(3)] = max(rows.get(m.group(3), 0.0), int(m.group(2)) / 1e6)
    return sorted(rows.items(), key=lambda r: -r[1])[:top]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="tiny", help="ConvNeXt V2 size (default: tiny)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3, help="warm runs")
    ap.add_argument("--importtime", action="store_true", help="also list the slowest imports")
    ap.add_argument("--tiny", action="store_true", help="test-size model at 32 px, 1 warm run (CI)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.tiny:
        args.variant, args.image_size, args.repeats = "test", 32, 1

    runs: dict[str, list[dict]] = {"cold": [], "warm": [], "no_cache": []}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        make_workdir(d / "wd", args.variant, args.image_size)
        make_image(d / "scan.png")
        cache = d / "xla_cache"
        for kind in ["cold"] + ["warm"] * args.repeats + ["no_cache"]:
            res = run_predict(d / "wd", d / "scan.png", d / f"out_{kind}", cache, disabled=kind == "no_cache")
            res["cache_entries"] = len(list(cache.iterdir())) if cache.is_dir() else 0
            runs[kind].append(res)
            print(f"{kind:9s} {res['wall_s']:6.2f} s wall ({res['seconds_in_process']:.2f} s in the process), "
                  f"peak RSS {res['peak_rss_mib']:.0f} MiB, {res['programs']} programs: {res['compiled']} compiled, "
                  f"{res['cache_hits']} from the cache; cache entries {res['cache_entries']}; "
                  f"TensorFlow imported: {res['tensorflow'] or 'no'}", flush=True)
        print("\n".join(runs["warm"][-1]["stdout"].splitlines()[-4:]))
    warm = [r["wall_s"] for r in runs["warm"]]
    print(f"warm median {float(np.median(warm)):.2f} s over {len(warm)} runs (goal <= 10 s)")
    imports = importtime(15) if args.importtime else []
    for name, secs in imports:
        print(f"import {name:40s} {secs:6.2f} s (cumulative)")
    if args.json:
        from importlib.metadata import version

        doc = {"benchmark": "predict_startup", "date": datetime.date.today().isoformat(), "cpus": os.cpu_count(),
               "versions": {"python": platform.python_version(),
                            **{n: version(n) for n in ("jax", "jaxlib", "flax", "orbax-checkpoint", "numpy")}},
               "args": vars(args), "runs": runs, "importtime": imports}
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
