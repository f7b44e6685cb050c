"""The import layers, read from the source with ``ast`` (function-level imports included).

From the top, each layer may import any layer below it and nothing above:
cli -> app -> train -> convert -> {models, metrics, io, workdir, input_pipeline}; the bottom packages
import nothing of ours above them (input_pipeline reads files through brain_jax.io's size guards; the
package root defines only ``__version__`` and ``N_RESAMPLES``);
configs import only ml_collections and input_pipeline's defaults. Any import cycle between files fails,
and an import of our own code inside a function must say why (start-up cost) on its line or the one
above: a function-level import that hides a cycle is a cycle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("brain_jax", "input_pipeline", "configs")

# layer -> the layers it may import (besides itself)
ALLOWED = {
    "cli": {"root", "app"},
    "app": {"root", "train", "convert", "models", "metrics", "io", "workdir", "input_pipeline", "saliency"},
    "train": {"root", "convert", "models", "metrics", "io", "workdir", "input_pipeline"},
    "convert": {"root", "models"},
    "saliency": {"root", "models"},
    "models": {"root"},
    "metrics": {"root"},
    "io": {"root"},
    "workdir": {"root"},
    "input_pipeline": {"io"},  # the size guards and readers' limits, defined once in brain_jax.io
    "configs": {"input_pipeline"},
    "root": set(),
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("input_pipeline", "configs"):
        return parts[0]
    if len(parts) == 1:
        return "root"
    return parts[1]


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _resolve(base: str, name: str | None) -> str | None:
    for cand in ((f"{base}.{name}" if name else None), base):
        if cand and cand in MODULES:
            return cand
    return None


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module of ours, line, inside a function) for every import statement."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [_resolve(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [_resolve(base, a.name) for a in node.names]
        for t in targets:
            if t and t != module:
                found.append((t, node.lineno, id(node) in in_function))
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    assert "brain_jax.workdir" in MODULES and "brain_jax.app.commands" in MODULES
    unknown = sorted(m for m in MODULES if layer_of(m) not in ALLOWED)
    assert not unknown, f"modules outside the layer table: {unknown}"


def test_imports_follow_the_layer_table():
    bad = []
    for module, imports in GRAPH.items():
        src = layer_of(module)
        for target, line, _ in imports:
            dst = layer_of(target)
            if dst != src and dst not in ALLOWED[src]:
                bad.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {src} imports {dst} ({target})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_import_cycles():
    edges = {m: {t for t, _, _ in imps if not _package_link(m, t)} for m, imps in GRAPH.items()}
    cycles = _cycles(edges)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_function_level_imports_of_our_code_say_why():
    bad = []
    for module, imports in GRAPH.items():
        lines = MODULES[module].read_text().splitlines()
        for target, line, inside in imports:
            if inside and "start-up" not in lines[line - 1] + lines[line - 2]:
                bad.append(f"{MODULES[module].relative_to(ROOT)}:{line}: imports {target} inside a function")
    assert not bad, "function-level imports without a start-up reason:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_should():
    # a cycle and an upward edge, on a made-up graph: the helpers must see both
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "app" not in ALLOWED["train"] and "train" not in ALLOWED["convert"]
    assert layer_of("brain_jax.train.trainer") == "train" and layer_of("input_pipeline.loader") == "input_pipeline"


# brain_jax.app's groups (its __init__ docstring), in order: a module imports app modules of its own group or
# an earlier one. Helpers come first; modules not listed here are not checked.
APP_GROUPS = (
    ("helpers", {"tables", "figures", "results", "paper", "compile_cache", "inputs"}),
    ("single-workdir verbs", {"evaluate", "predict", "explain", "saliency_panel", "report"}),
    ("experiment verbs", {"compare", "suite", "study"}),
    ("composers", {"demo", "reproduce", "commands"}),
)
# The app modules that may import the training loop: the verbs that train (study through suite) and the
# composers (the demo; commands for `brain-jax train`).
TRAINER_IMPORTERS = {"brain_jax.app.suite", "brain_jax.app.demo", "brain_jax.app.commands"}


def _app_group(module: str) -> int | None:
    name = module.removeprefix("brain_jax.app.")
    return next((i for i, (_, names) in enumerate(APP_GROUPS) if name in names), None)


def test_app_modules_import_only_earlier_groups():
    bad = []
    for module, imports in GRAPH.items():
        src = _app_group(module) if module.startswith("brain_jax.app.") else None
        for target, line, _ in imports:
            dst = _app_group(target) if target.startswith("brain_jax.app.") else None
            if src is not None and dst is not None and dst > src:
                bad.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {APP_GROUPS[src][0]} import "
                           f"{APP_GROUPS[dst][0]} ({target})")
    assert not bad, "app imports against its group order:\n" + "\n".join(bad)


def test_only_the_verbs_that_train_import_the_trainer():
    importers = {m for m, imports in GRAPH.items() if m.startswith("brain_jax.app")
                 for t, _, _ in imports if t == "brain_jax.train.trainer"}
    extra = sorted(importers - TRAINER_IMPORTERS)
    assert not extra, f"app modules importing the training loop: {extra}"
    assert "brain_jax.app.suite" in importers  # the check sees the imports it should


def test_the_report_verb_loads_neither_the_trainer_nor_jax():
    """`brain-jax report` renders JSON and draws with matplotlib: importing it (fresh process) loads no training
    loop and no JAX, although it renders what suite and study (which train) wrote."""
    code = ("import sys, brain_jax.app.report; "
            "print(sorted(m for m in ('brain_jax.train.trainer', 'jax', 'brain_jax.app.suite') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def _reach(module: str) -> set[str]:
    """Every module of ours ``module`` imports, directly or not (imports inside functions included)."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [t for t, _, _ in GRAPH.get(m, ())]
    return seen


