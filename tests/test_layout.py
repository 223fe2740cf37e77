"""The house: geoseg's modules import only from their own layer or the layers below, never in a circle.

Layers, lowest first (docs/architecture.md draws them, and the test below checks that picture). Every
import counts, also those inside functions and under ``TYPE_CHECKING``: a circle there is still a circle
for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geoseg"

#: Module name prefixes per layer, lowest first. A module belongs to the first layer with a prefix of it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("geoseg.errors", "geoseg.version", "geoseg.sensors", "geoseg.config", "geoseg.textfiles"),
    ("geoseg.models", "geoseg.io"),
    ("geoseg.engine", "geoseg.export"),
    ("geoseg.bands", "geoseg.sanity", "geoseg.prepare", "geoseg.summary", "geoseg.run", "geoseg.info", "geoseg.train",
     "geoseg.assess", "geoseg.array"),
    ("geoseg.batch",),
    ("geoseg.cluster",),
    ("geoseg.cli",),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py; add it where it belongs")


def imports(module: str) -> set[str]:
    """The geoseg modules ``module`` imports (the package root itself excepted)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != "geoseg" and name != module:
                found.add(name)
    return found


GRAPH = {m: imports(m) for m in MODULES if m != "geoseg"}


def upward(graph: dict[str, set[str]], module: str) -> list[str]:
    """What ``module`` imports from layers above its own."""
    return sorted(t for t in graph[module] if layer(t) > layer(module))


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (depth-first search), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = "open"
        path.append(m)
        for t in sorted(graph.get(m, set())):
            if state.get(t) == "open":
                return [*path[path.index(t) :], t]
            if t not in state and (circle := visit(t)):
                return circle
        path.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state and (circle := visit(m)):
            return circle
    return None


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_runs_up_a_layer(module: str) -> None:
    assert not upward(GRAPH, module), f"{module} (layer {layer(module)}) imports from higher layers"


def test_no_import_circles() -> None:
    circle = find_circle(GRAPH)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_checks_can_fail() -> None:
    """On a made-up graph, an engine module importing the CLI and a circle are both caught."""
    graph = {"geoseg.engine.plan": {"geoseg.cli.run"}, "geoseg.cli.run": {"geoseg.engine.plan"}}
    assert upward(graph, "geoseg.engine.plan") == ["geoseg.cli.run"]
    assert find_circle(graph) == ["geoseg.cli.run", "geoseg.engine.plan", "geoseg.cli.run"]
    assert "geoseg.engine.plan" in GRAPH["geoseg.engine.pipeline"]  # the real graph is read, too


def test_every_module_has_a_docstring_saying_what_it_holds() -> None:
    missing = [m for m, p in MODULES.items()
               if p.name != "__main__.py" and not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def _text_blocks(path: Path) -> list[str]:
    parts = path.read_text().split("```text\n")
    return [p.split("```", 1)[0] for p in parts[1:]]


def test_the_documented_layer_picture_is_the_one_the_code_follows() -> None:
    picture, files = _text_blocks(ARCHITECTURE)[:2]
    drawn = []
    for line in picture.splitlines():
        names = line.split(":", 1)[1].split("  ")[0].split()
        drawn.append({"geoseg." + n.removesuffix("/").removesuffix(".py") for n in names})
    assert drawn == [set(prefixes) for prefixes in LAYERS]
    listed = {f"{folder.removesuffix('/')}.{name.removesuffix('.py')}" if folder.endswith("/") else
              name.removesuffix(".py")
              for folder, names in _file_map(files) for name in names}
    modules = {m.removeprefix("geoseg.") for m, p in MODULES.items() if p.name not in ("__init__.py", "__main__.py")}
    assert modules == listed, f"missing from the map: {sorted(modules - listed)}; not: {sorted(listed - modules)}"


def _file_map(block: str) -> list[tuple[str, list[str]]]:
    """``(folder, modules)`` of the "where is what" block (folder "" for top-level modules; ``#`` starts a
    comment)."""
    rows: list[tuple[str, list[str]]] = []
    for line in block.splitlines()[1:]:
        line = line.split("#", 1)[0]
        words = line.split()
        if not words:
            continue
        if words[0].endswith("/"):
            rows.append((words[0], words[1:]))
        elif line.startswith("             ") and rows:  # a folder's list going on
            rows[-1][1].extend(words)
        else:
            rows.append(("", words))
    return rows
