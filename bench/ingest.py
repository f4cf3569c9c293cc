"""Ingest benchmark: readings through real Mosquitto and the collector into real InfluxDB.

    .venv/bin/python bench/ingest.py [--readings 1000000] [--per-message 500] [--single 50000]
                                     [--collectors N] [--store-writers N] [--gc-young-threshold 0]
                                     [--switch-interval 0] [--gzip]

Starts its own Mosquitto (with deploy/mosquitto/mosquitto.conf's queue and persistence settings)
and InfluxDB (tests/services.py) in a temporary folder and measures:

1. baseline: the same points, as prebuilt line protocol, POSTed straight to InfluxDB in
   batches of ``--baseline-batch`` (one writer, like the collector), first and again last, into
   a new database each time; the faster of the two is the baseline;
2. end to end: an agent-like publisher sends the readings in batches of ``--per-message``
   (QoS 1) while one collector *process* stores them, then again while ``--collectors``
   processes (default: one per CPU) share them on an MQTT shared subscription, as a city
   scales out; the collectors write as the baseline does, uncompressed (``?gzip=false``: the
   setting for an InfluxDB on the same host), or gzipped with ``--gzip``; timed from the first
   publish until the collectors' own metrics say every
   point is stored and acknowledged; peak RSS is VmHWM from /proc;
3. worst case: one reading per message, against the broker's own delivery rate to a
   do-nothing paho subscriber (QoS 1) for the same messages.

Each phase also reports the CPU time (user + system, from /proc) that InfluxDB, Mosquitto,
the collectors and this process spent per point: on a machine whose cores are shared, the
sum tells whether the target is reachable at all. The load average is printed at start and end.

The last line printed is one JSON object with the figures: ``ratio_to_baseline`` is that of
the ``collectors`` processes, ``ratio_one_collector`` that of one.
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from paho.mqtt.client import Client, MQTTMessage  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from citygw.contract import wire  # noqa: E402
from collector import tuning  # noqa: E402
from collector.service import Collector  # noqa: E402
from collector.store import Point  # noqa: E402
from collector.store.line_protocol import to_line_protocol  # noqa: E402
from collector.tuning import tune_process  # noqa: E402
from tests.services import InfluxDB, Mosquitto, free_port  # noqa: E402

TARGET_RATIO = 0.8
TUNING = ("gil_switch_interval_s", "gc_young_threshold")  # process settings (collector/tuning.py)
AGENTS = 10
DEVICES_PER_AGENT = 100


def make_readings(count: int, t0: int) -> list[tuple[str, wire.Reading]]:
    """(agent, reading) pairs: electricity meters spread over agents, each with its own times."""
    devices = AGENTS * DEVICES_PER_AGENT
    out = []
    for i in range(count):
        device = i % devices
        step = i // devices
        reading = wire.Reading(
            device=f"meter-{device:04d}",
            measurement="electricity",
            ts=t0 + step * 1000 + device % 1000,
            fields={
                "kwh": 1000.0 + i / 10,
                "voltage": 230.0 + (i % 17) / 10,
                "current": 5.0 + (i % 13) / 10,
                "power_factor": 0.95,
            },
            tags={"site": f"site-{device % 20}"},
        )
        out.append((f"agent-{device // DEVICES_PER_AGENT:02d}", reading))
    return out


def make_messages(readings: list[tuple[str, wire.Reading]], per_message: int) -> list[tuple[str, bytes]]:
    """(topic, payload) per telemetry message: each agent's readings in batches, with its seq."""
    by_agent: dict[str, list[wire.Reading]] = {}
    for agent, reading in readings:
        by_agent.setdefault(agent, []).append(reading)
    queues = []
    for agent, own in sorted(by_agent.items()):
        topic = wire.topic(agent, wire.Channel.TELEMETRY)
        batches = [own[i : i + per_message] for i in range(0, len(own), per_message)]
        queues.append(
            [
                (topic, wire.encode(wire.TelemetryBatch(agent=agent, seq=seq, readings=batch)))
                for seq, batch in enumerate(batches)
            ]
        )
    # Interleave the agents, as a fleet does.
    messages = []
    for row in range(max(len(q) for q in queues)):
        messages += [q[row] for q in queues if row < len(q)]
    return messages


