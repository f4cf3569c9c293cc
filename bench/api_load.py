"""API load benchmark: many residents on the public vehicle feed, utilities on telemetry, at once.

    .venv/bin/python bench/api_load.py [--feed-clients 200] [--telemetry-clients 50] [--seconds 30]

The API runs as its own process (``citygw api run``, uvicorn, one worker) on loopback over a SQLite
store seeded with the generated Lviv network's buses (today's 10:00 service shifted to the run's time,
fixes every 5 s) and an hour of 20 electricity meters. The load comes from this process (asyncio, one
keep-alive connection per client), so load generator and server share the machine's cores: the figures are a
floor for a server with a core of its own.

A client is a resident's app or a utility's system: it sends a request, reads the answer, waits
``--think-s`` (1 s: ten times more often than an app's usual 10-30 s) and asks again. Phases:

1. baseline: ``--feed-clients`` clients on ``GET /health`` (no store, no feed): the framework's floor.
2. load: ``--feed-clients`` on ``GET /v1/transit/vehicle-positions`` (protobuf, served from the cached
   snapshot) and ``--telemetry-clients`` with a utility key on ``GET /v1/telemetry/electricity`` (one
   meter's last hour, read from the store) at the same time, for ``--seconds``.
3. saturation: the feed clients with no think time for 5 s: the most feed requests a second.

Targets: feed p99 < 200 ms and no error (a status other than 200/304, or a failed connection). The
rate limit is off: every client comes from 127.0.0.1, where a real deployment's clients each have
their own address. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from api.registry import open_registry  # noqa: E402
from api.registry.keys import create_key  # noqa: E402
from api.security import Role  # noqa: E402
from api.transit.gtfs import load_gtfs  # noqa: E402
from collector.store.base import Point  # noqa: E402
from collector.store.sqlite import SqliteStore  # noqa: E402
from simulators.transit.buses import fixes_between, simulate_day  # noqa: E402
from simulators.transit.network import network_zip  # noqa: E402
from tests.services import free_port  # noqa: E402

METERS = 20
FEED = "/v1/transit/vehicle-positions"


@dataclass
class Tally:
    """Latencies (s) of the answers one kind of client got, and what went wrong."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def figures(self, seconds: float) -> dict[str, float]:
        ordered = sorted(self.latencies)
        count = len(ordered)
        p99 = ordered[min(count - 1, round(0.99 * (count - 1)))] if count else float("nan")
        return {
            "rps": round(count / seconds, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 1) if count else float("nan"),
            "p99_ms": round(1000 * p99, 1),
            "errors": sum(self.errors.values()),
        }


def seed(folder: Path, seconds: float) -> tuple[Path, Path, str, int]:
    """(store, GTFS zip, a utility key's token, vehicles in the feed) for a run of ``seconds``."""
    gtfs = folder / "lviv.zip"
    gtfs.write_bytes(network_zip())
    timetable = load_gtfs(gtfs.read_bytes())
    now_s = int(time.time())
    today = dt.datetime.fromtimestamp(now_s, timetable._zone).date()
    buses = simulate_day(timetable, today)
    # Today's 10:00 service shifted to now: a peak-hour feed whatever the hour of the run (positions
    # are the peak's; trips may not match the timetable at the real hour).
    ten = int(dt.datetime.combine(today, dt.time(10), tzinfo=timetable._zone).timestamp())
    shift_ms = (now_s - ten) * 1000
    fixes = [
        Point(p.measurement, p.tags, p.ts_ms + shift_ms, p.fields)
        for p in fixes_between(timetable, buses, ten - 90, ten + int(seconds) + 90)
    ]
    vehicles = len({p.tags["vehicle"] for p in fixes if now_s * 1000 - 90_000 <= p.ts_ms <= now_s * 1000})
    meters = [
        Point(
            "electricity",
            {"device": f"meter-{number}", "agent": "bench-substation", "site": "bench"},
            (now_s - 3600 + 10 * step) * 1000,
            {"active_power_w": 1000.0 + step, "import_energy_kwh": 100.0 + step / 360},
        )
        for number in range(METERS)
        for step in range(360)
    ]
    store_path = folder / "citygw.sqlite"
    store = SqliteStore(store_path)
    try:
        store.write(fixes + meters)
    finally:
        store.close()
    registry = open_registry(f"sqlite:///{folder}/registry.sqlite")
    try:
        with registry.session() as session:
            _, token = create_key(
                session,
                name="bench utility",
                role=Role.UTILITY,
                now_ms=now_s * 1000,
                actor="bench",
                actor_role="admin",
            )
            session.commit()
    finally:
        registry.close()
    return store_path, gtfs, token, vehicles


