"""The whole agent against real Mosquitto and the firmware simulators."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from citygw.contract import wire
from edge.agent import Agent
from firmware_bridge.nmea import GpsFix
from firmware_bridge.simulators import BusGpsSimulator, ModbusDeviceSimulator, serve_serial_pty, serve_tcp
from tests.edge.conftest import Watcher, agent_config, save_sessions, watching
from tests.services import Mosquitto


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run(), name="agent")
    try:
        await asyncio.wait_for(agent.started.wait(), 10)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def readings_of(watcher: Watcher, device: str) -> list[wire.Reading]:
    """The device's readings as first delivered: a batch sent again (same seq, same bytes) counts once."""
    seen: set[int] = set()
    found = []
    for batch in watcher.batches():
        if batch.seq not in seen:
            seen.add(batch.seq)
            found += [r for r in batch.readings if r.device == device]
    return found


def modbus_devices(port: int, *units: tuple[str, str, int]) -> dict[str, Any]:
    return {
        "lines": [{"id": "tcp-sim", "kind": "tcp", "host": "127.0.0.1", "port": port, "timeout": 0.2}],
        "devices": [
            {
                "id": device,
                "profile": profile,
                "line": "tcp-sim",
                "unit": unit,
                "poll_s": 0.2,
                "tags": {"district": "d1"},
            }
            for device, profile, unit in units
        ],
    }


async def test_agent_publishes_what_the_devices_hold(tmp_path: Path, mosquitto: Mosquitto) -> None:
    aq = ModbusDeviceSimulator("vaisala_aqt530", unit=1, values={"pm25": 12.3, "no2": 41})
    meter = ModbusDeviceSimulator("eastron_sdm120", unit=2)
    async with serve_tcp([aq, meter]) as endpoint:
        config = agent_config(
            tmp_path,
            mosquitto.url,
            **modbus_devices(endpoint.port, ("aq-1", "vaisala_aqt530", 1), ("meter-1", "eastron_sdm120", 2)),
        )
        agent = Agent(config)
        before = time.time_ns() // 1_000_000
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for(
                "both devices", lambda: bool(readings_of(watcher, "aq-1") and readings_of(watcher, "meter-1"))
            )
        after = time.time_ns() // 1_000_000
    first_aq = readings_of(watcher, "aq-1")[0]
    assert first_aq.fields == aq.expected()
    assert first_aq.measurement == "air_quality"
    assert first_aq.tags == {"district": "d1", "site": "test-site"}
    assert before <= first_aq.ts <= after
    assert readings_of(watcher, "meter-1")[0].fields == meter.expected()
    assert readings_of(watcher, "meter-1")[0].measurement == meter.profile.measurement


async def test_a_dead_device_does_not_stop_the_others(tmp_path: Path, mosquitto: Mosquitto) -> None:
    aq = ModbusDeviceSimulator("vaisala_aqt530", unit=1)
    dead = ModbusDeviceSimulator("eastron_sdm120", unit=2)
    dead.offline = True
    async with serve_tcp([aq, dead]) as endpoint:
        config = agent_config(
            tmp_path,
            mosquitto.url,
            **modbus_devices(
                endpoint.port, ("aq-1", "vaisala_aqt530", 1), ("meter-dead", "eastron_sdm120", 2)
            ),
        )
        agent = Agent(config)
        async with watching(mosquitto.url) as watcher, running(agent):
            await asyncio.sleep(3.0)
            await watcher.wait_for("health", lambda: bool(watcher.on(wire.Channel.HEALTH)))
            health = wire.Health.model_validate_json(watcher.on(wire.Channel.HEALTH)[-1].payload)
            dead_attempts = len(dead.requests)

    live = readings_of(watcher, "aq-1")
    assert len(live) >= 8, f"only {len(live)} readings of the live device in 3 s at 0.2 s"
    assert not readings_of(watcher, "meter-dead")
    assert health.devices["meter-dead"].state is wire.DeviceState.TIMEOUT
    assert health.devices["meter-dead"].last_ok is None
    assert health.devices["aq-1"].state is wire.DeviceState.OK
    assert health.devices["aq-1"].reads >= 8
    # Without backoff it would be tried 15 times in 3 s; doubling from 0.2 s allows about 4.
    assert 2 <= dead_attempts <= 6, dead_attempts


