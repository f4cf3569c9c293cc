"""Broker crash benchmark: what a kill -9 of Mosquitto loses of what it had acknowledged,
with the agent's end-to-end ack and without it (the baseline: the PUBACK is final).

    .venv/bin/python bench/broker_crash.py [--readings 20000] [--per-batch 10] [--payload 500]
                                           [--settings "autosave_interval 60" ...]

For each persistence setting (lines replacing ``autosave_interval 60`` of the shipped
deploy/mosquitto/mosquitto.conf) and each agent mode (``publish.end_to_end_ack`` false, then
true), on a fresh broker: the real collector (SQLite store) takes a warm-up of 10 readings from
the real agent (journal and publisher: it learns its collector confirms), then stops, as while
the store is down (its persistent session keeps what comes); the agent journals ``--readings``
readings of about ``--payload`` bytes and publishes them in batches of ``--per-batch`` until the
broker acknowledged every one; Mosquitto is killed with SIGKILL and started again; the collector
comes back and stores what reaches it. Lost: readings the broker had acknowledged that are not in
the store once nothing more arrives. Also the agent's publish rate (readings/s until the last
PUBACK), the batches it sent again, and how long after the restart the store had everything.
Prints one line per run and, last, one JSON object with every run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from citygw.contract import wire  # noqa: E402
from citygw.contract.agent_config import AgentConfig  # noqa: E402
from collector.service import Collector  # noqa: E402
from collector.store.sqlite import SqliteStore  # noqa: E402
from edge.agent import open_journal  # noqa: E402
from edge.publisher import Publisher  # noqa: E402
from tests.deploy.broker import PASSWORD, SecuredMosquitto  # noqa: E402

SHIPPED = "autosave_interval 60"
COLLECTOR, AGENT = "svc.collector-1", "depot-north-1"
WARM_UP = 10
QUIET_S = 5.0  # nothing new in the store for this long after the restart: nothing more will come


class Broker(SecuredMosquitto):
    """The shipped configuration with its autosave line replaced."""

    def __init__(self, workdir: Path, users: list[str], settings: str) -> None:
        super().__init__(workdir, users)
        self.settings = settings

    def production_config(self) -> str:
        text = super().production_config()
        assert f"\n{SHIPPED}\n" in text, f"{self.config_file} no longer has {SHIPPED!r}"
        return text.replace(f"\n{SHIPPED}\n", f"\n{self.settings}\n")


def readings(start: int, count: int, t0: int, size: int) -> list[wire.Reading]:
    """Readings of about ``size`` bytes of JSON each: string fields of up to 200 characters."""
    filler = {f"s{i}": "x" * 200 for i in range(max(0, size - 90) // 200)}
    if (rest := max(0, size - 90) % 200) > 10:
        filler["rest"] = "x" * (rest - 10)
    return [
        wire.Reading(device="meter-1", measurement="electricity", ts=t0 + n, fields={"n": n, **filler})
        for n in range(start, start + count)
    ]


def stored(path: Path) -> int:
    """Distinct readings in the store."""
    # Before the collector's first write there is no table yet.
    with contextlib.closing(sqlite3.connect(path)) as db, contextlib.suppress(sqlite3.OperationalError):
        (count,) = db.execute(
            "SELECT count(DISTINCT ts_ms) FROM points WHERE measurement = 'electricity'"
        ).fetchone()
        return int(count)
    return 0


async def wait(what: str, check: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(0.05)


async def measure(settings: str, hold: bool, total: int, per_batch: int, payload: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="citygw-crash-") as name:
        folder = Path(name)
        broker = Broker(folder / "mosquitto", [COLLECTOR, AGENT], settings)
        await asyncio.to_thread(broker.start)

        def url(user: str) -> str:
            return f"mqtt://{user}:{quote(PASSWORD, safe='')}@127.0.0.1:{broker.port}"

        store_path = folder / "store.sqlite"
        store = SqliteStore(store_path)

        def collector() -> Collector:
            return Collector(url(COLLECTOR), store, client_id=COLLECTOR, batch_max_seconds=0.1)

        config = AgentConfig.model_validate(
            {
                "agent_id": AGENT,
                "site": "bench",
                "broker": {"url": url(AGENT), "reconnect_min": 0.2, "reconnect_max": 1},
                "journal": {"path": str(folder / "journal.sqlite")},
                "publish": {
                    "batch_max_readings": per_batch,
                    "interval": 0.05,
                    "inflight": 8,
                    "backlog_rate": None,
                    "end_to_end_ack": hold,
                },
            }
        )
        journal = open_journal(config)
        publisher = Publisher(config, journal)
        agent = asyncio.create_task(publisher.run())
        t0 = time.time_ns() // 1_000_000 - 3_600_000
        first = collector()
        try:
            first.start()
            journal.append(readings(0, WARM_UP, t0, payload))
            await wait("the warm-up stored", lambda: stored(store_path) == WARM_UP, 30)
            await wait("its confirmation", lambda: not hold or journal.collector_acks_seen, 10)
            await asyncio.to_thread(first.stop)  # the store is down: the collector's session holds the rest

            started = time.monotonic()
            for start in range(WARM_UP, WARM_UP + total, 1000):
                journal.append(readings(start, min(1000, WARM_UP + total - start), t0, payload))
                await asyncio.sleep(0)
            await wait("every PUBACK", lambda: journal.backlog() == 0, 600)
            elapsed = time.monotonic() - started

            await asyncio.to_thread(broker.kill)
            await asyncio.to_thread(broker.start)
            restarted = time.monotonic()
            second = collector()
            second.start()
            try:
                last, quiet_since = -1, time.monotonic()
                while time.monotonic() - quiet_since < QUIET_S:
                    now = stored(store_path)
                    if now != last:
                        last, quiet_since = now, time.monotonic()
                    if now == WARM_UP + total:
                        break
                    await asyncio.sleep(0.1)
                recovered_s = time.monotonic() - restarted
            finally:
                await asyncio.to_thread(second.stop)
            delivered = stored(store_path) - WARM_UP
            return {
                "settings": settings,
                "end_to_end_ack": hold,
                "acknowledged": total,
                "stored_after_crash": delivered,
                "lost": total - delivered,
                "publish_rate_per_s": round(total / elapsed),
                "batches_resent": publisher.counters.batches_resent,
                "all_stored_after_s": round(recovered_s, 1) if delivered == total else None,
            }
        finally:
            agent.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await agent
            journal.close()
            store.close()
            await asyncio.to_thread(broker.stop)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--readings", type=int, default=20000)
    parser.add_argument("--per-batch", type=int, default=10, help="readings per telemetry message")
    parser.add_argument("--payload", type=int, default=500, help="bytes per reading (about)")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=[SHIPPED],
        help="lines replacing the shipped autosave_interval 60 (\\n between lines), one run each",
    )
    args = parser.parse_args()
    results = []
    for settings in args.settings:
        for hold in (False, True):
            result = asyncio.run(
                measure(settings.replace("\\n", "\n"), hold, args.readings, args.per_batch, args.payload)
            )
            results.append(result)
            print(
                f"{result['settings']!r}, end_to_end_ack {hold}: {result['acknowledged']} acknowledged, "
                f"{result['lost']} lost after kill -9, {result['publish_rate_per_s']} readings/s, "
                f"{result['batches_resent']} batches sent again",
                flush=True,
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
