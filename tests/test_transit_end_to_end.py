"""A simulated bus through real Mosquitto to the residents' GTFS-realtime feed.

GPS (NMEA on a pty), ticket validator and driver's console (Modbus RTU on a pty) → edge agent →
Mosquitto → collector → embedded SQLite store → API VehiclePositions (JSON). The bus drives line
3A of the fixture network 15 minutes late on its 09:45 run, so where and when it is fits the
10:00 run on time: only the trip the driver logged in to on the console says which run it is.

The bus drives on Friday 16 January 2026 whatever the hour of the test: the GPS receiver, the
agent's reading clock and the API's clock are all moved back there by the same offset (a past day:
the collector refuses readings from the future).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.settings import load_settings
from api.transit.gtfs import load_gtfs
from api.transit.timetable import Timetable, TripRun
from citygw.contract.agent_config import AgentConfig
from citygw.contract.agent_config_check import validate_agent_config
from collector.service import Collector
from collector.store.sqlite import SqliteStore
from edge import poller
from edge.agent import Agent
from firmware_bridge.nmea import GpsFix
from firmware_bridge.simulators import BusGpsSimulator, ModbusDeviceSimulator, serve_serial_pty
from simulators.transit.network import network_zip
from tests.services import Mosquitto
from tests.test_end_to_end import _running, eventually

pytestmark = pytest.mark.integration

FRIDAY = dt.date(2026, 1, 16)
CONSOLE_TRIP = "A3-weekday-0-0945"  # what the driver logged in to
ON_TIME_TRIP = "A3-weekday-0-1000"  # what place and time alone suggest
LATE_S = 15 * 60
FROM_STOP = 3  # the bus leaves this stop (index in the trip) as the test starts
SPEED_MPS = 5.5  # line 3A's scheduled speed between stops in the fixture network
TAPS = 45  # boardings during the test: half of a 90-passenger bus (ApiSettings.transit_vehicle_capacity)
ON_BOARD_PERCENT = 50


class Clock:
    """Wall-clock time moved to ``start_ms`` at construction, running at the normal pace from there."""

    def __init__(self, start_ms: int) -> None:
        self.offset_ms = start_ms - time.time_ns() // 1_000_000

    def ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.ms() / 1000, dt.UTC)


class ShiftedGps(BusGpsSimulator):
    """A receiver whose fixes are stamped by ``clock``."""

    def __init__(self, clock: Clock, route: list[tuple[float, float]], **knobs: Any) -> None:
        super().__init__(route, **knobs)
        self.clock = clock

    def sentences(self, now: dt.datetime | None = None) -> list[str]:
        return super().sentences(now or self.clock.now())


def run_of(timetable: Timetable, trip_id: str) -> TripRun:
    day = timetable.day_start(FRIDAY)
    return next(r for r in timetable.runs_between(day, day + 86400) if r.trip.trip_id == trip_id)


def road_ahead(timetable: Timetable, run: TripRun, metres: float) -> list[tuple[float, float]]:
    """Points of the run's line every 20 m from ``FROM_STOP`` on, as latitude and longitude."""
    path = timetable.path(run.trip.trip_id)
    start = path.stop_along_m[FROM_STOP]
    points = []
    for step in range(int(metres // 20) + 1):
        x, y, _ = path.line.point_at(start + 20 * step)
        points.append(timetable.plane.to_lat_lon(x, y))
    return points


def bus_agent(tmp_path: Path, broker_url: str, gps_port: str, rs485_port: str) -> AgentConfig:
    vehicle = {"id": "bus-4711", "label": "4711"}
    raw: dict[str, Any] = {
        "agent_id": "bus-4711",
        "site": "depot-north",
        "broker": {"url": broker_url},
        "journal": str(tmp_path / "journal.sqlite"),
        "publish": {"interval": 0.2},
        "lines": [
            {"id": "gps", "kind": "nmea", "port": gps_port},
            {"id": "rs485", "kind": "rtu", "port": rs485_port, "timeout": 0.5},
        ],
        "devices": [
            {"id": "gps-4711", "line": "gps", "vehicle": vehicle | {"console": "console-4711"}},
            {"id": "validator-4711", "line": "rs485", "unit": 1, "profile": "ticket_validator"},
            {"id": "console-4711", "line": "rs485", "unit": 2, "profile": "onboard_console"},
        ],
    }
    for device in raw["devices"]:
        device.setdefault("vehicle", vehicle)
        device["poll_s"] = 0.5
    return validate_agent_config(raw, tmp_path / "bus.yaml")


async def test_the_feed_shows_the_bus_on_its_console_trip_with_occupancy_from_its_taps(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    gtfs = tmp_path / "gtfs.zip"
    gtfs.write_bytes(network_zip())
    timetable = load_gtfs(gtfs.read_bytes())
    late_run, on_time_run = run_of(timetable, CONSOLE_TRIP), run_of(timetable, ON_TIME_TRIP)
    leaves_at = late_run.departure(FROM_STOP) + LATE_S
    assert leaves_at == on_time_run.departure(FROM_STOP)  # the two runs cannot be told apart by the GPS
    clock = Clock(leaves_at * 1000)
    monkeypatch.setattr(poller, "now_ms", clock.ms)  # the time the agent stamps Modbus readings with

    console = ModbusDeviceSimulator(
        "onboard_console", unit=2, values={"route_id": "A3", "trip_id": CONSOLE_TRIP, "login": 1}
    )
    validator = ModbusDeviceSimulator("ticket_validator", unit=1)
    store = SqliteStore(tmp_path / "citygw.sqlite")
    settings = load_settings(
        open_telemetry=True,
        registry_url=f"sqlite:///{tmp_path / 'registry.sqlite'}",
        transit_gtfs_path=gtfs,
        rate_limit_per_s=0,
    )
    app = create_app(store, settings=settings, clock=clock.ms)
    async with (
        serve_serial_pty([validator, console]) as rs485_port,
        ShiftedGps(clock, road_ahead(timetable, late_run, 400), speed_mps=SPEED_MPS, period=0.5) as gps,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
    ):
        config = bus_agent(tmp_path, mosquitto.url, gps.port, rs485_port)
        with Collector(mosquitto.url, store, client_id="transit-e2e", batch_max_seconds=0.2) as collector:
            async with _running(Agent(config)):

                async def taps_stored() -> bool:
                    return (await api.get("/v1/devices/validator-4711/latest")).status_code == 200

                await eventually("the taps stored", taps_stored)
                before = validator.expected()["taps_resident"]
                assert isinstance(before, int)
                validator.set("taps_resident", before + TAPS)

                async def on_console_trip() -> dict[str, Any] | None:
                    feed = (await api.get("/v1/transit/vehicle-positions", params={"format": "json"})).json()
                    vehicles = [entity["vehicle"] for entity in feed.get("entity", [])]
                    return next(
                        (
                            v
                            for v in vehicles
                            if v.get("trip", {}).get("trip_id") == CONSOLE_TRIP
                            and v.get("occupancy_percentage") == ON_BOARD_PERCENT
                        ),
                        None,
                    )

                vehicle = await eventually("the bus on its console trip", on_console_trip, within_s=25)
        assert collector.stats.dead_letters == 0
    stored = [point for name in ("vehicle_position", "validator") for point in store.latest(measurement=name)]
    store.close()
    assert sorted(point.tags["device"] for point in stored) == ["gps-4711", "validator-4711"]
    for point in stored:  # the trip is a field of every reading of the bus, never a tag
        assert point.fields["trip_id"] == CONSOLE_TRIP
        assert "trip" not in point.tags
    assert vehicle["vehicle"] == {"id": "bus-4711", "label": "4711"}
    assert vehicle["trip"] == {
        "trip_id": CONSOLE_TRIP,
        "route_id": "A3",
        "direction_id": 0,
        "start_date": "20260116",
        "start_time": "09:45:00",
        "schedule_relationship": "SCHEDULED",
    }
    assert vehicle["occupancy_status"] == "FEW_SEATS_AVAILABLE"  # 40-65 % of the seats and standing room
    fixes = [(f.lat, f.lon) for f in gps.emitted if isinstance(f, GpsFix)]
    position = vehicle["position"]
    assert any(
        math.isclose(position["latitude"], lat, abs_tol=1e-5)
        and math.isclose(position["longitude"], lon, abs_tol=1e-5)
        for lat, lon in fixes
    ), (position, fixes[-3:])
    assert vehicle["stop_id"] in {st.stop_id for st in late_run.trip.stop_times[FROM_STOP:]}
