"""End to end on real services: simulated devices → edge agent → Mosquitto → collector → InfluxDB → API.

The judge is the simulator: the API must return exactly the engineering values its registers held.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.transit import gtfs_realtime_pb2

from api.app import create_app
from api.settings import load_settings
from api.transit.gtfs import load_gtfs
from citygw.contract.agent_config import AgentConfig
from collector.service import Collector
from collector.store import open_store
from collector.store.influx_v1 import InfluxV1Store
from edge.agent import Agent
from firmware_bridge.simulators import BusGpsSimulator, ModbusDeviceSimulator, serve_serial_pty, serve_tcp
from tests.services import InfluxDB, Mosquitto, free_port

pytestmark = pytest.mark.integration

ROUTE = [(49.8418, 24.0316), (49.8412, 24.0289), (49.8423, 24.0272), (49.8441, 24.0262)]
AQ_VALUES = {
    "no2": 21.0,
    "so2": 3.0,
    "o3": 40.0,
    "pm25": 17.3,
    "pm10": 31.9,
    "temperature": -4.5,
    "humidity": 81.2,
}
METER_VALUES = {"voltage_l1": 229.7, "current_l1": 12.25, "total_power": 8450.5, "frequency": 49.98}


async def _eventually(check: Callable[[], Awaitable[Any]], within_s: float = 20.0) -> Any:
    """Await ``check`` until it returns something truthy; fail with its last answer."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    pytest.fail(f"not reached within {within_s} s; last answer: {last!r}")


@contextlib.asynccontextmanager
async def _running(agent: Agent) -> AsyncIterator[None]:
    task = asyncio.create_task(agent.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _agent_config(
    tmp_path: Path, broker_url: str, aq_port: int, serial_port: str, gps_port: str
) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent_id": "e2e-depot",
            "site": "depot-1",
            "broker": {"url": broker_url},
            "journal": str(tmp_path / "journal.sqlite"),
            "publish": {"interval": 0.2},
            "lines": [
                {"id": "aq-tcp", "kind": "tcp", "host": "127.0.0.1", "port": aq_port, "timeout": 0.5},
                {"id": "rs485-1", "kind": "rtu", "port": serial_port, "baudrate": 9600, "timeout": 0.5},
                {"id": "gps", "kind": "nmea", "port": gps_port},
            ],
            "devices": [
                {
                    "id": "aq-1",
                    "profile": "vaisala_aqt530",
                    "line": "aq-tcp",
                    "unit": 1,
                    "poll_s": 0.5,
                    "tags": {"district": "halytskyi"},
                },
                {"id": "meter-1", "profile": "eastron_sdm630", "line": "rs485-1", "unit": 1, "poll_s": 0.5},
                {
                    "id": "bus-7-gps",
                    "line": "gps",
                    "poll_s": 0.2,
                    "vehicle": {"id": "7", "label": "7", "route": "1A"},
                },
            ],
        }
    )


async def test_simulated_devices_reach_the_api_through_mosquitto_and_influxdb(
    tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB
) -> None:
    store = open_store(f"influxdb://127.0.0.1:{influxdb.port}/e2e")
    assert isinstance(store, InfluxV1Store)
    store.ensure_database()
    air = ModbusDeviceSimulator("vaisala_aqt530", unit=1, values=AQ_VALUES)
    meter = ModbusDeviceSimulator("eastron_sdm630", unit=1, values=METER_VALUES)
    async with (
        serve_tcp([air]) as endpoint,
        serve_serial_pty([meter]) as serial_port,
        BusGpsSimulator(ROUTE, speed_mps=10.0, vehicle_id="7", period=0.2) as gps,
    ):
        config = _agent_config(tmp_path, mosquitto.url, endpoint.port, serial_port, gps.port)
        settings = load_settings(
            open_telemetry=True, registry_url=f"sqlite:///{tmp_path / 'registry.sqlite'}"
        )
        app = create_app(store, settings=settings)
        transport = httpx.ASGITransport(app=app)
        with Collector(mosquitto.url, store, client_id="e2e-collector", batch_max_seconds=0.2) as collector:
            async with (
                _running(Agent(config)),
                httpx.AsyncClient(transport=transport, base_url="http://api") as api,
            ):

                async def latest(device: str) -> dict[str, Any] | None:
                    response = await api.get(f"/v1/devices/{device}/latest")
                    return response.json() if response.status_code == 200 else None

                async def stored(measurement: str, device: str) -> dict[str, Any]:
                    """Every field's newest value in the store (slow registers are read less often)."""
                    response = await api.get(
                        f"/v1/telemetry/{measurement}", params={"device": device, "start": "-1m"}
                    )
                    values: dict[str, Any] = {}
                    for row in response.json()["rows"]:
                        values.update({k: v for k, v in row["values"].items() if v is not None})
                    return values

                for device, simulator in (("aq-1", air), ("meter-1", meter)):
                    body = await _eventually(lambda d=device: latest(d))  # type: ignore[misc]
                    [reading] = body["readings"]
                    assert reading["agent"] == "e2e-depot"
                    polled = {spec.field for spec in simulator.profile.select(("fast", "slow"))}
                    expected = {k: v for k, v in simulator.expected().items() if k in polled}
                    fast = {spec.field for spec in simulator.profile.select("fast")}
                    assert fast <= set(reading["fields"])
                    assert reading["fields"] == {k: expected[k] for k in reading["fields"]}
                    assert await stored(simulator.profile.measurement, device) == expected

                async def feed() -> gtfs_realtime_pb2.FeedMessage | None:
                    response = await api.get("/v1/transit/vehicle-positions")
                    message = gtfs_realtime_pb2.FeedMessage()
                    message.ParseFromString(response.content)
                    return message if len(message.entity) == 1 else None

                message = await _eventually(feed)
                position = message.entity[0].vehicle.position
                emitted = [(f.lat, f.lon) for f in gps.emitted if hasattr(f, "lat")]
                assert any(
                    math.isclose(position.latitude, lat, abs_tol=1e-5)
                    and math.isclose(position.longitude, lon, abs_tol=1e-5)
                    for lat, lon in emitted
                ), (position, emitted[-3:])
                assert message.entity[0].vehicle.vehicle.id == "7"
                assert message.entity[0].vehicle.trip.route_id == "1A"
        assert collector.stats.dead_letters == 0
    store.close()


