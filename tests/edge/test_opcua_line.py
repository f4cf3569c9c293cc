"""OPC UA lines end to end: a simulated SCADA server (asyncua), the agent, real Mosquitto, a collector.

The station simulator logs every value it sets with its source time; a reading's identity is its
time, so the store must hold each logged value once, at that time, after server restarts and
broker outages alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua.ua.status_codes import StatusCodes

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfigError
from citygw.contract.agent_config_check import validate_agent_config
from collector.service import Collector
from collector.store.sqlite import SqliteStore
from edge.agent import Agent
from firmware_bridge.simulators.opcua import OpcUaStationSimulator
from tests.edge.conftest import Watcher, agent_config, watching
from tests.edge.tcp_proxy import TcpProxy
from tests.edge.test_agent import readings_of, running
from tests.edge.test_faults import drained
from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.integration

PROFILE = "water_pump_station"
PROFILE_DATA = yaml.safe_load(Path(f"firmware_bridge/profiles/{PROFILE}.yaml").read_text(encoding="utf-8"))


def opcua_devices(sim: OpcUaStationSimulator, **line: Any) -> dict[str, Any]:
    return {
        "lines": [
            {
                "id": "scada",
                "kind": "opcua",
                "url": sim.url,
                "timeout": 2,
                "reconnect_min": 0.2,
                "reconnect_max": 1,
                **line,
            }
        ],
        "devices": [
            {
                "id": f"ps-{n}",
                "profile": PROFILE,
                "line": "scada",
                "node": sim.station_node(station),
                "poll_s": 0.1,
                "tags": {"district": "d1"},
            }
            for n, station in enumerate(sim.stations, 1)
        ],
    }


@contextlib.asynccontextmanager
async def scada(*stations: str) -> AsyncIterator[OpcUaStationSimulator]:
    sim = OpcUaStationSimulator(PROFILE, list(stations), port=free_port())
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def health_of(watcher: Watcher, device: str) -> list[wire.DeviceHealth]:
    reports = [wire.Health.model_validate_json(m.payload) for m in watcher.on(wire.Channel.HEALTH)]
    return [h.devices[device] for h in reports if device in h.devices]


@pytest.mark.parametrize("subscribe", [True, False], ids=["subscribed", "read"])
async def test_station_values_arrive_through_the_agent_and_mosquitto(
    tmp_path: Path, mosquitto: Mosquitto, subscribe: bool
) -> None:
    async with scada("PS1", "PS2") as sim, watching(mosquitto.url) as watcher:
        agent = Agent(agent_config(tmp_path, mosquitto.url, **opcua_devices(sim, subscribe=subscribe)))
        async with running(agent):
            await watcher.wait_for("first readings", lambda: bool(readings_of(watcher, "ps-2")))
            sent = await sim.set("PS1", "flow_rate", 240.5)
            await sim.set("PS2", "reservoir_level", 2.5)

            def flow_arrived() -> bool:
                return any(r.ts == sent.ts_ms for r in readings_of(watcher, "ps-1"))

            await watcher.wait_for("the new flow", flow_arrived)
            await watcher.wait_for(
                "ps-2's level",
                lambda: any(r.fields.get("reservoir_level") == 2.5 for r in readings_of(watcher, "ps-2")),
            )
    flow = next(r for r in readings_of(watcher, "ps-1") if r.ts == sent.ts_ms)
    assert flow.fields["flow_rate"] == 240.5
    assert flow.measurement == "water_pumping"
    assert flow.tags == {"district": "d1", "site": "test-site"}
    first = {name for r in readings_of(watcher, "ps-2") for name in r.fields}
    assert first == {
        "flow_rate",
        "outlet_pressure",
        "inlet_pressure",
        "reservoir_level",
        "pump1_running",
        "pump1_speed",
        "pump1_current",
        "pump2_running",
        "energy",
    }


def stored_energy(store: Path, device: str) -> list[tuple[int, float]]:
    with contextlib.closing(sqlite3.connect(store)) as db:
        rows = db.execute("SELECT ts_ms, fields FROM points WHERE device = ? ORDER BY ts_ms", (device,))
        return [(int(ts), json.loads(f)["energy"]) for ts, f in rows if "energy" in json.loads(f)]


@pytest.mark.timeout(180)
async def test_server_restart_and_broker_outage_lose_no_value(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The station's energy meter counts up every 50 ms. The SCADA server restarts twice (the agent
    reconnects and resubscribes) and the broker is down across one restart: the store ends with every
    value the server served, once, at its source time."""
    store = tmp_path / "store.sqlite"
    collector = Collector(mosquitto.url, SqliteStore(store), client_id="judge", keepalive=5)
    collector.start()
    try:
        assert await asyncio.to_thread(collector.wait_subscribed, 15)
        async with scada("PS1") as sim:
            agent = Agent(agent_config(tmp_path, mosquitto.url, **opcua_devices(sim)))
            energy = 152340.0

            async def count(ticks: int) -> None:
                nonlocal energy
                for _ in range(ticks):
                    energy += 1
                    await sim.set("PS1", "energy", energy)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # the last change is published (every 0.1 s) before a fault

            async with running(agent):
                await asyncio.sleep(3)  # connected and subscribed
                await count(40)
                await sim.restart(down_s=1.0)
                await asyncio.sleep(3)
                await count(40)
                mosquitto.stop()
                await count(20)
                await sim.restart(down_s=2.0)
                await asyncio.sleep(3)
                await count(40)
                mosquitto.start()
                await drained(agent)
                reads = agent.board.record("ps-1").reads
            served = [(s.ts_ms, s.value) for s in sim.set_values("PS1", "energy")]
        for _ in range(150):  # the collector writes what the agent drained
            if len(stored_energy(store, "ps-1")) > len(served):
                break
            await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(collector.stop)
    stored = stored_energy(store, "ps-1")
    assert reads > 0
    assert len(served) == 140
    # Every served value at its source time; besides them only the profile's starting value.
    assert [row for row in stored if row[1] != 152340.0] == served


