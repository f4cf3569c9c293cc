"""A bus's on-board console: which configs name one correctly, and the route tag and trip field it gives."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig, AgentConfigError, Device
from citygw.contract.agent_config_check import validate_agent_config
from edge.poller import device_reading
from edge.vehicles import Vehicles

SOURCE = Path("bus.yaml")


def bus(**vehicle: Any) -> dict[str, Any]:
    """A bus agent: GPS, validator and console; ``vehicle`` goes into the GPS device's vehicle."""
    return {
        "agent_id": "bus-4711",
        "site": "depot-north",
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        "journal": "/tmp/journal.sqlite",
        "lines": [
            {"id": "gps", "kind": "nmea", "port": "/dev/ttyAMA0"},
            {"id": "rs485", "kind": "rtu", "port": "/dev/ttyUSB0"},
        ],
        "devices": [
            {
                "id": "gps-4711",
                "line": "gps",
                "poll_s": 5,
                "vehicle": {"id": "bus-4711", "label": "4711", "route": "A3", **vehicle},
            },
            {
                "id": "validator-4711",
                "line": "rs485",
                "unit": 1,
                "profile": "ticket_validator",
                "poll_s": 30,
                "vehicle": {"id": "bus-4711", "label": "4711", "route": "A3"},
            },
            {"id": "console-4711", "line": "rs485", "unit": 2, "profile": "onboard_console", "poll_s": 5},
        ],
    }


def config(data: dict[str, Any]) -> AgentConfig:
    return validate_agent_config(data, SOURCE)


def test_a_vehicle_names_its_console() -> None:
    loaded = config(bus(console="console-4711"))
    vehicle = loaded.devices[0].vehicle
    assert vehicle is not None
    assert (vehicle.console, vehicle.console_expiry_s) == ("console-4711", 300.0)


def _second_bus(data: dict[str, Any]) -> None:
    data["lines"].append({"id": "gps-2", "kind": "nmea", "port": "/dev/ttyS1"})
    data["devices"].append(
        {
            "id": "gps-4712",
            "line": "gps-2",
            "poll_s": 5,
            "vehicle": {"id": "bus-4712", "label": "4712", "console": "console-4711"},
        }
    )