def _feed(base: str, name: str) -> gtfs_realtime_pb2.FeedMessage:
    message = gtfs_realtime_pb2.FeedMessage()
    message.ParseFromString(httpx.get(f"{base}/v1/transit/{name}", timeout=15).content)
    return message


@pytest.mark.parametrize("services", ["embedded", "mosquitto+influxdb"])
def test_demo_shows_every_device_and_the_networks_vehicles_on_their_trips(
    tmp_path: Path, services: str, request: pytest.FixtureRequest
) -> None:
    """`citygw demo`: readings from every device within 15 s; the generated network's trams and buses
    (GPS and validator through an agent each) on trips with predictions within 45 s, the timetable they
    run and an operator alert; with nothing external (embedded broker and store) and with `--broker` /
    `--store` on real Mosquitto and InfluxDB."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    real: list[str] = []
    if services != "embedded":
        mosquitto: Mosquitto = request.getfixturevalue("mosquitto")
        influxdb: InfluxDB = request.getfixturevalue("influxdb")
        real = ["--broker", mosquitto.url, "--store", f"influxdb://127.0.0.1:{influxdb.port}/demo"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citygw.cli",
            "demo",
            "--port",
            str(port),
            "--workdir",
            str(tmp_path),
            "--duration",
            "90",
            *real,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    started = time.monotonic()
    fixed = {"aq-rynok", "aq-sykhiv", "meter-depot-1"}
    seen: set[str] = set()

    def vehicles(kind: str) -> set[str]:
        return {d for d in seen if d.endswith(f"-{kind}")}

    try:
        while time.monotonic() - started < 15 and not (
            fixed <= seen and len(vehicles("gps")) >= 10 and len(vehicles("validator")) >= 10
        ):
            time.sleep(0.5)
            with contextlib.suppress(httpx.HTTPError):
                seen = {d["device"] for d in httpx.get(f"{base}/v1/devices", timeout=2).json()}
        assert fixed <= seen, f"after 15 s the API knows {sorted(seen)}"
        assert len(vehicles("gps")) >= 10, sorted(seen)
        assert len(vehicles("validator")) >= 10, sorted(seen)
        timetable = load_gtfs(httpx.get(f"{base}/v1/transit/gtfs.zip", timeout=5).raise_for_status().content)
        on_trips: list[Any] = []
        positions: Any = []
        # A cold start puts a bus on a run only with evidence (#17): three in four of the demo's vehicles
        # have a driver's console logged in to their trip, the others have to move along theirs.
        while time.monotonic() - started < 45 and len(on_trips) < 10:
            time.sleep(1)
            positions = _feed(base, "vehicle-positions").entity
            on_trips = [e for e in positions if e.vehicle.trip.trip_id in timetable.trips]
        assert len(on_trips) >= 10, f"{len(on_trips)} of {len(positions)} vehicles on a trip of the timetable"
        updates = _feed(base, "trip-updates").entity
        assert len([e for e in updates if e.trip_update.stop_time_update]) >= 10
        (alert,) = _feed(base, "alerts").entity
        assert [e.route_id for e in alert.alert.informed_entity] == ["T1"]
        assert httpx.get(f"{base}/", timeout=2).status_code == 200  # the city page
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    assert "CityGW demo stopped." in text, text[-3000:]
    assert f"city page:          http://127.0.0.1:{port}/\n" in text, text[:1000]
    assert "Traceback" not in text, text[-3000:]
    assert "next stop" in text, text[-3000:]  # the summary's line per vehicle
