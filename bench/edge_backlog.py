"""Edge backlog benchmark: draining a journal after an outage, live freshness, and the agent's footprint.

    .venv/bin/python bench/edge_backlog.py [--readings 200000] [--rounds 5] [--devices 50] [--seconds 20]

Starts its own Mosquitto (tests/services.py) in a temporary folder and measures, in one run:

1. drain: ``--readings`` readings journaled during an "outage" are drained by the agent's
   Publisher (batches of 500, PUBACK-gated, live first, backlog rate uncapped) — against a
   plain loop publishing the very same batch payloads with QoS 1, each awaited, no journal
   (aiomqtt, as the agent). The two alternate for ``--rounds`` rounds (each drain on a fresh
   copy of the same journal); ``drain_ratio`` = median drain rate / median plain rate, so
   that a burst of other work on the machine does not decide it (target ``TARGET_DRAIN_RATIO``).
   The CPU time this process spends per reading in each (``*_cpu_us_per_reading``, medians)
   does not depend on what else the machine runs: where cores are shared, the ratio follows it.
   Also printed: paho firing them all at once (window 20) as the broker's ceiling,
   ``drain_vs_ceiling``.
2. live freshness: during the drains a bus position is journaled every 0.05 s; a subscriber
   records how old the newest position is when it arrives (``live_age_p99_s``).
3. footprint: ``citygw edge run`` as its own process polling ``--devices`` simulated
   Modbus TCP devices every second (10 per line); RSS and CPU share of one core over
   ``--seconds`` after a warm-up, from /proc.

The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiomqtt  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.client import Client, MQTTMessage  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from citygw.contract import wire  # noqa: E402
from citygw.contract.agent_config import AgentConfig  # noqa: E402
from edge.journal import Journal  # noqa: E402
from edge.publisher import Publisher  # noqa: E402
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_tcp  # noqa: E402
from tests.services import Mosquitto  # noqa: E402

AGENT = "bench-depot"
BATCH = 500
LIVE_EVERY_S = 0.2
TARGET_DRAIN_RATIO = 0.7


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def meter_reading(n: int) -> wire.Reading:
    return wire.Reading(
        device=f"meter-{n % 40}",
        measurement="electricity",
        ts=1_760_000_000_000 + n,
        fields={"voltage_l1": 229.7, "current_l1": 12.25, "total_power": 8450.5, "frequency": 49.98},
        tags={"site": "depot-north", "district": "shevchenkivskyi"},
    )


def bus_position(ts: int) -> wire.Reading:
    return wire.Reading(
        device="bus-4711-gps",
        measurement="vehicle_position",
        ts=ts,
        fields={"lat": 49.8419, "lon": 24.0316, "speed_mps": 8.5},
        tags={"site": "depot-north", "vehicle": "bus-4711", "route": "12"},
    )


def config(folder: Path, url: str, **overrides: Any) -> AgentConfig:
    data: dict[str, Any] = {
        "agent_id": AGENT,
        "site": "depot-north",
        "broker": {"url": url, "reconnect_min": 0.1},
        "journal": str(folder / "journal.sqlite"),
        "publish": {"batch_max_readings": BATCH, "backlog_rate": None},
    }
    data.update(overrides)
    return AgentConfig.model_validate(data)


def _count(port: int, readings: Any, meters: Any, ages: Any, ready: Any) -> None:
    """The subscriber's process: counts readings on the agent's telemetry, sends each bus position's age."""

    def on_message(client: Client, userdata: object, message: MQTTMessage) -> None:
        payload = message.payload
        if b"bus-4711-gps" in payload:
            batch = wire.TelemetryBatch.model_validate_json(payload)
            newest = max(r.ts for r in batch.readings if r.device == "bus-4711-gps")
            ages.put((now_ms() - newest) / 1000)
        meters.value += payload.count(b'"electricity"')
        readings.value += payload.count(b'"device":')

    client = Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
    client.on_message = on_message
    client.on_subscribe = lambda *_: ready.set()
    client.connect("127.0.0.1", port)
    client.subscribe(wire.topic(AGENT, wire.Channel.TELEMETRY), qos=1)
    client.loop_forever()