def start_api(folder: Path, store: Path, gtfs: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CITYGW_STORE_URL": f"sqlite:///{store}",
        "CITYGW_REGISTRY_URL": f"sqlite:///{folder}/registry.sqlite",
        "CITYGW_TRANSIT_GTFS_PATH": str(gtfs),
        "CITYGW_RATE_LIMIT_PER_S": "0",
        "CITYGW_ALERT_INTERVAL_S": "0",
    }
    citygw = Path(sys.executable).with_name("citygw")
    server = subprocess.Popen(
        [str(citygw), "api", "run", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "api.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            break
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the API did not start; see {folder / 'api.log'}:\n{(folder / 'api.log').read_text()}")


class Connection:
    """One keep-alive HTTP/1.1 connection for GETs: a few microseconds a request on the client side.

    A general client (httpx) spends milliseconds a request in Python and, with 250 connections in one
    pool, more than the server does: the load generator, not the API, would be measured.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
            if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = b""
                while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            else:
                body = await reader.readexactly(int(fields.get(b"content-length", b"0")))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            raise
        return status, body

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def client(
    url: str, path: str, tally: Tally, until: float, think_s: float, headers: dict[str, str]
) -> None:
    """One app on its own connection: ask, read the whole answer, wait, ask again, until ``until``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = Connection(host, int(port))
    try:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                status, _ = await connection.get(path, headers)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                tally.error(type(exc).__name__)
            else:
                if status in (200, 304):
                    tally.latencies.append(time.perf_counter() - started)
                else:
                    tally.error(str(status))
            if think_s:
                await asyncio.sleep(think_s)
    finally:
        connection.close()


async def phase(
    url: str, seconds: float, groups: list[tuple[int, str, float, dict[str, str]]]
) -> list[Tally]:
    """Run every group of (clients, path, think s, headers) together; a Tally per group."""
    tallies = [Tally() for _ in groups]
    until = time.monotonic() + seconds
    async with asyncio.TaskGroup() as tasks:
        for tally, (count, path, think_s, headers) in zip(tallies, groups, strict=True):
            for number in range(count):
                # Clients start spread over one think time, as apps opened at different moments do.
                delay = think_s * number / max(count, 1)
                tasks.create_task(_later(delay, client(url, path, tally, until, think_s, headers)))
    return tallies


async def _later(delay: float, work: Awaitable[None]) -> None:
    await asyncio.sleep(delay)
    await work


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--feed-clients", type=int, default=200, help="residents' apps on the feed (200)")
    parser.add_argument("--telemetry-clients", type=int, default=50, help="utilities on telemetry (50)")
    parser.add_argument("--seconds", type=float, default=30, help="length of the load phase (30)")
    parser.add_argument("--think-s", type=float, default=1.0, help="wait between a client's requests (1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citygw-api-load-") as name:
        folder = Path(name)
        store, gtfs, token, vehicles = seed(folder, args.seconds + 20)
        server, url = start_api(folder, store, gtfs)
        try:
            httpx.get(f"{url}{FEED}", timeout=30).raise_for_status()  # the first snapshot is built
            baseline_s = min(10.0, args.seconds)
            (health,) = asyncio.run(
                phase(url, baseline_s, [(args.feed_clients, "/health", args.think_s, {})])
            )
            auth = {"Authorization": f"Bearer {token}"}
            telemetry_path = "/v1/telemetry/electricity?device=meter-7&start=-1h"
            feed, telemetry = asyncio.run(
                phase(
                    url,
                    args.seconds,
                    [
                        (args.feed_clients, FEED, args.think_s, {}),
                        (args.telemetry_clients, telemetry_path, args.think_s, auth),
                    ],
                )
            )
            (saturated,) = asyncio.run(phase(url, 5, [(args.feed_clients, FEED, 0.0, {})]))
        finally:
            server.terminate()
            server.wait(timeout=20)
    h, f = health.figures(baseline_s), feed.figures(args.seconds)
    t, saturated_rps = telemetry.figures(args.seconds), saturated.figures(5)["rps"]
    for what, tally in (
        ("health", health),
        ("feed", feed),
        ("telemetry", telemetry),
        ("saturated", saturated),
    ):
        if tally.errors:
            print(f"{what} errors: {tally.errors}")
    print(
        f"{args.feed_clients} feed clients ({vehicles} vehicles): {f['rps']} req/s, p50 {f['p50_ms']} ms,"
        f" p99 {f['p99_ms']} ms, {f['errors']} errors (target p99 < 200 ms, no error)"
    )
    print(
        f"{args.telemetry_clients} telemetry clients at once: {t['rps']} req/s, p50 {t['p50_ms']} ms,"
        f" p99 {t['p99_ms']} ms, {t['errors']} errors"
    )
    print(f"baseline /health alone: p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms")
    print(f"feed with no think time: {saturated_rps} req/s")
    print(
        json.dumps(
            {
                "feed_rps": f["rps"],
                "feed_p50_ms": f["p50_ms"],
                "feed_p99_ms": f["p99_ms"],
                "feed_errors": f["errors"],
                "telemetry_rps": t["rps"],
                "telemetry_p50_ms": t["p50_ms"],
                "telemetry_p99_ms": t["p99_ms"],
                "telemetry_errors": t["errors"],
                "health_p99_ms": h["p99_ms"],
                "feed_saturated_rps": saturated_rps,
                "feed_p99_vs_health_p99": round(f["p99_ms"] / h["p99_ms"], 2) if h["p99_ms"] else None,
            }
        )
    )
    return 0 if f["errors"] == 0 and t["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