def deployed_broker_settings() -> str:
    """The queue and persistence lines of deploy/mosquitto/mosquitto.conf, for the benchmark's broker.

    The test broker saves its persistence file every second (for the crash tests): with a
    collector's window of large messages in flight that rewrites ~100 MB a second, which a
    deployed broker (autosave_interval 60) does not.
    """
    wanted = ("autosave_interval", "max_inflight_messages", "max_queued_messages", "max_queued_bytes")
    lines = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    chosen = [line for line in lines if line.split(" ", 1)[0] in wanted]
    assert len(chosen) == len(wanted), f"deploy/mosquitto/mosquitto.conf lacks one of {wanted}"
    return "".join(line + "\n" for line in chosen)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time per point of named processes over a phase: ``with CpuMeter(pids) as meter: ...``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {name: cpu_seconds(pid) - self._start[name] for name, pid in self.pids.items()}

    def per_point(self, points: int) -> dict[str, float]:
        """Microseconds of CPU per point, per process."""
        return {name: round(seconds / points * 1e6, 2) for name, seconds in self.used.items()}


def pid_of(service: InfluxDB | Mosquitto) -> int:
    assert service.proc is not None, "service not started"
    return service.proc.pid


def baseline(
    influxdb: InfluxDB, readings: list[tuple[str, wire.Reading]], batch: int, database: str
) -> float:
    """Points/s of prebuilt line protocol POSTed in ``batch``-point requests by one writer."""
    lines = [
        to_line_protocol(
            Point(r.measurement, {**r.tags, "device": r.device, "agent": agent}, r.ts, dict(r.fields))
        )
        for agent, r in readings
    ]
    bodies = ["\n".join(lines[i : i + batch]).encode() for i in range(0, len(lines), batch)]
    influxdb.create_database(database)
    meter = CpuMeter({"influxdb": pid_of(influxdb), "bench": os.getpid()})
    with httpx.Client(base_url=influxdb.url, timeout=60) as http, meter:
        started = time.perf_counter()
        for body in bodies:
            response = http.post("/write", params={"db": database, "precision": "ms"}, content=body)
            response.raise_for_status()
        elapsed = time.perf_counter() - started
    gz = sum(len(gzip.compress(b, compresslevel=1)) for b in bodies[:3]) / sum(len(b) for b in bodies[:3])
    print(
        f"baseline ({database}): {len(lines)} points in {elapsed:.2f} s "
        f"(gzip level 1 would send {gz:.0%} of the bytes)"
    )
    print(f"  CPU us/point: {meter.per_point(len(lines))}")
    return len(lines) / elapsed


