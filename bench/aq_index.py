"""What the EEA averages cost the air-quality index, against reading each station's newest point.

    .venv/bin/python bench/aq_index.py [--stations 50] [--per-hour 60] [--runs 5]

A SQLite store holds ``--stations`` AQT530 stations reading every ``60 / --per-hour`` minutes for
26 hours. Baseline: the index from each station's newest point (``store.latest`` and the
concentrations of one point, what the API did before). Now: ``api.air.station_indices``, which
averages the gases over the past hour and PM over the past 24 hours in the store (sums and counts
per device). Median of ``--runs``; the last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from api.air import concentrations_ugm3, station_indices
from citygw.contract import air_quality
from collector.store import open_store, prepare
from collector.store.base import Point, newest_per_device
from firmware_bridge.catalogue import catalogue

HOUR_MS = 3_600_000


def seed(url: str, stations: int, per_hour: int, now_ms: int) -> int:
    store = open_store(url)
    prepare(store)
    step = HOUR_MS // per_hour
    points = [
        Point(
            "air_quality",
            {"device": f"aq-{n}", "agent": "bench", "district": f"d{n % 5}"},
            now_ms - i * step,
            {
                "no2": 14.0 + i % 7,
                "no2_ugm3": 27.0 + i % 7,
                "o3_ugm3": 56.0,
                "pm25": 8.4 + n % 3,
                "pm10": 17.9,
            },
        )
        for n in range(stations)
        for i in range(26 * per_hour)
    ]
    for start in range(0, len(points), 10_000):
        store.write(points[start : start + 10_000])
    store.close()
    return len(points)


def median_ms(run: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--per-hour", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    now_ms = int(time.time() * 1000)
    roles = catalogue()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.sqlite'}"
        points = seed(url, args.stations, args.per_hour, now_ms)
        store = open_store(url)

        def newest() -> object:
            found = []
            for point in newest_per_device(store.latest(measurement="air_quality")):
                concentrations = concentrations_ugm3(roles, "air_quality", point.fields)
                indexed = {p: c for p, c in concentrations.items() if p in air_quality.CURRENT.upper_bounds}
                found.append(air_quality.index(indexed))
            return found

        def averaged() -> object:
            return station_indices(store, roles, table=air_quality.CURRENT, now_ms=now_ms, max_age_s=7200)

        assert len(averaged()) == args.stations  # type: ignore[arg-type]
        baseline, now = median_ms(newest, args.runs), median_ms(averaged, args.runs)
        store.close()
    print(json.dumps({"stations": args.stations, "points": points, "newest_point_ms": baseline,
                      "eea_averages_ms": now, "ratio": round(now / baseline, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
