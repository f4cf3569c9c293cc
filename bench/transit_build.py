"""Transit feed build benchmark: cold and steady builds of a large fleet, with and without the warm-up.

    .venv/bin/python bench/transit_build.py [--vehicles 2000] [--seed 2027] [--history-s 120]
                                            [--steady 30] [--profile FILE]

bench/bus_model.py's buses drive the simulated Friday; their fixes (one per 5 s each) are copied
under new vehicle ids until ``--vehicles`` are on the road at 10:00, as bench/transit.py's build
benchmark does, the store holding ``--history-s`` seconds of them before the first build (120:
bench/transit.py's; 720 fills the whole warm-up and match window). A TransitService then builds
all feeds from points in memory: the cold build (first build: the warm-up is replayed, then every
bus matched from its fixes), then ``--steady`` builds once a second with the fixes that arrived
meanwhile; the steady figure is their median. Times are the process's CPU seconds (the build is
single-threaded), so that other processes on the machine weigh less. The benchmark's own points
(what a database would hold) are frozen out of the garbage collector's scans and garbage is
collected before each build: a full collection over them would otherwise land in some builds.

Baseline in the same run: the same builds with ``MatchRules(require_evidence=False)``, the matcher
before cold-start evidence (no warm-up, no evidence asked). Targets for 2 000 vehicles: cold build
<= 2.5 s, steady build <= 60 ms.

``--profile FILE`` writes cProfile statistics of the evidence run's builds to FILE. The last line
printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api.transit.feeds import FeedKind, TransitService  # noqa: E402
from api.transit.gtfs import load_gtfs  # noqa: E402
from api.transit.matching import MatchRules  # noqa: E402
from bench.bus_model import drive_day  # noqa: E402
from bench.transit import FRIDAY, PointsInMemory, fleet_points, transit_settings  # noqa: E402
from collector.store.base import Point  # noqa: E402
from simulators.transit.network import network_zip  # noqa: E402

COLD_TARGET_S = 2.5
STEADY_TARGET_S = 0.060


def builds(
    points: list[Point],
    gtfs: Path,
    rules: MatchRules,
    *,
    start_s: int,
    steady: int,
    vehicles: int,
    profile: cProfile.Profile | None = None,
) -> tuple[float, float]:
    """(cold build s, median steady build s) of a new service over ``points``."""
    service = TransitService(transit_settings(gtfs.parent, gtfs), rules=rules)
    service.source.current()
    times: list[float] = []
    for at_s in range(start_s, start_s + steady + 1):
        reader = PointsInMemory([p for p in points if p.ts_ms <= at_s * 1000])  # nothing from the future
        gc.collect()
        if profile is not None:
            profile.enable()
        started = time.process_time()
        snapshot = service.build(reader, now_ms=at_s * 1000, max_age_s=90, max_ahead_s=30)
        times.append(time.process_time() - started)
        if profile is not None:
            profile.disable()
    published = len(snapshot.feeds[FeedKind.VEHICLE_POSITIONS].entity)
    assert published == vehicles, published
    return times[0], statistics.median(times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vehicles", type=int, default=2000, help="vehicles on the road")
    parser.add_argument("--seed", type=int, default=2027, help="seed of bench/bus_model.py's buses")
    parser.add_argument("--history-s", type=int, default=120, help="seconds of fixes before the cold build")
    parser.add_argument("--steady", type=int, default=30, help="steady builds, one a second")
    parser.add_argument("--profile", type=Path, help="write cProfile statistics of the evidence run here")
    args = parser.parse_args()
    if args.vehicles < 1 or args.history_s < 0 or args.steady < 1:
        parser.error("--vehicles and --steady must be at least 1, --history-s at least 0")
    with tempfile.TemporaryDirectory(prefix="citygw-transit-build-") as name:
        gtfs = Path(name) / "lviv.zip"
        gtfs.write_bytes(network_zip())
        timetable = load_gtfs(gtfs.read_bytes())
        buses = drive_day(timetable, FRIDAY, seed=args.seed)
        at_s = int(dt.datetime.combine(FRIDAY, dt.time(10), tzinfo=timetable._zone).timestamp())
        start_s = at_s - args.steady
        points = fleet_points(
            timetable, buses, start_s - args.history_s, at_s + 1, vehicles=args.vehicles, fresh_at_s=start_s
        )
        gc.collect()
        gc.freeze()
        times: dict[str, tuple[float, float]] = {}
        profile = cProfile.Profile() if args.profile else None
        for run, rules in (("evidence", MatchRules()), ("baseline", MatchRules(require_evidence=False))):
            times[run] = cold_s, steady_s = builds(
                points,
                gtfs,
                rules,
                start_s=start_s,
                steady=args.steady,
                vehicles=args.vehicles,
                profile=profile if run == "evidence" else None,
            )
            print(f"{run:<9} cold build {cold_s:.3f} s, steady build {1000 * steady_s:.1f} ms (CPU)")
        if profile is not None:
            profile.dump_stats(args.profile)
    (cold_s, steady_s), (base_cold_s, base_steady_s) = times["evidence"], times["baseline"]
    figures = {
        "vehicles": args.vehicles,
        "history_s": args.history_s,
        "cold_s": round(cold_s, 3),
        "steady_ms": round(1000 * steady_s, 1),
        "baseline_cold_s": round(base_cold_s, 3),
        "baseline_steady_ms": round(1000 * base_steady_s, 1),
        "cold_vs_baseline": round(cold_s / base_cold_s, 2),
        "steady_vs_baseline": round(steady_s / base_steady_s, 2),
        "target_cold_s": COLD_TARGET_S,
        "target_steady_ms": 1000 * STEADY_TARGET_S,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
