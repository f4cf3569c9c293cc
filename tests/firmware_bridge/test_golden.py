"""Golden cases (testcases/<case>/): each device's words decode to the expected values, in the
expected reads, over Modbus TCP and over a serial line. Adding a device adds a folder, not a test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from citygw.contract.wire import FieldValue
from firmware_bridge.planner import plan_requests
from firmware_bridge.profile import Poll, available_profiles, load_profile
from firmware_bridge.simulators import ModbusDeviceSimulator
from firmware_bridge.simulators.modbus_device import TABLE_OF_FUNCTION
from tests.firmware_bridge.lines import TRANSPORTS, Transport, line_to
from tests.firmware_bridge.test_dlms_golden import PROFILE_CAPTURES as DLMS_PROFILE_CAPTURES
from tests.firmware_bridge.test_lorawan import GOLDEN as LORAWAN_GOLDEN
from tests.firmware_bridge.test_mbus_golden import PROFILE_CAPTURES as MBUS_PROFILE_CAPTURES

CASES_DIR = Path(__file__).parent / "testcases"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "device.yaml").exists())
# GPS receivers' cases (input.nmea) are run by test_golden_nmea.py.
NMEA_CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "input.nmea").exists())


@dataclass(frozen=True)
class GoldenCase:
    profile: str
    unit: int
    poll: list[Poll] | None
    registers: dict[str, dict[int, list[int]]]
    values: dict[str, FieldValue]
    expected_values: dict[str, FieldValue]
    expected_requests: list[tuple[str, int, int]]


def load_case(name: str) -> GoldenCase:
    device: dict[str, Any] = yaml.safe_load((CASES_DIR / name / "device.yaml").read_text("utf-8"))
    expected: dict[str, Any] = yaml.safe_load((CASES_DIR / name / "expected.yaml").read_text("utf-8"))
    return GoldenCase(
        profile=device["profile"],
        unit=device.get("unit", 1),
        poll=device.get("poll"),
        registers=device.get("registers", {}),
        values=device.get("values", {}),
        expected_values=expected["values"],
        expected_requests=[(t, a, c) for t, a, c in expected["requests"]],
    )


def device_for(case: GoldenCase) -> ModbusDeviceSimulator:
    sim = ModbusDeviceSimulator(case.profile, unit=case.unit, values=case.values)
    for table, blocks in case.registers.items():
        words = {start + i: w for start, block in blocks.items() for i, w in enumerate(block)}
        sim.load_image(table, words)  # type: ignore[arg-type]
        # The simulator sends exactly the captured words back: encoding is the inverse of decoding.
        assert {a: w for a, w in sim.image(table).items() if a in words} == words  # type: ignore[arg-type]
    return sim


def same(value: FieldValue, expected: FieldValue) -> bool:
    if isinstance(expected, float) and isinstance(value, float):
        return value == pytest.approx(expected, rel=1e-6)
    return value == expected and type(value) is type(expected)


def test_every_shipped_profile_has_a_golden_case() -> None:
    covered = {load_case(name).profile for name in CASES}
    for name in NMEA_CASES:
        covered.add(yaml.safe_load((CASES_DIR / name / "expected.yaml").read_text("utf-8"))["profile"])
    covered |= set(MBUS_PROFILE_CAPTURES)  # M-Bus meters: recorded telegrams (test_mbus_golden.py)
    covered |= set(LORAWAN_GOLDEN)  # tests/firmware_bridge/test_lorawan.py: the vendors' examples
    covered |= {"water_pump_station", "opc_40223_pump"}  # OPC UA: test_opcua.py, test_opcua_nodeset.py
    covered |= set(DLMS_PROFILE_CAPTURES)  # DLMS meters: a recorded HAN push (test_dlms_golden.py)
    assert set(available_profiles(None)) <= covered


@pytest.mark.parametrize("name", CASES)
def test_planned_requests(name: str) -> None:
    case = load_case(name)
    profile = load_profile(case.profile)
    requests = plan_requests(
        profile.select(case.poll), max_registers=profile.max_registers, forbidden=profile.forbidden
    )
    assert [(r.table, r.address, r.count) for r in requests] == case.expected_requests


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", CASES)
async def test_golden_case(name: str, transport: Transport) -> None:
    case = load_case(name)
    sim = device_for(case)
    async with line_to(transport, [sim]) as line:
        values = await line.read(case.unit, sim.profile, case.poll)
    assert set(values) == set(case.expected_values)
    wrong = {f: (values[f], v) for f, v in case.expected_values.items() if not same(values[f], v)}
    assert not wrong, f"decoded vs expected: {wrong}"
    sent = [(TABLE_OF_FUNCTION[fc], address, count) for fc, address, count in sim.requests]
    assert sent == case.expected_requests
