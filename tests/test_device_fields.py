"""No device model's field name outside its profile: the API and the dashboards select fields by role.

A field name such as ``import_energy_kwh`` or ``lamp0_status`` in api/ or dashboards/ would serve one
model and silently give a second one (other names) no alerts, open data or panels (issue 18). Role
names (``flow_rate``, ``voltage``) are the vocabulary, not a model's, and may appear.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from citygw.contract.agent_config import CONSOLE_FIELDS
from firmware_bridge.profile import NMEA_FIX_FIELDS, Profile, available_profiles, load_profile
from firmware_bridge.roles import Role

ROOT = Path(__file__).resolve().parent.parent
# Transit (GPS fixes, drivers' consoles, ticket validators: api/transit, the transport board) reads the
# transit contract of edge/vehicles.py, and simulators write readings as the devices would.
OUT_OF_SCOPE = ("api/transit/", "dashboards/transport.py")
# Words of the wire contract (a located reading's lat/lon, a bus's trip_id: agent_config.CONSOLE_FIELDS)
# or of plain English (an alert's status).
CONTRACT = {"lat", "lon", "status", *CONSOLE_FIELDS, *NMEA_FIX_FIELDS}


def model_fields() -> set[str]:
    names = {
        spec.field
        for name in available_profiles()
        for spec in load_profile(name).registers
        if isinstance(load_profile(name), Profile)
    }
    return names - {role.value for role in Role} - CONTRACT


def named_fields(path: Path, fields: set[str]) -> list[tuple[int, str]]:
    """(line, field) of each string constant that is a field name or quotes one ("pm25" in InfluxQL)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            words = {node.value} | set(re.findall(r'"([a-z][a-z0-9_]*)"', node.value))
            found += [(node.lineno, word) for word in sorted(words & fields)]
    return found


def test_the_finder_sees_bare_and_quoted_names(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('A = "pm25"\nB = \'SELECT last("lamp0_status") FROM x\'\nC = "a flow_rate"\n')
    assert named_fields(module, {"pm25", "lamp0_status", "flow_rate"}) == [(1, "pm25"), (2, "lamp0_status")]


def test_no_model_field_name_in_the_api_or_the_dashboards() -> None:
    fields = model_fields()
    assert {"import_energy_kwh", "positive_total", "lamp0_status", "pm25", "no2_ugm3"} <= fields
    paths = [
        *(ROOT / "api").rglob("*.py"),
        *(ROOT / "dashboards").rglob("*.py"),
        ROOT / "citygw/contract/air_quality.py",
    ]
    wrong = {
        str(path.relative_to(ROOT)): named_fields(path, fields)
        for path in sorted(paths)
        if not str(path.relative_to(ROOT)).startswith(OUT_OF_SCOPE)
    }
    assert {path: names for path, names in wrong.items() if names} == {}