class Publisher:
    """An agent-like QoS 1 publisher with a window of unacknowledged messages."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"bench-agent-{os.getpid()}")
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def publish_all(self, messages: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(120)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class CollectorProcess:
    """A collector in its own process (``bench/ingest.py _collector``), read through its metrics."""

    def __init__(
        self,
        broker: Mosquitto,
        influxdb: InfluxDB,
        database: str,
        client_id: str,
        settings: dict[str, Any],
        gzip: bool,
    ) -> None:
        self.metrics_port = free_port()
        # One keep-alive connection: a new client per scrape costs the benchmark's own process
        # milliseconds of CPU every 50 ms, taken from the cores the collector and InfluxDB share.
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{self.metrics_port}", timeout=5)
        influxdb.create_database(database)
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_collector",
            broker.url,
            f"influxdb://127.0.0.1:{influxdb.port}/{database}?gzip={'true' if gzip else 'false'}",
            json.dumps({**settings, "client_id": client_id, "metrics_port": self.metrics_port}),
        ]
        self.proc = subprocess.Popen(command, cwd=REPO)
        deadline = time.monotonic() + 20
        while self.metric("subscribed") != 1:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the collector process did not come up")
            time.sleep(0.1)

    def metrics(self) -> dict[str, float]:
        try:
            text = self._http.get("/metrics").text
        except httpx.HTTPError:
            return {}
        samples = (line.split() for line in text.splitlines() if line.startswith("citygw_collector_"))
        return {name.removeprefix("citygw_collector_"): float(value) for name, value in samples}

    def metric(self, name: str) -> float:
        return self.metrics().get(name, -1)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self._http.close()
        self.proc.terminate()
        self.proc.wait(30)


def wait_points(collectors: list[CollectorProcess], count: int, timeout: float = 600) -> int:
    """Wait until the collectors stored ``count`` points together; the most messages seen waiting."""
    deadline = time.monotonic() + timeout
    most_waiting = 0
    while True:
        metrics = [collector.metrics() for collector in collectors]
        stored = sum(m.get("points_total", 0) for m in metrics)
        if stored >= count:
            return most_waiting
        most_waiting = max(most_waiting, sum(int(m.get("inbox_messages", 0)) for m in metrics))
        if time.monotonic() > deadline:
            raise RuntimeError(f"the collectors stored {stored} of {count} points")
        time.sleep(0.05)


def end_to_end(
    broker: Mosquitto,
    influxdb: InfluxDB,
    messages: list[tuple[str, bytes]],
    points: int,
    database: str,
    settings: dict[str, Any],
    processes: int,
    gzip: bool,
) -> tuple[float, float]:
    """(points/s, largest collector peak RSS in MB) for ``messages`` through the broker and collectors.

    More than one process share the stream on an MQTT shared subscription, as a city scales out.
    """
    if processes > 1:
        settings = {**settings, "share_group": "bench"}
    collectors = [
        CollectorProcess(broker, influxdb, database, f"bench-{database}-{n}", settings, gzip)
        for n in range(processes)
    ]
    publisher = Publisher(broker)
    pids = {"influxdb": pid_of(influxdb), "mosquitto": pid_of(broker), "bench (publisher)": os.getpid()}
    meter = CpuMeter(pids | {f"collector {n}": c.proc.pid for n, c in enumerate(collectors)})
    try:
        with meter:
            started = time.perf_counter()
            publishing = threading.Thread(target=publisher.publish_all, args=(messages,))
            publishing.start()
            most_waiting = wait_points(collectors, points)
            elapsed = time.perf_counter() - started
            publishing.join()
        rss = max(collector.peak_rss_mb() for collector in collectors)
        batches = sum(c.metric("batches_total") for c in collectors)
        writing = sum(c.metric("write_seconds_sum") for c in collectors)
        print(
            f"{processes} collector(s) ({database}): {points} points in {len(messages)} messages, "
            f"{elapsed:.2f} s, {batches:.0f} batches, {writing:.2f} s in store writes, "
            f"peak RSS {rss:.0f} MB, up to {most_waiting} messages waiting in inboxes"
        )
        used = meter.per_point(points)
        print(f"  CPU us/point: {used}, {sum(meter.used.values()) / elapsed:.2f} cores busy")
    finally:
        publisher.close()
        for collector in collectors:
            collector.stop()
    return points / elapsed, rss


def broker_rate(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> float:
    """Messages/s the broker delivers to a do-nothing QoS 1 subscriber (paho), publish to last receive."""
    done = threading.Event()
    received = 0

    def on_message(client: Client, userdata: object, message: MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received == len(messages):
            done.set()

    subscribed = threading.Event()
    sink = Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sink-{os.getpid()}")
    sink.on_message = on_message
    sink.on_subscribe = lambda *args: subscribed.set()
    sink.connect("127.0.0.1", broker.port)
    sink.loop_start()
    sink.subscribe(wire.subscription(wire.Channel.TELEMETRY), qos=1)
    subscribed.wait(10)
    publisher = Publisher(broker)
    try:
        started = time.perf_counter()
        publisher.publish_all(messages)
        if not done.wait(300):
            raise RuntimeError(f"the do-nothing subscriber got {received} of {len(messages)} messages")
        elapsed = time.perf_counter() - started
    finally:
        publisher.close()
        sink.disconnect()
        sink.loop_stop()
    print(f"broker to a do-nothing subscriber: {len(messages)} messages in {elapsed:.2f} s")
    return len(messages) / elapsed


def run_collector(broker_url: str, store_url: str, settings: str) -> int:
    """The benchmark's collector process: default settings but ``settings`` (JSON keyword arguments)."""
    import signal

    from collector.store import open_store
    from collector.store.influx_v1 import InfluxV1Store

    store = open_store(store_url)
    assert isinstance(store, InfluxV1Store)
    options = json.loads(settings)
    tune_process(**{name: options.pop(name, getattr(tuning, name.upper())) for name in TUNING})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Collector(broker_url, store, **options):
        stop.wait()
    store.close()
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "_collector":
        return run_collector(*sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=1_000_000, help="readings to ingest (default 1e6)")
    parser.add_argument("--per-message", type=int, default=500, help="readings per message (default 500)")
    parser.add_argument("--single", type=int, default=50_000, help="messages of the one-reading case")
    parser.add_argument("--baseline-batch", type=int, default=5000, help="points per baseline write")
    parser.add_argument(
        "--collectors",
        type=int,
        default=os.cpu_count() or 1,
        help="collector processes on a shared subscription, measured beside one (default: one per CPU)",
    )
    parser.add_argument(
        "--gzip",
        action="store_true",
        help="the collectors gzip their writes (default: not, as the baseline: InfluxDB is on this host)",
    )
    parser.add_argument("--inflight-window", type=int, help="the collectors' inflight_window")
    parser.add_argument("--store-writers", type=int, help="the collectors' store_writers")
    parser.add_argument(
        "--switch-interval", type=float, help="the collectors' gil_switch_interval_s (0: Python's 5 ms)"
    )
    parser.add_argument(
        "--gc-young-threshold", type=int, help="the collectors' gc_young_threshold (0: Python's own GC)"
    )
    args = parser.parse_args()

    # Collector settings given on the command line (0 for a Python knob: leave Python's); else its defaults.
    given = {
        "inflight_window": args.inflight_window,
        "store_writers": args.store_writers,
        "gil_switch_interval_s": args.switch_interval,
        "gc_young_threshold": args.gc_young_threshold,
    }
    settings: dict[str, Any] = {name: value or None for name, value in given.items() if value is not None}
    defaults = {name: p.default for name, p in inspect.signature(Collector).parameters.items()}
    defaults |= {name: getattr(tuning, name.upper()) for name in TUNING}
    shown = {name: settings.get(name, defaults[name]) for name in given}
    print(f"load average at start: {os.getloadavg()}; collector settings {shown}, gzip {args.gzip}")
    t0 = time.time_ns() // 1_000_000 - 2 * 86_400_000
    readings = make_readings(args.readings, t0)
    messages = make_messages(readings, args.per_message)
    single = make_readings(args.single, t0)
    single_messages = make_messages(single, 1)
    print(
        f"{len(readings)} readings in {len(messages)} messages of up to {args.per_message}; "
        f"{len(single_messages)} one-reading messages; {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="citygw-bench-") as folder:
        broker = Mosquitto(Path(folder) / "mosquitto", extra_config=deployed_broker_settings())
        influxdb = InfluxDB(Path(folder) / "influxdb")
        broker.start()
        influxdb.start()
        try:
            baseline_first = baseline(influxdb, readings, args.baseline_batch, "baseline")
            one_rate, rss = end_to_end(
                broker, influxdb, messages, len(readings), "batched", settings, 1, args.gzip
            )
            rate = one_rate
            if args.collectors > 1:
                rate, rss_n = end_to_end(
                    broker, influxdb, messages, len(readings), "scaled", settings, args.collectors, args.gzip
                )
                rss = max(rss, rss_n)
            single_rate, single_rss = end_to_end(
                broker, influxdb, single_messages, len(single), "single", settings, 1, args.gzip
            )
            delivery_rate = broker_rate(broker, single_messages)
            # Again at the end, and the faster of the two counts: a slow spell of the machine
            # during the first must not flatter the ratio.
            baseline_rate = max(
                baseline_first, baseline(influxdb, readings, args.baseline_batch, "baseline_again")
            )
        finally:
            broker.stop()
            influxdb.stop()
    result = {
        "ratio_to_baseline": round(rate / baseline_rate, 3),
        "points_per_s": round(rate),
        "baseline_points_per_s": round(baseline_rate),
        "collectors": args.collectors,
        "ratio_one_collector": round(one_rate / baseline_rate, 3),
        "peak_rss_mb": round(max(rss, single_rss), 1),
        "single_reading_ratio_to_broker": round(single_rate / delivery_rate, 3),
        "target_ratio": TARGET_RATIO,
    }
    print(
        f"one reading per message: collector {single_rate:.0f} msg/s, broker alone {delivery_rate:.0f} msg/s"
    )
    print(f"load average at end: {os.getloadavg()}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
