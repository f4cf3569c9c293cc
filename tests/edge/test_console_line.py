"""On a simulated bus: the driver's console on a real RS-485 Modbus line (pty), the GPS on its own pty.

Positions and validator taps carry the trip the driver logged in to on the console as the field
``trip_id`` (never a tag: a trip would make a series); after the log-out, and once a console that
stopped answering has expired, they carry the configured route only. A trip id typed in by hand
is carried as it is; a route id no tag can carry is left out and said on the console's health.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig, NmeaLine, RtuLine
from citygw.contract.agent_config_check import validate_agent_config
from edge.poller import GpsPoller, HealthBoard, ModbusPoller
from edge.vehicles import Vehicles
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.profile import load_profile
from firmware_bridge.simulators import BusGpsSimulator, ModbusDeviceSimulator, serve_serial_pty
from tests.edge.test_console import TRIP, bus
from tests.edge.test_poller import TIMEOUT, Recorder

ROUTE = [(49.8418, 24.0316), (49.8412, 24.0289), (49.8423, 24.0272)]
EXPIRY_S = 1.0


def bus_on(gps_port: str, rs485_port: str) -> AgentConfig:
    """The bus agent of test_console, polling fast, on the simulators' ports."""
    data = bus(console="console-4711", console_expiry_s=EXPIRY_S)
    data["lines"][0]["port"] = gps_port
    data["lines"][1] |= {"port": rs485_port, "timeout": TIMEOUT}
    for device, poll_s in zip(data["devices"], (0.2, 0.5, 0.2), strict=True):
        device["poll_s"] = poll_s
    return validate_agent_config(data, Path("bus.yaml"))


@contextlib.asynccontextmanager
async def riding(config: AgentConfig, journal: Recorder, board: HealthBoard) -> AsyncIterator[None]:
    """The bus's two pollers sharing the vehicle's console log-in, as the agent runs them."""
    vehicles = Vehicles(config.devices)
    gps, validator, console = config.devices
    gps_line, rs485 = config.lines
    assert isinstance(gps_line, NmeaLine)
    assert isinstance(rs485, RtuLine)
    modbus = ModbusPoller(
        [(d, load_profile(d.profile or "")) for d in (validator, console)],
        journal=journal,
        board=board,
        site=config.site,
        vehicles=vehicles,
    )
    positions = GpsPoller(gps_line, gps, journal=journal, board=board, site=config.site, vehicles=vehicles)
    async with (
        ModbusLine.rtu(port=rs485.port, baudrate=9600, timeout=TIMEOUT) as line,
        asyncio.TaskGroup() as tasks,
    ):
        running = [tasks.create_task(modbus.run(line)), tasks.create_task(positions.run())]
        try:
            yield
        finally:
            for task in running:
                task.cancel()


async def next_reading(
    journal: Recorder, matches: Callable[[wire.Reading], bool], *, after: int = 0, within_s: float = 5.0
) -> int:
    """The index of the first reading from ``after`` on that ``matches``, waiting for it to be journaled."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for index in range(after, len(journal.readings)):
            if matches(journal.readings[index]):
                return index
        await asyncio.sleep(0.05)
    raise AssertionError(f"no such reading within {within_s} s; last: {journal.readings[-3:]}")


def position(reading: wire.Reading) -> bool:
    return reading.measurement == "vehicle_position"


def on_trip(reading: wire.Reading, trip: str = TRIP) -> bool:
    return reading.fields.get("trip_id") == trip


async def test_positions_and_taps_carry_the_consoles_trip_until_log_out_or_silence(tmp_path: Path) -> None:
    console = ModbusDeviceSimulator(
        "onboard_console", unit=2, values={"route_id": "A3", "trip_id": TRIP, "login": 1}
    )
    validator = ModbusDeviceSimulator("ticket_validator", unit=1)
    journal = Recorder(tmp_path / "journal.sqlite")
    board = HealthBoard()
    async with (
        serve_serial_pty([validator, console]) as rs485_port,
        BusGpsSimulator(ROUTE, speed_mps=10.0, vehicle_id="bus-4711", period=0.2) as gps,
    ):
        config = bus_on(gps.port, rs485_port)
        async with riding(config, journal, board):
            logged_in = await next_reading(journal, lambda r: position(r) and on_trip(r))
            assert journal.readings[logged_in].tags == {
                "site": "depot-north",
                "vehicle": "bus-4711",
                "vehicle_label": "4711",
                "route": "A3",
            }
            await next_reading(journal, lambda r: r.measurement == "validator" and on_trip(r))
            assignment = await next_reading(journal, lambda r: r.device == "console-4711")
            assert journal.readings[assignment].measurement == "vehicle_assignment"
            assert journal.readings[assignment].fields == {"route_id": "A3", "trip_id": TRIP, "login": 1}

            for field, value in (("trip_id", ""), ("route_id", ""), ("login", 0)):
                console.set(field, value)
            logged_out = await next_reading(journal, lambda r: r.fields.get("login") == 0, after=assignment)
            later = await next_reading(journal, position, after=logged_out + 1)
            assert journal.readings[later].tags["route"] == "A3"  # the configured route
            assert not any(on_trip(r) for r in journal.readings[logged_out:])

            for field, value in (("trip_id", TRIP), ("route_id", "A3"), ("login", 1)):
                console.set(field, value)
            back = await next_reading(journal, lambda r: position(r) and on_trip(r), after=later)

            console.set("trip_id", "#42 late")  # typed in by hand: no tag could carry it, a field can
            typed = await next_reading(journal, lambda r: position(r) and on_trip(r, "#42 late"), after=back)
            console.set("route_id", "#6 night")  # no tag can carry it
            garbled = await next_reading(
                journal, lambda r: r.fields.get("route_id") == "#6 night", after=typed
            )
            assert "route_id '#6 night' cannot be a tag" in (board.devices["console-4711"].error or "")
            later = await next_reading(journal, position, after=garbled)
            assert journal.readings[later].tags["route"] == "A3"  # the configured route
            assert on_trip(journal.readings[later], "#42 late")
            console.set("route_id", "A3")
            console.set("trip_id", TRIP)
            back = await next_reading(journal, lambda r: position(r) and on_trip(r), after=later)
            console.offline = True
            silent_since = time.monotonic()
            dropped = await next_reading(journal, lambda r: position(r) and not on_trip(r), after=back)
            # Kept for the expiry from the console's last answer, up to a poll (0.2 s) before it fell silent.
            assert time.monotonic() - silent_since >= EXPIRY_S - 0.3
            assert board.devices["console-4711"].state is wire.DeviceState.TIMEOUT
            assert not any(on_trip(r) for r in journal.readings[dropped:])
    journal.close()
    assert not [r for r in journal.readings if "trip" in r.tags]
