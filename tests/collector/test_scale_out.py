"""Issue 5, fault tests 2 and 3: collectors as separate processes, SIGKILLed mid-stream.

Collectors run as ``python -m citygw.cli collector run`` against real Mosquitto and InfluxDB.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.collector.helpers import Agent, wait_until
from tests.services import InfluxDB, Mosquitto

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
_STOPPED = re.compile(r"stopped after (\d+) message\(s\), (\d+) point\(s\)")


class CollectorProcess:
    """One collector process; its log says when it subscribed and, on SIGTERM, what it stored."""

    def __init__(self, broker: Mosquitto, store_url: str, client_id: str, workdir: Path, group: str | None):
        self.command = [
            sys.executable,
            "-m",
            "citygw.cli",
            "collector",
            "run",
            "--broker",
            broker.url,
            "--store",
            store_url,
            "--client-id",
            client_id,
        ]
        if group is not None:
            self.command += ["--share-group", group]
        self.client_id = client_id
        self.log_path = workdir / f"{client_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=os.environ | {"PYTHONUNBUFFERED": "1"},
            )
        wait_until(
            lambda: self.log().count("subscribed to") >= self.runs,
            f"{self.client_id} to subscribe",
            timeout=15,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> tuple[int, int]:
        """Stop it cleanly; (messages, points) it acknowledged in its last run."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        found = _STOPPED.findall(self.log())
        assert found, f"{self.client_id} did not log its totals:\n{self.log()[-2000:]}"
        return int(found[-1][0]), int(found[-1][1])


@pytest.fixture
def database(influxdb: InfluxDB) -> Iterator[str]:
    name = f"scale_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(name)
    yield name
    influxdb.query(f'DROP DATABASE "{name}"')


def stored_keys(influxdb: InfluxDB, database: str) -> list[tuple[str, int]]:
    result = influxdb.query('SELECT "kwh" FROM "electricity" GROUP BY "device"', database)
    keys = []
    for series in result["results"][0].get("series", []):  # type: ignore[index]
        keys += [(series["tags"]["device"], int(row[0])) for row in series["values"]]
    return sorted(keys)


def stored_count(influxdb: InfluxDB, database: str) -> int:
    result = influxdb.query('SELECT count("kwh") FROM "electricity"', database)
    series = result["results"][0].get("series", [])  # type: ignore[index]
    return int(series[0]["values"][0][1]) if series else 0


def kill_mid_stream(
    collector: CollectorProcess, publisher: threading.Thread, influxdb: InfluxDB, database: str
) -> None:
    """SIGKILL ``collector`` mid-stream, once it has acknowledged something.

    A collector writes at most two batches at once (``store_writers``), so a third stored batch
    means a writer was done with one of the first two and its PUBACKs (or those of both) are out;
    killing earlier could leave everything to the restarted process.
    """
    wait_until(lambda: stored_count(influxdb, database) > 0, "the first stored batch", timeout=15)
    first = stored_count(influxdb, database)
    wait_until(lambda: stored_count(influxdb, database) > first, "a second stored batch", timeout=15)
    second = stored_count(influxdb, database)
    wait_until(lambda: stored_count(influxdb, database) > second, "a third stored batch", timeout=15)
    assert publisher.is_alive(), "the stream ended before the kill: publish more"
    collector.kill()


def publish_stream(agent: Agent, messages: int, per_message: int) -> threading.Thread:
    """Publish ``messages`` batches in the background, a little apart, as an agent would."""

    def run() -> None:
        for _ in range(messages):
            agent.publish(agent.batch(count=per_message))
            time.sleep(0.002)

    thread = threading.Thread(target=run, name="agent")
    thread.start()
    return thread


def expected_keys(agent: Agent, messages: int, per_message: int) -> list[tuple[str, int]]:
    return sorted((r.device, r.ts) for seq in range(messages) for r in agent.readings(seq, per_message))


def test_a_collector_sigkilled_mid_stream_and_restarted_loses_nothing(
    mosquitto: Mosquitto, agent: Agent, influxdb: InfluxDB, database: str, tmp_path: Path
) -> None:
    """Fault test 2. Unacknowledged messages stay in the persistent session and come back to the
    restarted process (same client id); what was stored but not acknowledged is written twice,
    which changes nothing (same identity)."""
    messages, per_message = 1500, 10
    store_url = f"influxdb://127.0.0.1:{influxdb.port}/{database}"
    collector = CollectorProcess(mosquitto, store_url, "solo", tmp_path, group=None)
    collector.start()
    publisher = publish_stream(agent, messages, per_message)
    try:
        kill_mid_stream(collector, publisher, influxdb, database)
        time.sleep(0.3)  # the agent keeps publishing while no collector runs
        collector.start()
        publisher.join(30)
        total = messages * per_message
        wait_until(lambda: stored_count(influxdb, database) >= total, "every reading", timeout=20)
        assert stored_keys(influxdb, database) == expected_keys(agent, messages, per_message)
        acknowledged, _ = collector.terminate()
        assert 0 < acknowledged < messages, "the first process must have acknowledged some"
    finally:
        publisher.join(30)
        if collector.proc is not None and collector.proc.poll() is None:
            collector.proc.kill()


def test_three_collectors_share_the_load_and_one_sigkilled_loses_nothing(
    mosquitto: Mosquitto, agent: Agent, influxdb: InfluxDB, database: str, tmp_path: Path
) -> None:
    """Fault test 3, on Mosquitto 2.0 (shared subscription ``$share/collectors/...``, MQTT v5).

    What Mosquitto 2.0.11 does, as this test checks: a shared subscription of a persistent
    session stays in the group while its client is away, so the killed collector's share of the
    stream — the messages in flight to it *and* the new ones Mosquitto keeps routing to it in
    turn — waits in its session until a process with the same client id reconnects; the others
    do not get them. So the killed collector is restarted with its client id (a supervisor such
    as systemd does that); before the restart a part is missing, after it everything is stored.
    """
    messages, per_message = 1200, 10
    store_url = f"influxdb://127.0.0.1:{influxdb.port}/{database}"
    collectors = [
        CollectorProcess(mosquitto, store_url, f"shared-{i}", tmp_path, group="collectors") for i in range(3)
    ]
    for collector in collectors:
        collector.start()
    publisher = publish_stream(agent, messages, per_message)
    victim, survivors = collectors[1], [collectors[0], collectors[2]]
    total = messages * per_message
    try:
        kill_mid_stream(victim, publisher, influxdb, database)
        killed_at = stored_count(influxdb, database)
        publisher.join(30)
        # The survivors drain their share; the victim's share waits for it at the broker.
        time.sleep(1.5)
        before_restart = stored_count(influxdb, database)
        assert before_restart < total
        missing_share = (total - before_restart) / (total - killed_at)
        assert 0.2 < missing_share < 0.5, f"about a third should wait for the victim, not {missing_share:.2f}"
        victim.start()
        wait_until(lambda: stored_count(influxdb, database) >= total, "every reading", timeout=20)
        assert stored_keys(influxdb, database) == expected_keys(agent, messages, per_message)
        counts = {c.client_id: c.terminate() for c in collectors}
        for survivor in survivors:
            acknowledged, points = counts[survivor.client_id]
            assert acknowledged > messages // 5, f"{survivor.client_id} took too little: {counts}"
            assert points == acknowledged * per_message
        assert counts[victim.client_id][0] > 0
    finally:
        publisher.join(30)
        for collector in collectors:
            if collector.proc is not None and collector.proc.poll() is None:
                collector.proc.kill()