def test_predict_and_explain_load_no_trainer():
    """The image verbs run the forward pass, not the training loop or its data pipeline: their module graphs
    (functions' imports included) reach neither; `brain-jax predict` and `explain` import them in their
    handlers only (``commands``' module-level imports load no verb)."""
    for verb in ("brain_jax.app.predict", "brain_jax.app.explain", "brain_jax.app.inputs"):
        reach = _reach(verb)
        assert not reach & {"brain_jax.train.trainer", "brain_jax.train.data"}, verb
    assert "brain_jax.train.forward" in _reach("brain_jax.app.predict")  # the walk sees the imports it should
    assert not [t for t, _, inside in GRAPH["brain_jax.app.commands"] if not inside and t.startswith("brain_jax.app")]


def _flax_imports(source: str) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(source)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        lines += [node.lineno for n in names if n.split(".")[0] == "flax"]
    return lines


def test_app_holds_no_nnx():
    """NNX (modules, split / merge, jit of the object graph) stays in train/: no app module imports flax."""
    assert _flax_imports("import os\nfrom flax import nnx\nimport flax.linen as nn\n") == [2, 3]
    bad = [f"{MODULES[m].relative_to(ROOT)}:{line}" for m in MODULES if m.startswith("brain_jax.app")
           for line in _flax_imports(MODULES[m].read_text())]
    assert not bad, "app modules importing flax: " + ", ".join(bad)


# Test files are named test_<area>[_<topic>].py after the part of the tree they test (a package or layer of
# brain_jax, input_pipeline, configs, launch, benchmarks; fuzz for the fuzzers, layers for this file);
# fixture folders are <model>_golden (HF golden models) or workdir_v<N> (workdirs of an older layout).
TEST_AREAS = ("app", "benchmarks", "cli", "configs", "convert", "fuzz", "input", "io", "launch", "layers", "metrics",
              "models", "saliency", "train", "workdir")


def test_test_files_and_fixtures_follow_one_naming_pattern():
    tests = ROOT / "tests"
    bad = [p.name for p in tests.glob("test_*.py") if p.stem.split("_")[1] not in TEST_AREAS]
    assert not bad, f"test files outside the test_<area>_<topic>.py pattern: {bad}"
    folders = [p.name for p in (tests / "fixtures").iterdir() if p.is_dir() and p.name != "__pycache__"]
    odd = [f for f in folders if not (f.endswith("_golden") or f.startswith("workdir_v"))]
    assert folders and not odd, f"fixture folders outside <model>_golden / workdir_v<N>: {odd}"


def _package_link(a: str, b: str) -> bool:
    """Edges between a package's __init__ and its own submodules (re-exports) are not cycles."""
    return b.startswith(a + ".") and MODULES[a].name == "__init__.py" or \
        a.startswith(b + ".") and MODULES[b].name == "__init__.py"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out
