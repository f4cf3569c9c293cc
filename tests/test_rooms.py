"""The rooms keep to their boundaries (docs/architecture.md): what each top-level package may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("firmware_bridge", "edge", "collector", "api", "dashboards", "citygw")
# The rooms a room must never import. citygw holds the wire contract every room shares, and the
# command line and demo that start them all: only its wire contract and errors must stay leaf modules.
FORBIDDEN = {
    "firmware_bridge": {"edge", "collector", "api", "dashboards"},
    "edge": {"collector", "api", "dashboards"},
    "collector": {"firmware_bridge", "edge", "api", "dashboards"},
    "api": {"dashboards"},
    "dashboards": {"edge", "api"},
}
LEAVES = ("citygw/contract/wire.py", "citygw/contract/errors.py")


def imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        rooms.update(name.split(".")[0] for name in names if name.split(".")[0] in ROOMS)
    return rooms


def test_imported_rooms_sees_every_form_of_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import edge.agent\nfrom collector import service\n"
        "def f():\n    import api.app as a\nfrom . import sibling\nimport json\n"
    )
    assert imported_rooms(module) == {"edge", "collector", "api"}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_a_room_imports_no_room_it_must_not(room: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_rooms(path) & FORBIDDEN[room])
        for path in sorted((ROOT / room).rglob("*.py"))
    }
    assert {path: rooms for path, rooms in wrong.items() if rooms} == {}


@pytest.mark.parametrize("leaf", LEAVES)
def test_the_wire_contract_depends_on_no_room(leaf: str) -> None:
    assert imported_rooms(ROOT / leaf) - {"citygw"} == set()
