"""Collector hot path micro-benchmark: telemetry payloads to gzipped line protocol, in-process.

    .venv/bin/python bench/collector_hotpath.py [--readings 200000] [--per-message 500] [--profile]
        [--owners off|known|strict]

No broker, no database: the same payloads as bench/ingest.py go through each stage on one
thread (with ``--owners known`` or ``strict`` each agent holds a pushed config naming its
devices, and the collector and fast path hold the agents to it), and every figure is also given
as a multiple of ``json.loads`` on the same payloads
in the same run (the floor for anything that turns the JSON into Python objects), so the
figures compare across runs on a shared, noisy machine. Best of ``--repeat`` runs per stage.

The last line printed is one JSON object with microseconds per point per stage.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import json
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import make_messages, make_readings  # noqa: E402
from citygw.contract import wire  # noqa: E402
from collector.convert import EARLIEST_TS_MS, Batch, Received  # noqa: E402
from collector.fastpath import TelemetryFastPath  # noqa: E402
from collector.owners import OwnerPolicy  # noqa: E402
from collector.service import Collector  # noqa: E402
from collector.store import Point  # noqa: E402
from collector.store.influx_v1 import InfluxV1Store  # noqa: E402
from collector.store.line_protocol import LineEncoder  # noqa: E402


def models_to_lines(payloads: list[bytes]) -> list[str]:
    """The former hot path, for reference: a model per reading, a Point per reading, then a line."""
    encoder = LineEncoder()
    lines = []
    for payload in payloads:
        batch = wire.TelemetryBatch.model_validate_json(payload)
        for r in batch.readings:
            point = Point(r.measurement, {**r.tags, "device": r.device, "agent": batch.agent}, r.ts, r.fields)
            lines.append(encoder.line(point))
    return lines


def as_read(line: str) -> tuple[str, dict[str, float | bool], str]:
    """Series, field values and time of a line as InfluxDB reads them (``5`` and ``5.0`` alike);
    enough for these payloads (no spaces or commas in tags, no string fields)."""
    series, field_set, ts = line.split(" ")
    values: dict[str, float | bool] = {}
    for pair in field_set.split(","):
        key, text = pair.split("=")
        values[key] = text == "true" if text in ("true", "false") else float(text.removesuffix("i"))
    return series, values, ts


def configs(messages: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """(agent, config payload) naming the devices of each agent's messages, as the API pushes them."""
    devices: dict[str, set[str]] = {}
    for _, payload in messages:
        batch = orjson.loads(payload)
        devices.setdefault(batch["agent"], set()).update(r["device"] for r in batch["readings"])
    return [
        (
            agent,
            wire.encode(
                wire.DesiredConfig(
                    agent=agent,
                    version=1,
                    issued_at=0,
                    site=f"site-{agent}",
                    lines=[],
                    devices=[{"id": device} for device in sorted(own)],
                )
            ),
        )
        for agent, own in devices.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage; the best counts")
    parser.add_argument("--profile", action="store_true", help="also print cProfile of the collector's path")
    parser.add_argument(
        "--owners", type=OwnerPolicy, default=OwnerPolicy.OFF, help="ownership policy (collector/owners.py)"
    )
    args = parser.parse_args()

    t0 = time.time_ns() // 1_000_000 - 2 * 86_400_000
    messages = make_messages(make_readings(args.readings, t0), args.per_message)
    payloads = [payload for _, payload in messages]
    points = args.readings
    # The collector's own conversion (validation, checks, line protocol), as its converter thread runs it;
    # the store is never contacted.
    store = InfluxV1Store("http://127.0.0.1:9", "bench")
    collector = Collector("mqtt://127.0.0.1:9", store, owners=args.owners)
    if args.owners is not OwnerPolicy.OFF:
        for agent, payload in configs(messages):
            collector.converter.owners.take(agent, payload)
    received_ms = time.time_ns() // 1_000_000

    def collector_path() -> Batch:
        batch = Batch()
        for topic, payload in messages:
            collector.converter.convert(Received(topic, payload, received_ms), batch)
        return batch

    converted = collector_path()
    assert len(converted.lines) == points, "every reading must become a line"
    assert not converted.dead, "no dead letter expected"
    before = models_to_lines(payloads)
    if args.owners is OwnerPolicy.OFF:  # else the site tags are the configs'
        assert list(map(as_read, converted.lines)) == list(map(as_read, before)), "both must write the same"
    body = "\n".join(converted.lines).encode()
    chunks = [body[i : i + len(body) // 200 + 1] for i in range(0, len(body), len(body) // 200 + 1)]
    encoder = LineEncoder()
    validated = [wire.TELEMETRY_BATCH_DICT.validate_json(payload) for payload in payloads]
    converter = collector.converter  # the types and series it learned
    fast_path = TelemetryFastPath(converter.field_types, converter.series, converter.owners)
    agents = [batch["agent"] for batch in validated]

    def exact_path(payload: bytes) -> list[str]:
        batch = wire.TELEMETRY_BATCH_DICT.validate_json(payload)
        return encoder.reading_lines(batch["agent"], batch["readings"])

    stages: dict[str, Callable[[], object]] = {
        "json.loads": lambda: [json.loads(payload) for payload in payloads],
        "models + Point + line (before)": lambda: models_to_lines(payloads),
        "fast validation only": lambda: [wire.TELEMETRY_BATCH_DICT.validate_json(p) for p in payloads],
        "line encoding only": lambda: [
            encoder.reading_line(batch["agent"], reading)
            for batch in validated
            for reading in batch["readings"]
        ],
        "line encoding per message": lambda: [
            encoder.reading_lines(batch["agent"], batch["readings"]) for batch in validated
        ],
        "collector conversion (after)": collector_path,
        "orjson.loads, one message at a time": lambda: [orjson.loads(p) and None for p in payloads],
        "exact path, one message at a time": lambda: [exact_path(p) and None for p in payloads],
        "fast path, one message at a time": lambda: [
            fast_path.convert(p, agent, EARLIEST_TS_MS, 2**62) and None
            for (_, p), agent in zip(messages, agents, strict=True)
        ],
        "join + encode": lambda: "\n".join(converted.lines).encode(),
        "gzip level 1": lambda: [gzip.compress(chunk, compresslevel=1) for chunk in chunks],
        "gzip level 6": lambda: [gzip.compress(chunk, compresslevel=6) for chunk in chunks],
    }
    per_point: dict[str, float] = {}
    for name, stage in stages.items():
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            stage()
            best = min(best, time.perf_counter() - started)
        per_point[name] = best / points * 1e6
    floor = per_point["json.loads"]
    size = len(body) / points
    print(f"{points} readings in {len(payloads)} payloads of {args.per_message}, {size:.0f} B/line")
    for name, micros in per_point.items():
        rate = 1 / micros
        print(f"{name:36s} {micros:6.2f} us/point {rate:7.3f} M points/s {micros / floor:5.2f} x json.loads")
    gzip_ratio = {level: len(gzip.compress(chunks[0], level)) / len(chunks[0]) for level in (1, 6)}
    print(f"gzip sends {gzip_ratio[1]:.0%} of the bytes at level 1, {gzip_ratio[6]:.0%} at level 6")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(collector_path)
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    store.close()
    print(
        json.dumps({"us_per_point": {k: round(v, 3) for k, v in per_point.items()}, "gzip_ratio": gzip_ratio})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
