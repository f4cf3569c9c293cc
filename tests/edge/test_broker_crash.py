"""Fault test: the broker is SIGKILLed while the store is down, after it acknowledged every batch.

Mosquitto with the shipped deploy/mosquitto/mosquitto.conf (``autosave_interval 60``: it saves
its queues once a minute, so a kill loses what it acknowledged since), real InfluxDB 1.x stopped
and started again, the collector with a small in-flight window (most of the outage's batches wait
in the broker, as they do in a city), and the edge agent's journal and publisher. Every reading
must end up in InfluxDB exactly once: the agent keeps what the broker acknowledged until the
collector confirms it stored it, and sends it again after the crash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from citygw.contract import wire
from collector.service import Collector
from collector.store.influx_v1 import InfluxV1Store
from edge.agent import open_journal
from edge.publisher import Publisher
from tests.deploy.broker import PASSWORD, SecuredMosquitto
from tests.edge.conftest import AGENT, agent_config
from tests.edge.test_publisher import running
from tests.services import InfluxDB

pytestmark = pytest.mark.integration

COLLECTOR = "svc.collector-1"
WARM_UP = 50  # stored before the outage: the agent learns that its collector confirms
OUTAGE = 2000  # readings journaled and acknowledged by the broker while the store is down
PER_BATCH = 20
DATABASE = "city"


def readings(start: int, count: int, t0: int) -> list[wire.Reading]:
    return [
        wire.Reading(device="aq-1", measurement="air_quality", ts=t0 + n, fields={"n": n})
        for n in range(start, start + count)
    ]


def stored(influxdb: InfluxDB) -> tuple[int, int]:
    """(points, distinct n) of aq-1's readings in InfluxDB."""
    result = influxdb.query("SELECT count(n), count(distinct(n)) FROM air_quality", DATABASE)
    series = result["results"][0].get("series")  # type: ignore[index]
    if not series:
        return 0, 0
    _, points, distinct = series[0]["values"][0]
    return int(points), int(distinct)


async def until(
    what: str, check: Callable[[], bool], within: float, got: Callable[[], object] | None = None
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"; got {got()}" if got else ""))
        await asyncio.sleep(0.2)


@pytest.mark.timeout(240)
async def test_broker_sigkilled_while_the_store_is_down_loses_nothing_it_acknowledged(
    tmp_path: Path,
) -> None:
    broker = SecuredMosquitto(tmp_path / "mosquitto", [COLLECTOR, AGENT])
    influxdb = InfluxDB(tmp_path / "influxdb")
    await asyncio.to_thread(broker.start)
    await asyncio.to_thread(influxdb.start)
    store = InfluxV1Store(influxdb.url, DATABASE)
    store.ensure_database()

    def url(user: str) -> str:
        return f"mqtt://{user}:{quote(PASSWORD, safe='')}@127.0.0.1:{broker.port}"

    collector = Collector(
        url(COLLECTOR),
        store,
        client_id=COLLECTOR,
        inflight_window=10,
        batch_max_seconds=0.1,
        retry_initial_seconds=0.2,
        retry_max_seconds=1.0,
    )
    config = agent_config(
        tmp_path, url(AGENT), publish={"batch_max_readings": PER_BATCH, "interval": 0.1, "ack_timeout": 3}
    )
    journal = open_journal(config)
    publisher = Publisher(config, journal)
    t0 = time.time_ns() // 1_000_000 - 600_000  # ten minutes ago, a millisecond a reading
    try:
        collector.start()
        assert await asyncio.to_thread(collector.wait_subscribed, 15)
        async with running(publisher):
            journal.append(readings(0, WARM_UP, t0))
            await until("the warm-up stored", lambda: stored(influxdb) == (WARM_UP, WARM_UP), 30)
            await asyncio.sleep(1)  # the collector's ack reaches the agent

            await asyncio.to_thread(influxdb.stop)
            for start in range(WARM_UP, WARM_UP + OUTAGE, 100):
                journal.append(readings(start, 100, t0))
                await asyncio.sleep(0.01)
            await until("every batch acknowledged by the broker", lambda: journal.backlog() == 0, 60)
            await asyncio.sleep(4)  # past ack_timeout: still kept, a collector did confirm before

            await asyncio.to_thread(broker.kill)  # SIGKILL: no save since the broker started
            await asyncio.to_thread(broker.start)
            await asyncio.to_thread(influxdb.start)

            total = WARM_UP + OUTAGE
            await until(
                f"all {total} readings stored (points, distinct)",
                lambda: stored(influxdb)[1] >= total,
                60,
                got=lambda: stored(influxdb),
            )
            assert stored(influxdb) == (total, total), "each reading stored exactly once"
            await until("the journal emptied by the collector's acks", lambda: journal.size_bytes() == 0, 30)
    finally:
        await asyncio.to_thread(collector.stop)
        journal.close()
        store.close()
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(influxdb.stop)
