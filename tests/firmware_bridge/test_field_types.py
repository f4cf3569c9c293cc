"""Every device model reporting the same field of the same measurement gives it the same value type.

InfluxDB keeps one type per field of a measurement and refuses the other, so a city running two
air-quality station models would otherwise lose one model's readings.
"""

from __future__ import annotations

from collections import defaultdict

from firmware_bridge.profile import available_profiles
from firmware_bridge.simulators import ModbusDeviceSimulator


def test_a_field_has_one_type_across_all_profiles() -> None:
    types: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for name in available_profiles():
        simulator = ModbusDeviceSimulator(name)
        for field, value in simulator.expected().items():
            types[(simulator.profile.measurement, field)].add((type(value).__name__, name))
    clashes = {key: found for key, found in types.items() if len({t for t, _ in found}) > 1}
    assert not clashes, clashes


def test_quantities_are_floats_and_counters_and_codes_are_ints() -> None:
    jxbs = ModbusDeviceSimulator("jxbs_3001").expected()
    assert isinstance(jxbs["pm25"], float)
    assert isinstance(jxbs["co2"], float)
    validator = ModbusDeviceSimulator("ticket_validator").expected()
    assert isinstance(validator["taps_resident"], int)
    assert isinstance(validator["status"], int)