class Subscriber:
    """Counts readings arriving on the agent's telemetry; notes the age of each bus position.

    In a process of its own: in the benchmark's process its paho thread would take the GIL
    from the publisher being measured (the collector, in life, is on another machine).
    """

    def __init__(self, broker: Mosquitto) -> None:
        context = multiprocessing.get_context("spawn")
        self._readings, self._meters = context.Value("q", 0, lock=False), context.Value("q", 0, lock=False)
        self._ages: Any = context.Queue()
        ready = context.Event()
        self._process = context.Process(
            target=_count, args=(broker.port, self._readings, self._meters, self._ages, ready), daemon=True
        )
        self._process.start()
        if not ready.wait(10):
            raise RuntimeError("the benchmark's subscriber did not subscribe within 10 s")

    @property
    def readings(self) -> int:
        return int(self._readings.value)

    @property
    def meter_readings(self) -> int:
        return int(self._meters.value)

    def close(self) -> list[float]:
        """Stop the subscriber; the ages of the bus positions it saw."""
        self._process.terminate()
        self._process.join()
        ages = []
        with contextlib.suppress(queue.Empty):
            while True:
                ages.append(self._ages.get(timeout=0.2))
        return ages


def fill_journal(path: Path, readings: int) -> list[bytes]:
    """Journal ``readings`` meter readings; return the batch payloads they form (for the plain loop)."""
    journal = Journal(path, AGENT)
    for start in range(0, readings, 5000):
        journal.append([meter_reading(n) for n in range(start, min(readings, start + 5000))])
    journal.close()
    copy = path.with_name("copy.sqlite")
    copy.write_bytes(path.read_bytes())
    twin = Journal(copy, AGENT)
    payloads = []
    while (batch := twin.form_batch(BATCH, live=False)) is not None:
        payloads.append(batch.payload)
        twin.ack(batch.seq)
    twin.close()
    return payloads


def copy_to_disk(source: Path, target: Path) -> None:
    """Copy the journal and write it out: the journal of a real outage is not 45 MB of dirty pages
    that the first fdatasync of the drain would have to flush (50 ms here)."""
    shutil.copyfile(source, target)
    with target.open("rb+") as copy:
        os.fsync(copy.fileno())


async def drain(folder: Path, broker: Mosquitto, readings: int) -> tuple[float, float, list[float]]:
    """Seconds to drain the journal through the Publisher, this process's CPU seconds meanwhile,
    ages of the live positions meanwhile."""
    cfg = config(folder, broker.url)
    journal = Journal(cfg.journal.path, AGENT)
    publisher = Publisher(cfg, journal)
    subscriber = Subscriber(broker)
    total = readings
    task = asyncio.create_task(publisher.run())
    await publisher.connected.wait()
    started, cpu = time.perf_counter(), time.process_time()
    live = 0

    async def bus_on_the_road() -> None:
        nonlocal live
        while True:
            journal.append([bus_position(now_ms())])
            live += 1
            await asyncio.sleep(LIVE_EVERY_S)

    road = asyncio.create_task(bus_on_the_road())
    while subscriber.meter_readings < readings:  # noqa: ASYNC110 - counted by another process
        await asyncio.sleep(0.005)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    road.cancel()
    total += live
    while subscriber.readings < total:  # noqa: ASYNC110 - counted by another process
        await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    journal.close()
    return elapsed, cpu, subscriber.close()


async def plain_loop(broker: Mosquitto, payloads: list[bytes], readings: int) -> tuple[float, float]:
    """Seconds until a subscriber has every reading of a plain QoS 1 publish loop (aiomqtt, no journal),
    and this process's CPU seconds meanwhile."""
    topic = wire.topic(AGENT, wire.Channel.TELEMETRY)
    subscriber = Subscriber(broker)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-plain-loop") as client:
        started, cpu = time.perf_counter(), time.process_time()
        for payload in payloads:
            await client.publish(topic, payload, qos=1)
        while subscriber.meter_readings < readings:  # noqa: ASYNC110 - counted by another process
            await asyncio.sleep(0.005)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    subscriber.close()
    return elapsed, cpu


def paho_blast(broker: Mosquitto, payloads: list[bytes]) -> float:
    """Seconds for paho to fire the same payloads with QoS 1 (window 20) and get every PUBACK: the ceiling."""
    client = Client(CallbackAPIVersion.VERSION2, client_id="bench-plain")
    acked = threading.Event()
    pending: set[int] = set()

    def on_publish(client: Client, userdata: object, mid: int, *_: object) -> None:
        pending.discard(mid)
        if not pending:
            acked.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    topic = wire.topic(AGENT, wire.Channel.TELEMETRY)
    started = time.perf_counter()
    infos = [client.publish(topic, payload, qos=1) for payload in payloads]
    pending.update(info.mid for info in infos if not info.is_published())
    if pending:
        acked.wait(300)
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return elapsed


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds used, RSS in MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu, rss


