"""M-Bus meters in the agent: the ``mbus`` line kind in the config, and simulated meters on a pty read by
the agent and published through real Mosquitto; the zero-loss judge (a real collector writing SQLite)
over a broker outage while one meter garbles telegrams and another is dead."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfigError
from citygw.contract.agent_config_check import validate_agent_config
from collector.service import Collector
from collector.store.sqlite import SqliteStore
from edge.agent import Agent
from firmware_bridge.mbus_frames import decode, profile_fields
from firmware_bridge.profile import load_mbus_profile
from firmware_bridge.simulators.mbus import MbusMeterSimulator, load_capture, serve_mbus_pty
from tests.edge.conftest import agent_config, watching
from tests.edge.test_agent import readings_of, running
from tests.edge.test_faults import drained
from tests.services import Mosquitto

CAPTURES = Path(__file__).parents[1] / "firmware_bridge" / "captures" / "mbus"
KAMSTRUP = CAPTURES / "kamstrup_multical_601.hex"
CYBLE = CAPTURES / "itron_cyble_m-bus_v1.4_water.hex"
EMU = CAPTURES / "EMU_EMU-Professional-375-M-Bus.hex"
CYBLE_SECONDARY = "1200007177041407"


def recorded(capture: Path, profile: str) -> dict[str, Any]:
    fields, missing = profile_fields(decode(load_capture(capture)).records, load_mbus_profile(profile))
    assert missing == {}
    return dict(fields)


def meters_config(port: str, poll_s: float = 0.2) -> dict[str, Any]:
    return {
        "lines": [{"id": "mbus-1", "kind": "mbus", "port": port, "timeout": 0.2}],
        "devices": [
            {
                "id": "heat-5",
                "line": "mbus-1",
                "address": 5,
                "profile": "kamstrup_multical_601",
                "poll_s": poll_s,
            },
            {
                "id": "water-7",
                "line": "mbus-1",
                "address": CYBLE_SECONDARY.lower(),
                "profile": "itron_cyble_water",
                "poll_s": poll_s,
                "tags": {"district": "d1"},
            },
            {
                "id": "power-9",
                "line": "mbus-1",
                "address": 9,
                "profile": "emu_professional_375",
                "poll_s": poll_s,
            },
        ],
    }


def problems(data: dict[str, Any]) -> str:
    base = {
        "agent_id": "pi-1",
        "site": "s",
        "broker": {"url": "mqtt://127.0.0.1:1883"},
        "journal": "/tmp/j.sqlite",
        **data,
    }
    with pytest.raises(AgentConfigError) as caught:
        validate_agent_config(base, Path("agent.yaml"))
    return str(caught.value)


def test_an_mbus_line_with_primary_and_secondary_addresses_is_accepted() -> None:
    config = agent_config(Path("/tmp"), "mqtt://127.0.0.1:1883", **meters_config("socket://10.0.0.5:10001"))
    line = config.line("mbus-1")
    assert line.kind == "mbus"
    assert line.baudrate == 2400
    assert [d.address for d in config.devices] == [5, CYBLE_SECONDARY, 9]  # normalised upper-case
    validate_agent_config(config.model_dump(mode="json"), Path("agent.yaml"))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda d: d["devices"][0].update(address=251),
            "devices[0].address: Value error, primary address 251 is outside 0..250",
        ),
        (
            lambda d: d["devices"][0].update(address="12ab"),
            "devices[0].address: Value error, secondary address '12ab': write 16 hex digits",
        ),
        (
            lambda d: d["devices"][0].pop("address"),
            "devices[0].address: line 'mbus-1' is an M-Bus line; fix: add address",
        ),
        (
            lambda d: d["devices"][0].update(unit=3),
            "devices[0].unit: line 'mbus-1' is an M-Bus line; fix: remove unit; use address",
        ),
        (
            lambda d: d["devices"][2].update(address=5),
            "devices[2].address: address 5 on line 'mbus-1' is already 'heat-5'",
        ),
        (
            lambda d: d["devices"][0].update(profile="eastron_sdm120"),
            "devices[0].profile: cannot load M-Bus profile 'eastron_sdm120'",
        ),
        (
            lambda d: d["lines"][0].update(baudrate=2401),
            "lines[0].baudrate: Input should be 300, 600, 1200, 2400",
        ),
    ],
)
def test_mbus_config_mistakes_are_named_with_their_fix(change: Any, says: str) -> None:
    data = meters_config("/dev/ttyUSB0")
    change(data)
    assert says in problems(data)


def test_an_address_on_a_modbus_device_is_refused() -> None:
    data = {
        "lines": [{"id": "rtu", "kind": "rtu", "port": "/dev/ttyUSB0"}],
        "devices": [
            {"id": "m", "line": "rtu", "unit": 1, "address": 5, "profile": "eastron_sdm120", "poll_s": 1}
        ],
    }
    assert "devices[0].address: line 'rtu' is no M-Bus line; fix: remove address" in problems(data)


def test_a_deadband_on_an_mbus_field_is_checked_against_its_profile() -> None:
    data = meters_config("/dev/ttyUSB0")
    data["devices"][0].update(heartbeat_s=60, report={"energy_kwh": 5})
    assert "devices[0].report.energy_kwh: energy_kwh is a counter" in problems(data)
    data["devices"][0].update(report={"flow_temperature": 1.0})
    validate_agent_config(
        {"agent_id": "a", "site": "s", "broker": {"url": "mqtt://h:1"}, "journal": "/tmp/j", **data},
        Path("x"),
    )


@pytest.mark.integration
async def test_meters_on_a_pty_are_published_through_mosquitto(tmp_path: Path, mosquitto: Mosquitto) -> None:
    heat = MbusMeterSimulator.from_capture(KAMSTRUP, primary=5, split_after=10)  # two telegrams a readout
    water = MbusMeterSimulator.from_capture(CYBLE, primary=0)
    power = MbusMeterSimulator.from_capture(EMU, primary=9)
    power.dead = True
    async with serve_mbus_pty([heat, water, power]) as port:
        agent = Agent(agent_config(tmp_path, mosquitto.url, **meters_config(port)))
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for(
                "both live meters",
                lambda: (
                    len(readings_of(watcher, "heat-5")) >= 2 and len(readings_of(watcher, "water-7")) >= 2
                ),
            )
            await watcher.wait_for(
                "the dead meter's health",
                lambda: any(
                    wire.Health.model_validate_json(m.payload).devices.get("power-9", None) is not None
                    and wire.Health.model_validate_json(m.payload).devices["power-9"].state
                    is wire.DeviceState.TIMEOUT
                    for m in watcher.on(wire.Channel.HEALTH)
                ),
            )
            health = wire.Health.model_validate_json(watcher.on(wire.Channel.HEALTH)[-1].payload)
    heat_reading = readings_of(watcher, "heat-5")[0]
    assert heat_reading.measurement == "heat"
    assert heat_reading.fields == recorded(KAMSTRUP, "kamstrup_multical_601")
    water_reading = readings_of(watcher, "water-7")[0]
    assert water_reading.fields == recorded(CYBLE, "itron_cyble_water")
    assert water_reading.tags == {"district": "d1", "site": "test-site"}
    assert not readings_of(watcher, "power-9")
    assert health.devices["power-9"].error == (
        "M-Bus line mbus-1, primary address 9: no answer to SND_NKE within 0.2 s"
    )
    assert health.devices["heat-5"].state is wire.DeviceState.OK


def stored(path: Path) -> dict[str, tuple[int, int]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT device, count(*), count(DISTINCT ts_ms) FROM points "
            "WHERE measurement IN ('heat', 'water', 'electricity') GROUP BY device"
        ).fetchall()
    return {device: (int(n), int(distinct)) for device, n, distinct in rows}


@pytest.mark.integration
async def test_broker_outage_with_a_garbling_and_a_dead_meter_loses_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    heat = MbusMeterSimulator.from_capture(KAMSTRUP, primary=5, split_after=10)
    water = MbusMeterSimulator.from_capture(CYBLE, primary=0)
    power = MbusMeterSimulator.from_capture(EMU, primary=9)
    power.dead = True
    store = tmp_path / "store.sqlite"
    collector = Collector(mosquitto.url, SqliteStore(store), client_id="judge", keepalive=5)
    collector.start()
    try:
        assert await asyncio.to_thread(collector.wait_subscribed, 15)
        async with serve_mbus_pty([heat, water, power]) as port:
            agent = Agent(agent_config(tmp_path, mosquitto.url, **meters_config(port, poll_s=0.1)))
            async with running(agent):
                await asyncio.sleep(1.5)
                heat.bad_checksums = 3  # garbled telegrams while the broker is away: asked again, not lost
                mosquitto.stop()
                await asyncio.sleep(4)
                assert agent.journal is not None
                assert agent.journal.backlog() > 10, "the meters are read while the broker is down"
                water.truncated = 2
                mosquitto.start()
                await asyncio.sleep(1.5)
                for meter in (heat, water):
                    meter.dead = True  # no readout is served after the count
                served = {"heat-5": heat.readouts, "water-7": water.readouts}
                await drained(agent)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while loop.time() < deadline:
                    if sum(d for _, d in stored(store).values()) >= sum(served.values()):
                        break
                    await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(collector.stop)
    result = stored(store)
    assert all(rows == distinct for rows, distinct in result.values()), f"duplicate rows: {result}"
    assert {device: distinct for device, (_, distinct) in result.items()} == served
    assert served["heat-5"] > 20