def _console_in(vehicle_id: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["devices"][2]["vehicle"] = {"id": vehicle_id, "label": vehicle_id}

    return change


def _validator_names(console: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["devices"][1]["vehicle"]["console"] = console

    return change


def _validator_expiry(data: dict[str, Any]) -> None:
    data["devices"][1]["vehicle"] |= {"console": "console-4711", "console_expiry_s": 60}


REFUSED: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], None] | None, str]] = {
    "unknown device": (
        {"console": "console-9"},
        None,
        "devices[0].vehicle.console: no device 'console-9' on this agent; fix: name the device of this "
        "agent that is the vehicle's on-board console (a Modbus device whose profile reads route_id and "
        "trip_id, e.g. onboard_console)",
    ),
    "profile without route and trip": (
        {"console": "validator-4711"},
        None,
        "devices[0].vehicle.console: device 'validator-4711' has profile 'ticket_validator', which reads "
        "no route_id, trip_id; fix: name the device",
    ),
    "not a Modbus device": (
        {"console": "gps-4711"},
        None,
        "devices[0].vehicle.console: device 'gps-4711' is not a Modbus device; fix: name the device",
    ),
    "console of two vehicles": (
        {"console": "console-4711"},
        _second_bus,
        "devices[3].vehicle.console: device 'console-4711' is the console of vehicle 'bus-4711'; "
        "fix: a console serves one vehicle",
    ),
    "two consoles for one vehicle": (
        {"console": "console-4711"},
        _validator_names("validator-4711"),
        "devices[1].vehicle.console: vehicle 'bus-4711' already has console 'console-4711' (expiry 300 s) "
        "at devices[0].vehicle.console; fix: give the vehicle one console, named alike on each of its "
        "devices",
    ),
    "two expiries for one console": (
        {"console": "console-4711"},
        _validator_expiry,
        "devices[1].vehicle.console: vehicle 'bus-4711' already has console 'console-4711' (expiry 300 s)",
    ),
    "expiry without console": (
        {"console_expiry_s": 60},
        None,
        "devices[0].vehicle: Value error, console_expiry_s is for a vehicle with a console: add console "
        "or remove it",
    ),
    "expiry of zero": (
        {"console": "console-4711", "console_expiry_s": 0},
        None,
        "devices[0].vehicle.console_expiry_s: Input should be greater than 0",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_wrong_console_is_refused_naming_the_field_and_the_fix(case: str) -> None:
    vehicle, change, expected = REFUSED[case]
    data = bus(**vehicle)
    if change is not None:
        change(data)
    with pytest.raises(AgentConfigError, match=re.escape(f"{SOURCE}: {expected}")):
        config(data)


def test_a_console_riding_in_another_vehicle_of_the_agent_is_refused() -> None:
    data = bus(console="console-4711")
    _second_bus(data)
    data["devices"][3]["vehicle"]["console"] = None
    _console_in("bus-4712")(data)
    with pytest.raises(
        AgentConfigError,
        match=re.escape("devices[0].vehicle.console: device 'console-4711' rides in vehicle 'bus-4712', not"),
    ):
        config(data)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TRIP = "A3-weekday-0-1000"
BUS = {"site": "depot-north", "vehicle": "bus-4711", "vehicle_label": "4711"}


def on_the_bus(clock: Clock, *, expiry_s: int = 300) -> tuple[Vehicles, Device, Device]:
    """The consoles of the bus agent, and its GPS and validator devices."""
    loaded = config(bus(console="console-4711", console_expiry_s=expiry_s))
    gps, validator, _ = loaded.devices
    return Vehicles(loaded.devices, clock=clock), gps, validator


def said(
    device: Device, vehicles: Vehicles, fields: dict[str, wire.FieldValue] | None = None
) -> tuple[dict[str, str], wire.FieldValue | None]:
    """The tags and the ``trip_id`` field of a reading of ``device`` taken now; no reading has a trip tag."""
    reading = device_reading(
        device, "depot-north", vehicles, measurement="test", ts=0, fields=fields or {"x": 1}
    )
    assert "trip" not in reading.tags
    return reading.tags, reading.fields.get("trip_id")


def test_without_a_log_in_the_configured_route_and_no_trip() -> None:
    vehicles, gps, _ = on_the_bus(Clock())
    assert said(gps, vehicles) == (BUS | {"route": "A3"}, None)


def test_every_device_of_the_vehicle_has_the_consoles_route_tag_and_trip_field_until_log_out() -> None:
    vehicles, gps, validator = on_the_bus(Clock())
    assert vehicles.heard("console-4711", {"route_id": "T1", "trip_id": TRIP, "login": 1}) is None
    for device in (gps, validator):  # the console's route wins over the config's
        assert said(device, vehicles) == (BUS | {"route": "T1"}, TRIP)
    vehicles.heard("console-4711", {"route_id": "A29", "trip_id": "", "login": 2})
    assert said(validator, vehicles) == (BUS | {"route": "A29"}, None)
    vehicles.heard("console-4711", {"route_id": "", "trip_id": "", "login": 0})
    assert said(gps, vehicles) == (BUS | {"route": "A3"}, None)


def test_a_silent_console_expires_instead_of_giving_its_trip_for_ever() -> None:
    clock = Clock()
    vehicles, gps, _ = on_the_bus(clock, expiry_s=60)
    vehicles.heard("console-4711", {"route_id": "A3", "trip_id": TRIP})
    clock.now += 60
    assert said(gps, vehicles)[1] == TRIP
    vehicles.heard("console-4711", {"route_id": "A3", "trip_id": TRIP})  # it answered again
    clock.now += 60
    assert said(gps, vehicles)[1] == TRIP
    clock.now += 0.1
    assert said(gps, vehicles) == (BUS | {"route": "A3"}, None)


def test_a_route_id_that_cannot_be_a_tag_is_dropped_and_said() -> None:
    vehicles, gps, _ = on_the_bus(Clock())
    problem = vehicles.heard("console-4711", {"route_id": "#6 (night)", "trip_id": TRIP})
    assert problem is not None
    assert problem.startswith("route_id '#6 (night)' cannot be a tag (it must match ^[A-Za-z0-9]")
    assert said(gps, vehicles) == (BUS | {"route": "A3"}, TRIP)


def test_a_trip_id_is_any_text_a_field_can_carry() -> None:
    vehicles, gps, _ = on_the_bus(Clock())
    assert vehicles.heard("console-4711", {"route_id": "T6", "trip_id": " #42 (late) "}) is None
    assert said(gps, vehicles) == (BUS | {"route": "T6"}, "#42 (late)")
    longest = "T" * 256
    assert vehicles.heard("console-4711", {"route_id": "T6", "trip_id": longest}) is None
    assert said(gps, vehicles)[1] == longest
    problem = vehicles.heard("console-4711", {"route_id": "T6", "trip_id": longest + "7"})
    assert problem == "trip_id of 257 characters is too long for a field of a reading"
    assert said(gps, vehicles) == (BUS | {"route": "T6"}, None)


def test_the_devices_own_trip_id_and_a_full_reading_keep_their_fields() -> None:
    vehicles, gps, _ = on_the_bus(Clock())
    vehicles.heard("console-4711", {"route_id": "A3", "trip_id": TRIP})
    assert said(gps, vehicles, {"trip_id": "its own", "x": 1})[1] == "its own"
    room_for_one = {f"f{i}": i for i in range(wire.MAX_FIELDS_PER_READING - 1)}
    assert said(gps, vehicles, room_for_one)[1] == TRIP
    full = room_for_one | {"x": 1}
    assert said(gps, vehicles, full)[1] is None


def test_readings_of_other_devices_say_nothing_of_the_trip() -> None:
    vehicles, gps, _ = on_the_bus(Clock())
    assert vehicles.heard("validator-4711", {"route_id": "T1", "trip_id": TRIP}) is None
    assert said(gps, vehicles) == (BUS | {"route": "A3"}, None)


def test_a_new_config_keeps_the_log_in_of_a_kept_console_only() -> None:
    vehicles, gps, _ = on_the_bus(Clock())
    vehicles.heard("console-4711", {"route_id": "A3", "trip_id": TRIP})
    vehicles.configure(config(bus(console="console-4711")).devices)
    assert said(gps, vehicles)[1] == TRIP
    vehicles.configure(config(bus()).devices)
    vehicles.configure(config(bus(console="console-4711")).devices)
    assert said(gps, vehicles)[1] is None
