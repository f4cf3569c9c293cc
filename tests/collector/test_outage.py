"""Issue 5, fault test 1: InfluxDB stopped for two minutes under steady load, then started again.

Real Mosquitto, real InfluxDB 1.6 (stopped with SIGTERM, as an operator or a power cut's shutdown
would), the collector with its default batching and retries (backoff capped at 5 s here, 30 s by
default, so the test does not wait half a minute after the restart).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from collector.service import Collector
from collector.store.influx_v1 import InfluxV1Store
from tests.collector.helpers import Agent, expected_rows, started, stored, wait_until
from tests.services import InfluxDB, Mosquitto

pytestmark = pytest.mark.integration

OUTAGE_S = 120
PER_MESSAGE = 10
INTERVAL_S = 0.05  # 20 messages, 200 readings a second
WINDOW = 200


def unacknowledged(collector: Collector) -> int:
    found = re.search(r"^citygw_collector_unacked_messages (\d+)", collector.metrics_text(), re.M)
    assert found, "no unacked_messages gauge"
    return int(found[1])


@pytest.mark.timeout(OUTAGE_S + 180)
def test_influxdb_stopped_two_minutes_under_steady_load_loses_nothing(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path
) -> None:
    influxdb = InfluxDB(tmp_path / "influxdb")
    influxdb.start()
    store = InfluxV1Store(influxdb.url, "city")
    store.ensure_database()
    collector = Collector(mosquitto.url, store, retry_max_seconds=5, inflight_window=WINDOW)
    publishing = threading.Event()
    publishing.set()

    def steady_load() -> None:
        while publishing.is_set():
            agent.publish(agent.batch(count=PER_MESSAGE))
            time.sleep(INTERVAL_S)

    publisher = threading.Thread(target=steady_load, name="agent")
    try:
        with started(collector):
            publisher.start()
            wait_until(lambda: collector.stats.messages >= 50, "the load to flow", timeout=20)

            influxdb.stop()
            time.sleep(2)  # a write under way when it stopped may still have been acknowledged
            acknowledged = collector.stats.messages
            published_before = agent.seq
            most_held = 0
            end = time.monotonic() + OUTAGE_S
            while time.monotonic() < end:
                most_held = max(most_held, unacknowledged(collector))
                assert collector.stats.messages == acknowledged, "acknowledged while InfluxDB was down"
                time.sleep(1)
            assert collector.stats.store_retries >= 10
            assert agent.seq - published_before >= OUTAGE_S * 10, "the load did not keep up"
            assert most_held <= WINDOW, f"held {most_held} unacknowledged messages, window {WINDOW}"

            influxdb.start()
            time.sleep(5)
            publishing.clear()
            publisher.join(10)
            total = agent.seq
            wait_until(lambda: collector.stats.messages >= total, "every message stored", timeout=90)

            assert stored(store) == expected_rows(agent, range(total), PER_MESSAGE)
            result = influxdb.query('SELECT count("kwh") FROM "electricity"', "city")
            assert result["results"][0]["series"][0]["values"][0][1] == total * PER_MESSAGE  # type: ignore[index]
            assert collector.stats.dead_letters == 0
    finally:
        publishing.clear()
        if publisher.is_alive():
            publisher.join(10)
        store.close()
        influxdb.stop()
