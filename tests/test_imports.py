"""The import graph of ``src/latentae`` has no cycle, and imports sit at the top of their
modules (``docs/architecture.md``): an import inside a function only defers a heavy
optional dependency, with a comment saying so.

The graph is read from the source (``ast``), so it sees every ``import latentae...`` and
``from latentae... import ...`` whether at module level or inside a function (a cycle
through a function-level import is still a cycle, only a later one)."""

from __future__ import annotations

import ast
from pathlib import Path

import latentae

PACKAGE = Path(latentae.__file__).resolve().parent
# Modules of other owners that keep function-level imports for now (listed for the lead).
INNER_IMPORTS_ALLOWED_IN = ("latentae.train.", "latentae.cli.train", "latentae.losses.")
HEAVY_OPTIONAL = ("diffusers", "matplotlib", "scipy", "skimage", "torch.utils.tensorboard",
                  "onnx", "onnxruntime", "onnxscript", "torchdiffeq", "webdataset")


def module_names() -> dict[str, Path]:
    """``latentae.x.y`` -> its file, for every module and package of the source tree."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(tree: ast.AST, known: dict[str, Path]) -> set[str]:
    """The latentae modules a module's code imports (``from a.b import c`` names ``a.b.c``
    where that is a module, else ``a.b``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "latentae"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "latentae":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known}


def import_graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imports_of(ast.parse(path.read_text()), known) - {name}
            for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or ``None`` (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"latentae.pretrained", "latentae.runtime", "latentae.cli.args"} <= set(graph)
    assert "latentae.registry" in graph["latentae.pretrained"]  # edges are seen
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _function_imports(tree: ast.AST):
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield node


def test_function_level_imports_only_defer_heavy_optional_dependencies():
    bad = []
    for name, path in module_names().items():
        if name.startswith(INNER_IMPORTS_ALLOWED_IN):
            continue
        source = path.read_text()
        lines = source.splitlines()
        for node in _function_imports(ast.parse(source)):
            target = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            commented = "deferred" in lines[node.lineno - 1]
            if not (target.startswith(HEAVY_OPTIONAL) and (commented or "." in target)):
                bad.append(f"{name}:{node.lineno} imports {target}")
    assert not bad, "imports inside functions: " + ", ".join(bad)


BOTTOM = ("latentae.version", "latentae.errors", "latentae.files", "latentae.devices",
          "latentae.serialization", "latentae.cards", "latentae.locks",
          "latentae.progress")
# module prefix -> the prefixes it may import (docs/architecture.md)
ALLOWED = {"latentae.nn": ("latentae.nn", *BOTTOM),
           "latentae.models": ("latentae.nn", "latentae.models", *BOTTOM),
           # the engine under every task: the bottom layer, image files, shared blocks
           "latentae.engine": ("latentae.engine", "latentae.io", "latentae.nn", *BOTTOM)}
# module prefix -> prefixes it must not import: the two tasks stand side by side on the
# engine, the demos above both.
FORBIDDEN = {"latentae.train": ("latentae.diffusion", "latentae.demos"),
             "latentae.diffusion": ("latentae.train", "latentae.demos")}
PRIVATE_TO = ("latentae.cli", "latentae.studies")  # imported only from inside themselves


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_lower_layers_do_not_import_upper_ones():
    bad = []
    for name, targets in import_graph().items():
        for prefix, allowed in ALLOWED.items():
            if _within(name, prefix):
                bad += [f"{name} -> {t}" for t in targets
                        if not any(_within(t, a) for a in allowed)]
        for prefix, forbidden in FORBIDDEN.items():
            if _within(name, prefix):
                bad += [f"{name} -> {t}" for t in targets
                        if any(_within(t, f) for f in forbidden)]
        for private in PRIVATE_TO:
            if not _within(name, private) and name != "latentae.__main__":
                bad += [f"{name} -> {t}" for t in targets if _within(t, private)]
    assert not bad, "layering: " + ", ".join(bad)


def test_the_engine_knows_no_task():
    """The generic package exists and neither task imports the other (issue 25)."""
    graph = import_graph()
    assert "latentae.engine.loop" in graph and "latentae.train.loop" not in graph
    assert "latentae.engine.config" in graph["latentae.diffusion.config"]
    between = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
               if (_within(a, "latentae.train") and _within(b, "latentae.diffusion"))
               or (_within(a, "latentae.diffusion") and _within(b, "latentae.train"))]
    assert between == []


def test_architecture_md_names_every_module():
    """docs/architecture.md is the map: every module has its line (a package's
    ``pkg/*.py`` line covers the modules of that package, as for the studies)."""
    text = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name in ("__init__.py", "__main__.py"):
            continue
        folder = rel.rsplit("/", 1)[0] + "/*.py" if "/" in rel else None
        if f"`{rel}`" not in text and not (folder and f"`{folder}`" in text):
            missing.append(rel)
    assert not missing, "add a line to docs/architecture.md for: " + ", ".join(missing)