async def footprint(folder: Path, broker: Mosquitto, devices: int, seconds: float) -> tuple[float, float]:
    """Peak RSS (MB) and CPU share of one core of an agent process polling ``devices`` every second."""
    per_line = 10
    sims = [
        ModbusDeviceSimulator("eastron_sdm120", unit=n % per_line + 1, animate=True) for n in range(devices)
    ]
    async with contextlib.AsyncExitStack() as stack:
        lines, devs = [], []
        for first in range(0, devices, per_line):
            endpoint = await stack.enter_async_context(serve_tcp(sims[first : first + per_line]))
            line_id = f"tcp-{first // per_line}"
            lines.append({"id": line_id, "kind": "tcp", "host": "127.0.0.1", "port": endpoint.port})
            devs += [
                {
                    "id": f"meter-{first + i}",
                    "profile": "eastron_sdm120",
                    "line": line_id,
                    "unit": i + 1,
                    "poll_s": 1,
                }
                for i in range(min(per_line, devices - first))
            ]
        cfg = config(folder / "agent", broker.url, lines=lines, devices=devs)
        path = folder / "agent.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
        env = {k: v for k, v in os.environ.items() if k != "CITYGW_BROKER_URL"}
        agent = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the agent is its own process
            [sys.executable, "-m", "citygw.cli", "edge", "run", "--config", str(path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(5)  # warm-up: imports, connections, first slow polls
            cpu0, _ = proc_stat(agent.pid)
            t0 = time.perf_counter()
            peak = 0.0
            while time.perf_counter() - t0 < seconds:
                await asyncio.sleep(1)
                peak = max(peak, proc_stat(agent.pid)[1])
            cpu1, _ = proc_stat(agent.pid)
            share = (cpu1 - cpu0) / (time.perf_counter() - t0)
            served = sum(len(s.requests) for s in sims)
        finally:
            agent.terminate()
            agent.wait(20)
        print(
            f"footprint: {devices} devices, {served} requests served, peak RSS {peak:.1f} MB, CPU {share:.1%}"
        )
    return peak, share


async def run(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Mosquitto(folder / "mosquitto", extra_config="max_inflight_messages 1000\n")
        broker.start()
        try:
            t = time.perf_counter()
            pristine = folder / "pristine.sqlite"
            payloads = fill_journal(pristine, args.readings)
            print(
                f"journaled {args.readings} readings in {time.perf_counter() - t:.1f} s, "
                f"{len(payloads)} batches"
            )
            blast_s = paho_blast(broker, payloads)
            print(
                f"paho fire-and-collect (ceiling): {blast_s:.2f} s, {args.readings / blast_s:,.0f} readings/s"
            )
            plain_runs, drain_runs, ages = [], [], []
            plain_cpu, drain_cpu = [], []
            for round_no in range(1, args.rounds + 1):
                plain_round_s, plain_round_cpu = await plain_loop(broker, payloads, args.readings)
                plain_runs.append(plain_round_s)
                plain_cpu.append(plain_round_cpu)
                copy_to_disk(pristine, folder / "journal.sqlite")
                drain_s, drain_round_cpu, round_ages = await drain(folder, broker, args.readings)
                drain_runs.append(drain_s)
                drain_cpu.append(drain_round_cpu)
                ages += round_ages
                print(
                    f"round {round_no}: plain publish loop {plain_round_s:.2f} s "
                    f"({plain_round_cpu:.2f} s CPU), "
                    f"journal drain {drain_s:.2f} s ({drain_round_cpu:.2f} s CPU)"
                )
            plain_s, drain_s = statistics.median(plain_runs), statistics.median(drain_runs)
            print(f"plain publish loop:  {plain_s:.2f} s, {args.readings / plain_s:,.0f} readings/s (median)")
            print(
                f"journal drain:   {drain_s:.2f} s, {args.readings / drain_s:,.0f} readings/s (median; "
                f"vs ceiling {blast_s / drain_s:.2f})"
            )
            # inclusive: with the few positions a short drain sees, never beyond the oldest one seen
            p99 = (
                statistics.quantiles(ages, n=100, method="inclusive")[98]
                if len(ages) >= 2
                else (ages[0] if ages else float("nan"))
            )
            print(
                f"live positions during the drains: {len(ages)}, "
                f"age median {statistics.median(ages):.3f} s, p99 {p99:.3f} s"
            )
            rss, cpu = await footprint(folder, broker, args.devices, args.seconds)
        finally:
            broker.stop()
    per_reading = 1e6 / args.readings
    return {
        "drain_ratio": round(plain_s / drain_s, 3),
        "target_drain_ratio": TARGET_DRAIN_RATIO,
        "plain_cpu_us_per_reading": round(statistics.median(plain_cpu) * per_reading, 3),
        "drain_cpu_us_per_reading": round(statistics.median(drain_cpu) * per_reading, 3),
        "live_age_p99_s": round(p99, 3),
        "rss_mb_50_devices": round(rss, 1),
        "cpu_share_50_devices": round(cpu, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=5, help="plain loop and drain, alternately; medians")
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
