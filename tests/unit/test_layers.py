"""The package's layers point one way: each imports only from the layers below it.

core (protocol, table, parsers, events) → sinks (JSON log, pcapng, metrics) → I/O adapters
(``io/``, ``aio.py``) → tools → faces (``cli``, ``daemon``, ``demo``, the package's own
``__init__`` that re-exports the public API). Every import counts, including the ones inside
functions and under ``TYPE_CHECKING``: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "wgpy"
LAYERS = ("core", "sinks", "io", "tools", "faces")
FACES = {"wgpy", "wgpy.cli", "wgpy.daemon", "wgpy.demo", "wgpy.__main__"}


def layer_of(module: str) -> str:
    if module in FACES:
        return "faces"
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ("sinks", "io", "tools"):
        return parts[1]
    if module == "wgpy.aio":
        return "io"
    return "core"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every wgpy module the file imports, with the line of the import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            base = node.module or ""
            # `from wgpy.io import tun` imports the module wgpy.io.tun
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(
                    ".py"
                ).exists() or (PACKAGE.parent / Path(*candidate.split("."))).is_dir()
                found.append((node.lineno, candidate if is_module else base))
    return [(line, name) for line, name in found if name == "wgpy" or name.startswith("wgpy.")]


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_layer_has_modules() -> None:
    seen = {layer_of(module_name(path)) for path in sources()}
    assert seen == set(LAYERS)


@pytest.mark.parametrize("path", sources(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    source = module_name(path)
    rank = LAYERS.index(layer_of(source))
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {source} ({layer_of(source)}) imports "
        f"{target} ({layer_of(target)})"
        for line, target in imported_modules(path)
        if LAYERS.index(layer_of(target)) > rank
    ]
    assert not upward, "\n".join(upward)


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: lazy and ``from package import module`` imports are both seen."""
    rogue = tmp_path / "rogue.py"
    rogue.write_text(
        "from wgpy.io import tun\n"
        "def f():\n"
        "    from wgpy.tools.files import explain\n"
        "    import wgpy.sinks.metrics\n"
    )
    names = [name for _, name in imported_modules(rogue)]
    assert names == ["wgpy.io.tun", "wgpy.tools.files.explain", "wgpy.sinks.metrics"]
    ranks = [LAYERS.index(layer_of(name)) for name in names]
    assert ranks == [2, 3, 1]
    assert layer_of("wgpy.device") == "core" and layer_of("wgpy.daemon") == "faces"
    assert layer_of("wgpy.aio") == "io" and layer_of("wgpy") == "faces"


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sources():
        source = module_name(path)
        targets = {t for _, t in imported_modules(path) if t != source and t != "wgpy"}
        graph[source] = {t for t in targets if not t.startswith(source + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles_among_tools() -> None:
    """The tools import one another one way (issue 23 ended the see_cli ↔ web circle)."""
    graph = _import_graph()
    circles = [c for c in _cycles(graph) if any(m.startswith("wgpy.tools") for m in c)]
    assert circles == []
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_tools_are_grouped_by_what_they_read() -> None:
    """tools/ holds a folder per input — wg-quick files, a live interface, a network — and,
    flat, only the helpers they share (issue 23)."""
    tools = PACKAGE / "tools"
    assert sorted(p.name for p in tools.iterdir() if p.is_dir() and p.name != "__pycache__") == [
        "files",
        "interface",
        "network",
    ]
    assert sorted(p.name for p in tools.glob("*.py")) == [
        "__init__.py",
        "reasons_doc.py",
        "termtext.py",
    ]
