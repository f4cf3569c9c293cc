"""The rooms keep to their boundaries (docs/architecture.md): what each top-level package may import.

- A room never imports the rooms FORBIDDEN to it (``api`` never imports ``edge``: the agent config's
  schema both use is in the contract).
- ``citygw/contract/`` is what the rooms share (wire, errors, the agent config schema, ...): it imports
  nothing of the project but itself and ``firmware_bridge`` (a config names device profiles), and every
  other room takes from ``citygw`` only the contract; the rest of ``citygw`` is the composition root
  (command line, demo) and may import every room.
- ``simulators/`` drives the product in the demo, ``bench/`` and ``tests/``: no product room imports it.
- No import circle between the project's modules: an import inside a function counts, one under
  ``if TYPE_CHECKING:`` does not (it never runs).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("firmware_bridge", "edge", "collector", "api", "dashboards", "citygw", "simulators")
CONTRACT = "citygw.contract"
# The rooms a room must never import; the product rooms never import the simulators.
FORBIDDEN = {
    "firmware_bridge": {"edge", "collector", "api", "dashboards", "simulators"},
    "edge": {"collector", "api", "dashboards", "simulators"},
    "collector": {"firmware_bridge", "edge", "api", "dashboards", "simulators"},
    "api": {"edge", "dashboards", "simulators"},
    "dashboards": {"edge", "api", "simulators"},
    "simulators": {"edge", "dashboards"},
}
CONTRACT_MAY_IMPORT = (CONTRACT, "firmware_bridge")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(path: Path, root: Path = ROOT, *, runtime: bool = False) -> set[str]:
    """Every absolute name ``path`` imports (``from a import b`` gives ``a.b``, relative imports resolved);
    with ``runtime``, not those under ``if TYPE_CHECKING:``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if runtime and isinstance(child, ast.If) and _type_checking(child.test):
                for branch in child.orelse:
                    visit_node(branch)
            else:
                visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            names.update(f"{base}.{alias.name}" for alias in node.names)
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return names


def imported_rooms(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_names(path)} & set(ROOMS)


def modules(root: Path, rooms: tuple[str, ...]) -> dict[str, Path]:
    return {module_name(path, root): path for room in rooms for path in sorted((root / room).rglob("*.py"))}


def import_graph(root: Path, rooms: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the project's modules it imports at run time (``a.b.c`` names module ``a.b`` if no ``c``)."""
    known = modules(root, rooms)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for imported in imported_names(path, root, runtime=True):
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def test_imported_rooms_sees_every_form_of_import(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "m.py"
    module.write_text(
        "import edge.agent\nfrom collector import service\n"
        "def f():\n    import api.app as a\nfrom . import sibling\nimport json\n"
    )
    assert imported_names(module, tmp_path) == {
        "edge.agent",
        "collector.service",
        "api.app",
        "pkg.sibling",
        "json",
    }


def test_the_cycle_finder_sees_deferred_imports_and_skips_type_checking(tmp_path: Path) -> None:
    room = tmp_path / "room"
    room.mkdir()
    (room / "__init__.py").write_text("")
    (room / "a.py").write_text("from room.b import B\n")
    (room / "b.py").write_text("def f():\n    from room import c\n")  # deferred: still a circle
    (room / "c.py").write_text("import room.a\n")
    (room / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from room.e import E\n"
    )
    (room / "e.py").write_text("from room import d\n")
    assert cycles(import_graph(tmp_path, ("room",))) == [["room.a", "room.b", "room.c"]]


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_no_room_it_must_not(room: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_rooms(path) & FORBIDDEN[room])
        for path in sorted((ROOT / room).rglob("*.py"))
    }
    assert {path: rooms for path, rooms in wrong.items() if rooms} == {}


@pytest.mark.parametrize("room", sorted(set(ROOMS) - {"citygw"}))
def test_a_room_takes_only_the_contract_from_citygw(room: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(
            name
            for name in imported_names(path)
            if name.split(".")[0] == "citygw" and not (name == CONTRACT or name.startswith(f"{CONTRACT}."))
        )
        for path in sorted((ROOT / room).rglob("*.py"))
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_contract_imports_only_itself_and_firmware_bridge() -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(
            name
            for name in imported_names(path)
            if name.split(".")[0] in ROOMS
            and not name.startswith(tuple(f"{m}." for m in CONTRACT_MAY_IMPORT))
        )
        for path in sorted((ROOT / "citygw" / "contract").rglob("*.py"))
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_no_import_circles() -> None:
    assert cycles(import_graph(ROOT, ROOMS)) == []
