"""Fault tests: real Mosquitto, simulated devices, a real collector writing to SQLite as the judge.

Each test counts the readings the simulators served (answered fast polls) and the distinct
readings in the store at the end. The devices are taken offline before counting, so nothing
is produced after the count; then the agent drains and the store must hold exactly what was
served (minus what the quota policy dropped and counted, in test 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig
from collector.service import Collector
from collector.store.sqlite import SqliteStore
from edge.agent import Agent
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_tcp
from tests.edge.conftest import agent_config, watching
from tests.edge.tcp_proxy import TcpProxy
from tests.edge.test_agent import running
from tests.edge.test_remote import desired, say, states
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

PROFILE = "vaisala_aqt530"
POLL_S = 0.1
READ_HOLDING = 3


class Field:
    """Simulated devices on one Modbus TCP endpoint, and the store the collector fills."""

    def __init__(self, tmp_path: Path, broker_url: str, count: int) -> None:
        self.sims = {
            f"aq-{n}": ModbusDeviceSimulator(PROFILE, unit=n + 1, animate=True) for n in range(count)
        }
        self.store_path = tmp_path / "store.sqlite"
        self.collector = Collector(broker_url, SqliteStore(self.store_path), client_id="judge", keepalive=5)
        self.port = 0
        self._served: dict[str, int] = {}

    def lines_and_devices(self, names: list[str] | None = None) -> dict[str, Any]:
        return {
            "lines": [
                {"id": "tcp-sim", "kind": "tcp", "host": "127.0.0.1", "port": self.port, "timeout": 0.3}
            ],
            "devices": [
                {"id": name, "profile": PROFILE, "line": "tcp-sim", "unit": sim.unit, "poll_s": POLL_S}
                for name, sim in self.sims.items()
                if names is None or name in names
            ],
        }

    def freeze(self) -> dict[str, int]:
        """Take every device offline and count the fast polls each answered (a fast poll starts at 0)."""
        for name, sim in self.sims.items():
            sim.offline = True  # checked in the same step that records the request: the count is exact
            self._served[name] = sum(
                1 for fc, address, _ in sim.requests if (fc, address) == (READ_HOLDING, 0)
            )
        return self._served

    def stored(self) -> dict[str, tuple[int, int]]:
        """Per device: (rows, distinct timestamps) in the store."""
        with contextlib.closing(sqlite3.connect(self.store_path)) as db:
            rows = db.execute(
                "SELECT device, count(*), count(DISTINCT ts_ms) FROM points "
                "WHERE measurement = 'air_quality' GROUP BY device"
            ).fetchall()
        return {device: (int(n), int(distinct)) for device, n, distinct in rows}

    async def judge(
        self, served: dict[str, int], dropped: int = 0, within: float = 60.0, in_flight: int = 0
    ) -> dict[str, int]:
        """Wait until the store holds every served reading (less ``dropped``); fail on a duplicate row.

        ``in_flight``: reads a SIGKILL may have cut between the simulator counting the request and
        the agent journaling the answer (at most one per device): never journaled, so never lost.
        """
        expected = sum(served.values()) - dropped
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            stored = self.stored()
            total = sum(distinct for _, distinct in stored.values())
            if total >= expected or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
        assert all(rows == distinct for rows, distinct in stored.values()), f"duplicate rows: {stored}"
        assert expected - in_flight <= total <= expected, (
            f"served {served} (dropped {dropped}), stored {stored}"
        )
        if in_flight:  # one cut read a device at most
            assert all(served[d] - stored.get(d, (0, 0))[1] <= 1 for d in served), (served, stored)
        return {device: distinct for device, (_, distinct) in stored.items()}


@contextlib.asynccontextmanager
async def field(tmp_path: Path, broker_url: str, count: int = 3) -> AsyncIterator[Field]:
    devices = Field(tmp_path, broker_url, count)
    async with serve_tcp(devices.sims.values()) as endpoint:
        devices.port = endpoint.port
        devices.collector.start()
        try:
            assert await asyncio.to_thread(devices.collector.wait_subscribed, 15)
            yield devices
        finally:
            await asyncio.to_thread(devices.collector.stop)


def fast_config(tmp_path: Path, url: str, devices: Field, **overrides: Any) -> AgentConfig:
    return agent_config(tmp_path, url, **devices.lines_and_devices(), **overrides)


async def drained(agent: Agent, within: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while agent.journal is None or agent.journal.backlog() > 0:
        assert loop.time() < deadline, f"journal not drained: {agent.journal and agent.journal.backlog()}"
        await asyncio.sleep(0.1)


async def test_broker_stopped_60_s_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with field(tmp_path, mosquitto.url) as devices:
        agent = Agent(fast_config(tmp_path, mosquitto.url, devices))
        async with running(agent):
            await asyncio.sleep(2)
            mosquitto.stop()
            await asyncio.sleep(60)
            assert agent.journal is not None
            assert agent.journal.backlog() > 1000, "polling goes on while the broker is down"
            mosquitto.start()
            await asyncio.sleep(2)
            served = devices.freeze()
            await drained(agent)
            await devices.judge(served)


@pytest.mark.timeout(240)
async def test_network_cut_and_half_open_for_2_minutes_lose_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    proxy = TcpProxy("127.0.0.1", mosquitto.port)
    async with field(tmp_path, mosquitto.url) as devices, proxy.running():
        agent = Agent(fast_config(tmp_path, proxy.url, devices))
        async with running(agent):
            await asyncio.sleep(2)
            assert agent.publisher is not None
            proxy.blackhole()  # half-open: nothing passes and nobody says so
            await asyncio.sleep(60)
            assert not agent.publisher.connected.is_set(), "the agent must notice a silent link"
            proxy.cut()  # then the link is down outright
            await asyncio.sleep(60)
            proxy.heal()
            await asyncio.wait_for(agent.publisher.connected.wait(), 30)
            await asyncio.sleep(1)
            served = devices.freeze()
            await drained(agent)
            await devices.judge(served)
            assert proxy.connections >= 3


def agent_process(config_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "CITYGW_BROKER_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "citygw.cli", "edge", "run", "--config", str(config_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_agent_sigkilled_mid_stream_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with field(tmp_path, mosquitto.url) as devices:
        config = fast_config(tmp_path, mosquitto.url, devices)
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
        async with watching(mosquitto.url) as watcher:
            agent = agent_process(path)
            try:
                await watcher.wait_for("telemetry", lambda: len(watcher.on(wire.Channel.TELEMETRY)) > 10)
                await asyncio.sleep(1.5)
                agent.send_signal(signal.SIGKILL)
                await asyncio.to_thread(agent.wait, 10)
                await asyncio.sleep(1)
                agent = agent_process(path)
                await asyncio.sleep(3)
                served = devices.freeze()
                # A read the kill cut after the simulator counted it was never journaled: not a loss.
                await devices.judge(served, within=30, in_flight=len(served))
            finally:
                agent.kill()
                agent.wait(10)


async def test_quota_reached_during_an_outage_drops_only_what_it_counts(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    async with field(tmp_path, mosquitto.url) as devices:
        journal = {"path": str(tmp_path / "journal.sqlite"), "quota_mb": 0.03, "on_full": "drop_oldest"}
        agent = Agent(fast_config(tmp_path, mosquitto.url, devices, journal=journal))
        async with watching(mosquitto.url) as watcher, running(agent):
            await asyncio.sleep(1)
            mosquitto.stop()
            await asyncio.sleep(8)  # 30 readings a second, ~350 bytes each: well past 30 kB
            assert agent.journal is not None
            assert agent.journal.counters.dropped > 0
            mosquitto.start()
            served = devices.freeze()
            await drained(agent)
            dropped = agent.journal.counters.dropped
            await devices.judge(served, dropped=dropped)

            def health_says_dropped() -> bool:
                reports = [
                    wire.Health.model_validate_json(m.payload) for m in watcher.on(wire.Channel.HEALTH)
                ]
                return any(h.journal.dropped == dropped for h in reports)

            await watcher.wait_for("health with the drop count", health_says_dropped)


async def test_config_pushed_while_the_broker_flaps(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with field(tmp_path, mosquitto.url, count=3) as devices:
        start = devices.lines_and_devices(["aq-0", "aq-1"])
        agent = Agent(agent_config(tmp_path, mosquitto.url, **start, remote={"grace_s": 5}))
        every = devices.lines_and_devices()
        async with watching(mosquitto.url) as watcher, running(agent):
            await asyncio.sleep(1)
            for flap in range(4):
                if flap == 1:
                    await say(
                        mosquitto.url,
                        wire.Channel.CONFIG,
                        desired(1, every["lines"], every["devices"]),
                        retain=True,
                    )
                await save_and_stop(mosquitto)
                await asyncio.sleep(1.5)
                mosquitto.start()
                await asyncio.sleep(1.5)
            await watcher.wait_for(
                "v1 applied", lambda: any(s.version == 1 for s in states(watcher)), within=20
            )
            assert [s.state for s in states(watcher) if s.version == 1][-1] is wire.ConfigOutcome.APPLIED
            assert agent._lines["tcp-sim"], "line running"
            served = devices.freeze()
            await drained(agent)
            stored = await devices.judge(served)
            assert stored["aq-2"] > 0, "the device added by v1 is polled"


async def save_and_stop(mosquitto: Mosquitto) -> None:
    """Stop the broker cleanly (it saves its sessions and the retained config)."""
    await asyncio.to_thread(mosquitto.stop)


async def test_lorawan_agent_sigkilled_mid_stream_loses_no_uplink(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """An uplink is acknowledged to the network server's broker only once journaled: one the agent
    was killed holding comes again after the restart, and the store absorbs a repeat."""
    from firmware_bridge.simulators.lorawan import NetworkServerSimulator

    ns_broker = Mosquitto(tmp_path / "ns-mosquitto")
    ns_broker.start()
    application, dev_eui = "17c82e96-be03-4f38-aef3-f83d48582d97", "70b3d57ed0000002"
    store_path = tmp_path / "store.sqlite"
    collector = Collector(mosquitto.url, SqliteStore(store_path), client_id="judge", keepalive=5)
    collector.start()
    line = {
        "id": "lora",
        "kind": "lorawan",
        "server": "chirpstack",
        "application": application,
        "broker": {"url": ns_broker.url, "keepalive": 5, "reconnect_min": 0.1, "reconnect_max": 0.5},
    }
    bay = {"id": "bay-7", "line": "lora", "profile": "nwave_nps405", "dev_eui": dev_eui, "poll_s": 60}
    # fsync full: each uplink's journaling takes a sync, so the agent lags the burst below and holds
    # uplinks it received but has not journaled when it is killed.
    journal = {"path": str(tmp_path / "journal.sqlite"), "fsync": "full"}
    config = agent_config(tmp_path, mosquitto.url, lines=[line], devices=[bay], journal=journal)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    ns = NetworkServerSimulator("chirpstack", application, ns_broker.url)
    total = 600

    def stored() -> tuple[int, list[int]]:
        with contextlib.closing(sqlite3.connect(store_path)) as db:
            rows = db.execute(
                "SELECT json_extract(fields, '$.f_cnt') FROM points WHERE measurement = 'parking'"
            )
            f_cnts = [int(f_cnt) for (f_cnt,) in rows]
        return len(f_cnts), sorted(set(f_cnts))

    agent = agent_process(path)
    try:
        assert await asyncio.to_thread(collector.wait_subscribed, 15)
        async with ns.running():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while True:  # until the agent's session is up (persistent from then on); repeats are one row
                await ns.uplink(dev_eui, {"occupied": True}, f_cnt=1, f_port=1)
                if stored()[0] or loop.time() > deadline:
                    break
                await asyncio.sleep(0.3)
            # A burst (a gateway back after an outage): the agent holds many received, unjournaled.
            start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
            for f_cnt in range(2, total + 1):
                at = start + dt.timedelta(seconds=f_cnt)  # the server's receive time: a reading's identity
                await ns.uplink(dev_eui, {"occupied": f_cnt % 2 == 0}, f_cnt=f_cnt, f_port=1, at=at)
            agent.send_signal(signal.SIGKILL)
            await asyncio.to_thread(agent.wait, 10)
            agent = agent_process(path)
        deadline = loop.time() + 60
        while True:
            rows, f_cnts = stored()
            if len(f_cnts) >= total or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
        assert f_cnts == list(range(1, total + 1))
        assert rows == total  # a repeat overwrote itself
    finally:
        agent.kill()
        agent.wait(10)
        await asyncio.to_thread(collector.stop)
        ns_broker.stop()


async def test_lorawan_uplinks_through_both_brokers_down_lose_nothing(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The LoRaWAN path: a network server publishing uplinks while CityGW's broker is down (the journal
    keeps them), then while its own broker restarts (the agent's persistent session keeps them).
    The store must hold every frame counter once."""
    from firmware_bridge.simulators.lorawan import NetworkServerSimulator

    ns_broker = Mosquitto(tmp_path / "ns-mosquitto")
    ns_broker.start()
    application, dev_eui = "17c82e96-be03-4f38-aef3-f83d48582d97", "70b3d57ed0000002"
    store_path = tmp_path / "store.sqlite"
    collector = Collector(mosquitto.url, SqliteStore(store_path), client_id="judge", keepalive=5)
    collector.start()
    line = {
        "id": "lora",
        "kind": "lorawan",
        "server": "chirpstack",
        "application": application,
        "broker": {"url": ns_broker.url, "keepalive": 5, "reconnect_min": 0.1, "reconnect_max": 0.5},
    }
    bay = {"id": "bay-7", "line": "lora", "profile": "nwave_nps405", "dev_eui": dev_eui, "poll_s": 60}
    agent = Agent(agent_config(tmp_path, mosquitto.url, lines=[line], devices=[bay]))
    ns = NetworkServerSimulator("chirpstack", application, ns_broker.url)
    sent = 0

    async def uplinks(count: int) -> None:
        nonlocal sent
        async with ns.running():
            for _ in range(count):
                sent += 1
                await ns.uplink(dev_eui, {"occupied": sent % 2 == 0}, f_cnt=sent, f_port=1)
                await asyncio.sleep(0.005)

    def stored() -> list[int]:
        with contextlib.closing(sqlite3.connect(store_path)) as db:
            rows = db.execute(
                "SELECT json_extract(fields, '$.f_cnt') FROM points WHERE measurement = 'parking'"
            )
            return sorted(int(f_cnt) for (f_cnt,) in rows)

    try:
        assert await asyncio.to_thread(collector.wait_subscribed, 15)
        async with running(agent):
            await asyncio.wait_for(agent.bridges["lora"].connected.wait(), 10)
            await uplinks(100)
            mosquitto.stop()  # CityGW's broker: the journal holds what comes
            await uplinks(100)
            ns_broker.stop()  # the network server's broker: the agent's session there holds it
            ns_broker.start()
            await uplinks(100)
            mosquitto.start()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while True:
                if len(stored()) >= sent or loop.time() > deadline:
                    break
                await asyncio.sleep(0.2)
        assert stored() == list(range(1, sent + 1))  # each once: no loss, no duplicate row
    finally:
        await asyncio.to_thread(collector.stop)
        ns_broker.stop()
