"""The package's shape (STYLE.md): no import cycle, no private name imported across modules, no
import tucked into a function to dodge one. ``lint-imports`` (pyproject.toml) checks the layers;
these checks read every import, function-local ones included, straight from the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgetvm"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def package_imports(module: str, path: Path):
    """(line, imported module, imported names, whether at module level) for every edgetvm import."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("edgetvm"):
                    yield node.lineno, alias.name, [], id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("edgetvm"):
                yield node.lineno, target, [a.name for a in node.names], id(node) in top_level


def import_graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        for _, target, names, _ in package_imports(module, path):
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module.
            targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules] or [target]
            for t in targets:
                if t in modules and t != module and not module.startswith(t + "."):
                    graph.add_edge(module, t)
    return graph


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    # A package's __init__ re-exporting its own modules is no cycle: drop those edges.
    graph.remove_edges_from([(a, b) for a, b in list(graph.edges) if b.startswith(a + ".")])
    cycles = sorted(" -> ".join(c + [c[0]]) for c in nx.simple_cycles(graph, length_bound=6))
    assert not cycles, "import cycles:\n" + "\n".join(cycles[:20])


def test_no_private_name_is_imported_from_another_module():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} from {target}"
             for module, path in _modules().items()
             for line, target, names, _ in package_imports(module, path)
             for name in names if name.startswith("_") and not name.startswith("__")]
    assert not found, "\n".join(found)


def test_package_imports_are_at_module_level():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} inside a function"
             for module, path in _modules().items()
             for line, target, _, top in package_imports(module, path) if not top]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("from .b import f\n", {("edgetvm.x.a", "edgetvm.x.b")}),
    ("def g():\n    from ..y import h\n", {("edgetvm.x.a", "edgetvm.y")}),
])
def test_the_import_reader_sees_relative_and_local_imports(tmp_path, monkeypatch, source, expected):
    root = tmp_path / "edgetvm"
    for rel in ("__init__.py", "x/__init__.py", "x/b.py", "y.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "x" / "a.py").write_text(source)
    monkeypatch.setattr(f"{__name__}.PACKAGE", root)
    assert set(import_graph().edges) == expected


def test_the_layer_contracts_hold():
    """``lint-imports`` with the contracts of pyproject.toml: each layer imports only from below."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
