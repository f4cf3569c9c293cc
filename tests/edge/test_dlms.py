"""DLMS/COSEM meters in the agent: the ``dlms`` line kind in the config, and simulated meters (Gurux'
server) on a pty read by the agent and published through real Mosquitto; the zero-loss judge (a
real collector writing SQLite) over a meter outage backfilled from its load profile while the
broker is away too, with a meter sending bad frames, one with a wrong password and a dead one."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from firmware_bridge.simulators.dlms import DlmsMeterSimulator, SimRegister, serve_dlms_pty, ticking
from tests.edge.conftest import agent_config, watching
from tests.edge.test_agent import readings_of, running
from tests.edge.test_faults import drained
from tests.services import Mosquitto

PASSWORD = "12345678"


def registers(energy: int) -> list[SimRegister]:
    return [
        SimRegister("1.0.1.8.0.255", energy, 0, 30, step=250),
        SimRegister("1.0.2.8.0.255", 1000, 0, 30),
        SimRegister("1.0.1.7.0.255", 2305, -1, 27, in_load_profile=False),
        SimRegister("1.0.32.7.0.255", 2301, -1, 35, in_load_profile=False),
        SimRegister("1.0.31.7.0.255", 105, -2, 33, in_load_profile=False),
    ]


def meters_config(port: str, poll_s: float = 0.2) -> dict[str, Any]:
    meter = {"profile": "generic_dlms_meter", "line": "dlms-1", "poll_s": poll_s}
    return {
        "lines": [{"id": "dlms-1", "kind": "dlms", "port": port, "timeout": 0.2}],
        "devices": [
            {"id": "house-17", **meter, "dlms": {"physical": 17, "client": 17, "password": PASSWORD}},
            {"id": "shop-18", **meter, "dlms": {"physical": 18}, "tags": {"district": "d1"}},
            {"id": "wrong-19", **meter, "dlms": {"physical": 19, "client": 17, "password": "00000000"}},
            {"id": "dead-20", **meter, "dlms": {"physical": 20}},
        ],
    }


def simulated(capture_period_s: float = 3600.0) -> list[DlmsMeterSimulator]:
    house = DlmsMeterSimulator(
        registers(5_000_000), physical=17, password=PASSWORD, capture_period_s=capture_period_s
    )
    shop = DlmsMeterSimulator(registers(7_000_000), physical=18, capture_period_s=capture_period_s)
    wrong = DlmsMeterSimulator(
        registers(1), physical=19, password=PASSWORD, capture_period_s=capture_period_s
    )
    dead = DlmsMeterSimulator(registers(1), physical=20, dead=True, capture_period_s=capture_period_s)
    return [house, shop, wrong, dead]


def problems(data: dict[str, Any]) -> str:
    base = {"agent_id": "pi-1", "site": "s", "broker": {"url": "mqtt://127.0.0.1:1883"}, "journal": "/tmp/j"}
    with pytest.raises(AgentConfigError) as caught:
        validate_agent_config({**base, **data}, Path("agent.yaml"))
    return str(caught.value)


def test_a_dlms_line_with_meters_is_accepted() -> None:
    config = agent_config(Path("/tmp"), "mqtt://127.0.0.1:1883", **meters_config("/dev/ttyUSB0"))
    line = config.line("dlms-1")
    assert (line.kind, getattr(line, "transport", None), line.timeout) == ("dlms", "hdlc", 0.2)
    assert config.devices[0].dlms is not None
    assert config.devices[0].dlms.meter.password == PASSWORD
    validate_agent_config(config.model_dump(mode="json"), Path("agent.yaml"))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda d: d["devices"][1]["dlms"].update(physical=17),
            "devices[1].dlms: meter address 1/17 (logical/physical) on line 'dlms-1' is already 'house-17'",
        ),
        (
            lambda d: d["devices"][0].update(unit=3),
            "devices[0].unit: line 'dlms-1' is a DLMS line; fix: remove unit",
        ),
        (
            lambda d: d["devices"][0].update(profile="eastron_sdm120"),
            "devices[0].profile: cannot load DLMS profile 'eastron_sdm120'",
        ),
        (
            lambda d: d["lines"][0].update(transport="wrapper"),
            "lines[0]: Value error, the wrapper runs on TCP: write port: socket://host:4059",
        ),
        (
            lambda d: d["devices"][0].update(heartbeat_s=60, report={"energy_import_kwh": 1}),
            "devices[0].report.energy_import_kwh: energy_import_kwh is a counter",
        ),
    ],
)
def test_dlms_config_mistakes_are_named_with_their_fix(change: Any, says: str) -> None:
    data = meters_config("/dev/ttyUSB0")
    change(data)
    assert says in problems(data)


def test_a_dlms_section_on_a_modbus_device_is_refused() -> None:
    data = {
        "lines": [{"id": "rtu", "kind": "rtu", "port": "/dev/ttyUSB0"}],
        "devices": [
            {"id": "m", "line": "rtu", "unit": 1, "dlms": {}, "profile": "eastron_sdm120", "poll_s": 1}
        ],
    }
    assert "devices[0].dlms: line 'rtu' is no DLMS line; fix: remove dlms" in problems(data)


def health_of(watcher: Any, device: str) -> wire.DeviceHealth | None:
    for message in reversed(watcher.on(wire.Channel.HEALTH)):
        health = wire.Health.model_validate_json(message.payload).devices.get(device)
        if health is not None:
            return health
    return None


@pytest.mark.integration
async def test_meters_on_a_pty_are_published_through_mosquitto(tmp_path: Path, mosquitto: Mosquitto) -> None:
    house, shop, wrong, dead = simulated()
    async with serve_dlms_pty([house, shop, wrong, dead]) as port:
        agent = Agent(agent_config(tmp_path, mosquitto.url, **meters_config(port)))
        async with watching(mosquitto.url) as watcher, running(agent):
            await watcher.wait_for(
                "both live meters",
                lambda: (
                    len(readings_of(watcher, "house-17")) >= 2 and len(readings_of(watcher, "shop-18")) >= 2
                ),
            )
            await watcher.wait_for(
                "the refused and the dead meter's health",
                lambda: all(
                    (h := health_of(watcher, d)) is not None and h.state is state
                    for d, state in (
                        ("wrong-19", wire.DeviceState.EXCEPTION),
                        ("dead-20", wire.DeviceState.TIMEOUT),
                    )
                ),
            )
    reading = readings_of(watcher, "house-17")[0]
    assert reading.measurement == "electricity"
    assert reading.fields == {
        "energy_import_kwh": 5000.0,
        "energy_export_kwh": 1.0,
        "power_import_w": 230.5,
        "voltage_l1_v": 230.1,
        "current_l1_a": 1.05,
    }
    assert readings_of(watcher, "shop-18")[0].tags == {"district": "d1", "site": "test-site"}
    assert not readings_of(watcher, "wrong-19")
    assert not readings_of(watcher, "dead-20")
    wrong_health, dead_health = health_of(watcher, "wrong-19"), health_of(watcher, "dead-20")
    assert wrong_health is not None
    assert dead_health is not None
    assert (wrong_health.error or "").startswith(
        "DLMS line dlms-1, meter 19/1 (client 17, LLS password): AARQ: wrong password"
    )
    assert dead_health.error == (
        "DLMS line dlms-1, meter 20/1 (client 16, no security): no answer to SNRM within 0.2 s"
    )


def stored(path: Path, device: str) -> list[tuple[int, dict[str, Any]]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT ts_ms, fields FROM points WHERE measurement = 'electricity' AND device = ? "
            "ORDER BY ts_ms",
            (device,),
        ).fetchall()
    return [(int(ts), json.loads(fields)) for ts, fields in rows]


@pytest.mark.integration
async def test_a_meter_outage_is_backfilled_from_its_load_profile_with_zero_loss(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    house, shop, wrong, dead = simulated(capture_period_s=0.25)
    store = tmp_path / "store.sqlite"
    collector = Collector(mosquitto.url, SqliteStore(store), client_id="judge", keepalive=5)
    collector.start()
    try:
        assert await asyncio.to_thread(collector.wait_subscribed, 15)
        async with serve_dlms_pty([house, shop, wrong, dead]) as port, ticking([house, shop]):
            agent = Agent(agent_config(tmp_path, mosquitto.url, **meters_config(port, poll_s=0.2)))
            async with running(agent):
                await asyncio.sleep(1.5)
                house.dead = True  # the meter's link fails; it goes on measuring and capturing rows
                shop.bad_frames = 3  # garbled answers: asked again, not lost
                mosquitto.stop()
                await asyncio.sleep(2.5)
                outage = [stamp for stamp, _ in house.rows]
                house.dead = False
                await asyncio.sleep(1.0)
                mosquitto.start()
                await asyncio.sleep(1.5)
                house.dead = shop.dead = True  # nothing more is read after the count
                await asyncio.sleep(0.5)
                reads = agent.board.record("house-17").reads
                await drained(agent)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while loop.time() < deadline:
                    if len(stored(store, "house-17")) >= reads:
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(collector.stop)
    rows = stored(store, "house-17")
    live = [(ts, f) for ts, f in rows if "power_import_w" in f]
    backfilled = [(ts, f) for ts, f in rows if "power_import_w" not in f]
    assert len(live) == reads, "every good poll is stored once"
    # The outage: after the last live reading before the meter went silent, up to the first after.
    gap = max(i for i in range(1, len(live)) if live[i][0] - live[i - 1][0] > 1500)
    since, until = live[gap - 1][0], live[gap][0]
    captured = {stamp: raw for stamp, raw in house.rows if since < stamp <= until}
    assert len(captured) >= 8, "the meter captured rows while it could not be read"
    assert set(outage) & set(captured), "rows captured while the link was down"
    expected = sorted(captured)
    got = [ts for ts, _ in backfilled]
    assert got == expected[: len(got)], "each row once, none outside the outage"
    assert len(got) >= 8, "the outage's rows were backfilled"
    # A row captured while the recovering poll was on the wire comes after its backfill's range:
    # the live reading right after it carries the counter on.
    assert all(until - ts < 600 for ts in expected[len(got) :]), (got, expected)
    for ts, fields in backfilled:
        assert fields["energy_import_kwh"] == captured[ts]["1.0.1.8.0.255"] / 1000
    shop_rows = stored(store, "shop-18")
    shop_live = [ts for ts, f in shop_rows if "power_import_w" in f]
    assert len(shop_live) == agent.board.record("shop-18").reads  # its garbled polls failed, none lost
    shop_rows_captured = {stamp for stamp, _ in shop.rows}
    assert {ts for ts, f in shop_rows if "power_import_w" not in f} <= shop_rows_captured