async def test_bad_quality_goes_on_health_naming_the_status_code(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with scada("PS1") as sim, watching(mosquitto.url) as watcher:
        agent = Agent(agent_config(tmp_path, mosquitto.url, **opcua_devices(sim, subscribe=False)))
        async with running(agent):
            await watcher.wait_for("first readings", lambda: bool(readings_of(watcher, "ps-1")))
            await sim.set_status("PS1", "pump2_running", StatusCodes.BadDeviceFailure)

            def left_out() -> bool:
                return any((h.fields_left_out or {}).get("pump2_running") for h in health_of(watcher, "ps-1"))

            await watcher.wait_for("pump2_running left out", left_out)
            published = len(readings_of(watcher, "ps-1"))
            for spec in sim.profile.nodes:
                await sim.set_status("PS1", spec.field, StatusCodes.BadCommunicationError)

            def down() -> bool:
                return any(h.state is wire.DeviceState.EXCEPTION for h in health_of(watcher, "ps-1"))

            await watcher.wait_for("every node Bad", down)
            await asyncio.sleep(0.5)
            since = readings_of(watcher, "ps-1")[published + 5 :]
    health = next(h for h in health_of(watcher, "ps-1") if (h.fields_left_out or {}).get("pump2_running"))
    assert health.state is wire.DeviceState.OK
    assert (health.fields_left_out or {})["pump2_running"] == (
        "node path Pump2/Running of profile water_pump_station: BadDeviceFailure (0x808B0000)"
    )
    failed = next(h for h in health_of(watcher, "ps-1") if h.state is wire.DeviceState.EXCEPTION)
    assert failed.error is not None
    assert failed.error.startswith("every node is Bad: ")
    assert "BadCommunicationError (0x80050000)" in failed.error
    assert since == [], "no reading of Bad values"


async def test_a_wrong_node_in_the_profile_is_named_and_the_other_station_goes_on(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    data = copy.deepcopy(PROFILE_DATA)
    data["nodes"][1]["path"] = "Outlet/Presure"
    broken = tmp_path / "station_typo.yaml"
    broken.write_text(yaml.safe_dump(data))
    async with scada("PS1", "PS2") as sim, watching(mosquitto.url) as watcher:
        config = opcua_devices(sim)
        config["devices"][0]["profile"] = str(broken)
        agent = Agent(agent_config(tmp_path, mosquitto.url, **config))
        async with running(agent):
            await watcher.wait_for("ps-2's readings", lambda: bool(readings_of(watcher, "ps-2")))
            await watcher.wait_for("ps-1's health", lambda: any(h.error for h in health_of(watcher, "ps-1")))
    health = next(h for h in health_of(watcher, "ps-1") if h.error)
    assert health.state is wire.DeviceState.DECODE_ERROR
    assert health.error is not None
    assert "node path Outlet/Presure of profile water_pump_station (outlet_pressure)" in health.error
    assert "BadNoMatch" in health.error
    assert readings_of(watcher, "ps-1") == []


async def test_a_dead_server_is_one_log_line_and_health(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    sim = OpcUaStationSimulator(PROFILE, ["PS1"], port=port)  # never started
    caplog.set_level(logging.INFO, logger="edge.opcua_poller")
    async with watching(mosquitto.url) as watcher:
        agent = Agent(agent_config(tmp_path, mosquitto.url, **opcua_devices(sim)))
        async with running(agent):
            await watcher.wait_for("ps-1's health", lambda: any(h.error for h in health_of(watcher, "ps-1")))
            await asyncio.sleep(3)  # several reconnect attempts
    why = (
        f"connect to opc.tcp://127.0.0.1:{port}/citygw: not connected, connection refused: "
        f"nothing listens on 127.0.0.1:{port} (wrong port, or the server is off)"
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"line scada (devices ps-1): {why}; reconnecting with backoff"]
    health = next(h for h in health_of(watcher, "ps-1") if h.error)
    assert health.state is wire.DeviceState.TIMEOUT
    assert health.error == why


def config_problems(tmp_path: Path, change: dict[str, Any], line: dict[str, Any] | None = None) -> str:
    sim = OpcUaStationSimulator(PROFILE, ["PS1"], port=4840)
    data = opcua_devices(sim)
    data["devices"][0].update(change)
    data["lines"][0].update(line or {})
    raw = agent_config(tmp_path, "mqtt://127.0.0.1:1883").model_dump(mode="json", exclude_none=True)
    raw.update(data)
    with pytest.raises(AgentConfigError) as caught:
        validate_agent_config(raw, tmp_path / "agent.yaml")
    return str(caught.value)


@pytest.mark.parametrize(
    ("change", "line", "says"),
    [
        ({"unit": 1}, None, "devices[0].unit: line 'scada' is an OPC UA line; fix: remove unit"),
        ({"profile": "eastron_sdm120"}, None, "cannot load OPC UA profile 'eastron_sdm120': "),
        ({"node": "PS1"}, None, "devices[0].node: 'PS1' is no NodeId"),
        ({"address": 5}, None, "devices[0].address: line 'scada' is an OPC UA line; fix: remove address"),
        ({"heartbeat_s": 60}, None, "devices[0].heartbeat_s: an OPC UA device reports by exception"),
        ({}, {"security": "sign"}, "security sign needs certificate and private_key"),
        ({}, {"username": "scada"}, "username and password go together"),
        ({}, {"url": "http://scada:4840"}, "lines[0].url"),
    ],
)
def test_config_mistakes_on_an_opcua_line_are_named(
    tmp_path: Path, change: dict[str, Any], line: dict[str, Any] | None, says: str
) -> None:
    assert says in config_problems(tmp_path, change, line)


@pytest.mark.timeout(120)
async def test_a_half_open_link_to_the_server_is_noticed_and_healed(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The link to the SCADA server silently drops every byte: the agent notices through its keep-alive
    probe, says so on health, and once the link heals makes a new session and resubscribes."""
    async with scada("PS1") as sim, watching(mosquitto.url) as watcher:
        proxy = TcpProxy("127.0.0.1", sim.port)
        async with proxy.running():
            line = {"url": f"opc.tcp://127.0.0.1:{proxy.port}/citygw", "timeout": 1}
            agent = Agent(agent_config(tmp_path, mosquitto.url, **opcua_devices(sim, **line)))
            async with running(agent):
                before = await sim.set("PS1", "energy", 152341.0)
                await watcher.wait_for(
                    "the value before",
                    lambda: any(r.ts == before.ts_ms for r in readings_of(watcher, "ps-1")),
                )
                proxy.blackhole()

                def down() -> bool:
                    return any(h.state is wire.DeviceState.TIMEOUT for h in health_of(watcher, "ps-1"))

                await watcher.wait_for("the device down", down, within=30)
                proxy.heal()
                after = await sim.set("PS1", "energy", 152342.0)
                await watcher.wait_for(
                    "the value after",
                    lambda: any(r.ts == after.ts_ms for r in readings_of(watcher, "ps-1")),
                    within=30,
                )
    lost = next(h for h in health_of(watcher, "ps-1") if h.state is wire.DeviceState.TIMEOUT)
    assert lost.error is not None
    assert f"session with opc.tcp://127.0.0.1:{proxy.port}/citygw lost" in lost.error
    assert proxy.connections >= 2


def test_the_scada_example_config_loads() -> None:
    from citygw.contract.agent_config import OpcUaLine
    from edge.config_file import load_agent_config

    config = load_agent_config(Path(__file__).parents[2] / "edge" / "examples" / "water_scada.yaml")
    line = config.line("scada")
    assert isinstance(line, OpcUaLine)
    assert [d.node for d in config.devices_on("scada")] == [
        "nsu=urn:citygw:modelled:water-pump-station;s=PS1",
        "nsu=urn:citygw:modelled:water-pump-station;s=PS2",
    ]