@pytest.mark.parametrize("profile", [None, "gps_nmea"])
async def test_gps_positions_at_most_every_poll_s(
    tmp_path: Path, mosquitto: Mosquitto, profile: str | None
) -> None:
    route = [(49.8418, 24.0316), (49.8412, 24.0289)]
    async with BusGpsSimulator(route, period=0.1, vehicle_id="bus-7") as gps:
        config = agent_config(
            tmp_path,
            mosquitto.url,
            lines=[{"id": "gps", "kind": "nmea", "port": gps.port, "timeout": 1.0}],
            devices=[
                {
                    "id": "bus-7-gps",
                    "line": "gps",
                    "poll_s": 0.5,
                    "vehicle": {"id": "bus-7", "label": "Bus 7", "route": "12"},
                    **({"profile": profile} if profile else {}),
                }
            ],
        )
        agent = Agent(config)
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("4 positions", lambda: len(readings_of(watcher, "bus-7-gps")) >= 4)
            gps.inject(b"$GPRMC,garbage*00\r\n\x00\xff noise\r\n")
            emitted = {fix.ts_ms: fix for fix in gps.emitted}
            await asyncio.sleep(0.3)
            assert agent.board.devices["bus-7-gps"].failures >= 1
            gps.no_fix = True
            await watcher.wait_for(
                "no_fix", lambda: agent.board.devices["bus-7-gps"].state is wire.DeviceState.NO_FIX
            )

    positions = readings_of(watcher, "bus-7-gps")
    assert all(p.measurement == "vehicle_position" for p in positions)
    assert positions[0].tags == {
        "vehicle": "bus-7",
        "vehicle_label": "Bus 7",
        "route": "12",
        "site": "test-site",
    }
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(positions)]
    assert all(gap >= 500 for gap in gaps), gaps
    fix = emitted[positions[1].ts]
    assert isinstance(fix, GpsFix)
    assert positions[1].fields == {
        "lat": fix.lat,
        "lon": fix.lon,
        "speed_mps": fix.speed_mps,
        "course_deg": fix.course_deg,
        "fix_quality": 1,
        "satellites": fix.satellites,
        "hdop": fix.hdop,
        "altitude_m": fix.altitude_m,
    }


async def test_polling_goes_on_through_a_broker_outage(tmp_path: Path, mosquitto: Mosquitto) -> None:
    aq = ModbusDeviceSimulator("vaisala_aqt530", unit=1)
    async with serve_tcp([aq]) as endpoint:
        config = agent_config(
            tmp_path, mosquitto.url, **modbus_devices(endpoint.port, ("aq-1", "vaisala_aqt530", 1))
        )
        agent = Agent(config)
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("first readings", lambda: len(readings_of(watcher, "aq-1")) >= 3)
            await save_sessions(mosquitto)
            mosquitto.kill()
            assert agent.journal is not None
            backlog = agent.journal.backlog()
            await asyncio.sleep(1.5)
            assert agent.journal.backlog() >= backlog + 5, "polling must go on while the link is down"
            mosquitto.start()
            await watcher.wait_for(
                "reconnect", lambda: agent.publisher is not None and agent.publisher.connected.is_set()
            )
            await asyncio.sleep(0.5)
            await watcher.wait_for(
                "the backlog", lambda: agent.journal is not None and agent.journal.backlog() < 3
            )
            await asyncio.sleep(0.5)

    timestamps = [r.ts for r in readings_of(watcher, "aq-1")]
    # What the kill lost of what the broker had acknowledged comes again, behind the live readings.
    assert len(timestamps) == len(set(timestamps)), "a reading delivered twice under two seqs"
    unique = sorted(set(timestamps))
    gaps = [b - a for a, b in itertools.pairwise(unique)]
    assert max(gaps) < 800, f"a hole in the data: {max(gaps)} ms between readings"
    assert unique[-1] - unique[0] > 2500


async def test_rs485_line_and_lines_that_cannot_open(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A missing USB adapter or a mistyped port URL costs its own devices only."""
    meter = ModbusDeviceSimulator("eastron_sdm120", unit=11)
    async with serve_serial_pty([meter]) as port:
        lines = [
            {"id": "rs485-1", "kind": "rtu", "port": port, "baudrate": 19200, "timeout": 0.3},
            {"id": "rs485-unplugged", "kind": "rtu", "port": "/dev/ttyCITYGW-missing", "timeout": 0.3},
            {"id": "rs485-typo", "kind": "rtu", "port": "bogus://adapter", "timeout": 0.3},
        ]
        devices = [
            {"id": "meter-11", "profile": "eastron_sdm120", "line": "rs485-1", "unit": 11, "poll_s": 0.2},
            {
                "id": "meter-gone",
                "profile": "eastron_sdm120",
                "line": "rs485-unplugged",
                "unit": 1,
                "poll_s": 0.2,
            },
            {"id": "meter-typo", "profile": "eastron_sdm120", "line": "rs485-typo", "unit": 1, "poll_s": 0.2},
        ]
        agent = Agent(agent_config(tmp_path, mosquitto.url, lines=lines, devices=devices))
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for("3 meter readings", lambda: len(readings_of(watcher, "meter-11")) >= 3)
            await watcher.wait_for("health", lambda: bool(watcher.on(wire.Channel.HEALTH)))
            health = wire.Health.model_validate_json(watcher.on(wire.Channel.HEALTH)[-1].payload)
    assert readings_of(watcher, "meter-11")[0].fields == meter.expected()
    assert health.devices["meter-gone"].state is wire.DeviceState.TIMEOUT
    assert health.devices["meter-typo"].state is wire.DeviceState.TIMEOUT
    assert "cannot be opened" in (health.devices["meter-typo"].error or "")


def gps_and_meter(gps_port: str, meter_port: int) -> dict[str, Any]:
    """A GPS line and a Modbus line with one meter: what one line does must not stop the other."""
    config = modbus_devices(meter_port, ("meter-1", "eastron_sdm120", 2))
    config["lines"].append({"id": "gps", "kind": "nmea", "port": gps_port, "timeout": 1.0})
    config["devices"].append(
        {"id": "bus-7-gps", "line": "gps", "poll_s": 0.5, "vehicle": {"id": "bus-7", "label": "Bus 7"}}
    )
    return config


async def test_80_kb_without_a_line_end_on_the_gps_line_is_a_line_fault(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """A floating RX line (NUL bytes, no newline) is dropped and counted; the agent polls on."""
    meter = ModbusDeviceSimulator("eastron_sdm120", unit=2)
    async with (
        BusGpsSimulator([(49.84, 24.03), (49.85, 24.04)], period=0.1) as gps,
        serve_tcp([meter]) as end,
    ):
        agent = Agent(agent_config(tmp_path, mosquitto.url, **gps_and_meter(gps.port, end.port)))
        async with watching(mosquitto.url) as watcher, running(agent) as task:
            await watcher.wait_for("a position", lambda: bool(readings_of(watcher, "bus-7-gps")))
            gps.period = 1.0  # a quiet second after its next fix, so nothing breaks the run of NULs
            last = gps.last_fix
            await watcher.wait_for("a fix", lambda: gps.last_fix is not last)
            for _ in range(20):  # 80 KB
                gps.inject(b"\x00" * 4096)
                await asyncio.sleep(0.01)
            gps.period = 0.1
            positions, meter_readings = (
                len(readings_of(watcher, "bus-7-gps")),
                len(readings_of(watcher, "meter-1")),
            )
            await watcher.wait_for(
                "positions and readings after the flood",
                lambda: (
                    len(readings_of(watcher, "bus-7-gps")) > positions + 2
                    and len(readings_of(watcher, "meter-1")) > meter_readings + 2
                ),
            )
            assert not task.done()
            record = agent.board.devices["bus-7-gps"]
            assert record.failures >= 1
            assert record.state is wire.DeviceState.OK
    assert any("without a line end" in r.getMessage() for r in caplog.records), "counted where it was read"
    assert not any("stopped on an unexpected error" in r.getMessage() for r in caplog.records)


async def test_a_line_that_fails_unexpectedly_is_restarted_alone(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A mistyped GPS port URL makes pyserial raise ValueError: that line stops, is reported and retried."""
    monkeypatch.setattr("edge.agent.LINE_RETRY_S", 0.2)
    meter = ModbusDeviceSimulator("eastron_sdm120", unit=2)
    async with serve_tcp([meter]) as end:
        agent = Agent(agent_config(tmp_path, mosquitto.url, **gps_and_meter("bogus://gps", end.port)))
        async with watching(mosquitto.url) as watcher, running(agent) as task:
            await watcher.wait_for("5 meter readings", lambda: len(readings_of(watcher, "meter-1")) >= 5)
            await watcher.wait_for("health", lambda: bool(watcher.on(wire.Channel.HEALTH)))
            health = wire.Health.model_validate_json(watcher.on(wire.Channel.HEALTH)[-1].payload)
            assert not task.done()
    gps_health = health.devices["bus-7-gps"]
    assert gps_health.state is wire.DeviceState.TIMEOUT
    assert "line gps stopped on an unexpected error" in (gps_health.error or "")
    assert "protocol 'bogus' not known" in (gps_health.error or "")
    restarts = [r for r in caplog.records if "line gps stopped" in r.getMessage()]
    assert len(restarts) >= 2, "restarted after its back-off"
    assert restarts[0].exc_info is not None, "logged with its traceback"
