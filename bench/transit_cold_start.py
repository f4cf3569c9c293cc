"""Transit cold start benchmark: are buses on their own runs after an API restart or a GTFS swap?

    .venv/bin/python bench/transit_cold_start.py [--every-min 20] [--after-s 300]

The simulated Friday of the fixture network (16 trams and buses working their blocks) drives a
TransitService through two kinds of cold start:

1. restart: a new TransitService at moments every ``--every-min`` minutes (06:00-22:00), the store
   holding the last ten minutes of fixes; builds every 10 s for ``--after-s`` seconds;
2. GTFS swap: a service running for ten minutes gets a new zip (same trips, another feed_version)
   at moments every hour; the realtime feeds move to it ZIP_MAX_AGE_S later, starting again from
   it; builds every 10 s until ``--after-s`` seconds after that.

At every build, of the vehicles on the road with a fix: how many are published on a run
(``published``), how many on a run they drive themselves (``right``: the run they are on, the one
they have just finished, or the next of their block as they pull in for it), and how many on a
run another vehicle drives (``foreign``: a rider waiting for that vehicle watches the wrong one).
``right_share`` = right / published (target >= 0.99); ``coverage`` = right / on the road.
Baseline in the same run: the matcher without the evidence rule
(``MatchRules(require_evidence=False)``, the behaviour before).

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api.settings import ApiSettings  # noqa: E402
from api.transit.feeds import TransitService  # noqa: E402
from api.transit.gtfs import load_gtfs  # noqa: E402
from api.transit.matching import MatchRules, TripMatch  # noqa: E402
from api.transit.source import ZIP_MAX_AGE_S  # noqa: E402
from api.transit.timetable import Timetable  # noqa: E402
from collector.store.sqlite import SqliteStore  # noqa: E402
from simulators.transit.buses import Bus, fixes_between, simulate_day, where  # noqa: E402
from simulators.transit.network import network_files, zip_files  # noqa: E402

FRIDAY = dt.date(2027, 1, 15)
STEP_S = 10
HISTORY_S = 600
JUST_FINISHED_S = 120  # a bus this soon after the end of a run may still be shown on it


@dataclass
class Tally:
    on_road: int = 0
    published: int = 0
    right: int = 0
    foreign: int = 0

    def add(self, other: Tally) -> None:
        self.on_road += other.on_road
        self.published += other.published
        self.right += other.right
        self.foreign += other.foreign

    def figures(self) -> dict[str, float | int]:
        return {
            "right_share": round(self.right / self.published, 4) if self.published else 0.0,
            "coverage": round(self.right / self.on_road, 4) if self.on_road else 0.0,
            "foreign": self.foreign,
            "published": self.published,
            "on_road": self.on_road,
        }


class Day:
    """The simulated Friday: timetable, buses, who drives each run."""

    def __init__(self, zip_bytes: bytes) -> None:
        self.zip_bytes = zip_bytes
        self.timetable: Timetable = load_gtfs(zip_bytes)
        self.buses: list[Bus] = simulate_day(self.timetable, FRIDAY)
        self.drivers = {ride.run.key: bus.vehicle_id for bus in self.buses for ride in bus.rides}

    def local(self, minutes: int) -> int:
        return self.timetable.day_start(FRIDAY) + minutes * 60

    def score(self, matches: dict[str, TripMatch], now_s: int) -> Tally:
        tally = Tally()
        for bus in self.buses:
            state = where(self.timetable, bus, now_s)
            if state is None or not state.has_fix or state.off_line:
                continue
            tally.on_road += 1
            match = matches.get(bus.vehicle_id)
            if match is None:
                continue
            tally.published += 1
            index = bus.rides.index(state.ride)
            own = {ride.run.key for ride in bus.rides[index : index + 2]}  # or the next: pulling in
            if index and now_s - bus.rides[index - 1].actual_arrivals[-1] <= JUST_FINISHED_S:
                own.add(bus.rides[index - 1].run.key)
            if match.run.key in own:
                tally.right += 1
            elif self.drivers.get(match.run.key, bus.vehicle_id) != bus.vehicle_id:
                tally.foreign += 1
        return tally


def _service(folder: Path, day: Day, rules: MatchRules) -> TransitService:
    path = folder / "gtfs.zip"
    path.write_bytes(day.zip_bytes)
    return TransitService(ApiSettings(transit_gtfs_path=path), rules=rules)


def _drive(service: TransitService, store: SqliteStore, day: Day, start_s: int, end_s: int) -> Tally:
    tally = Tally()
    for now_s in range(start_s, end_s, STEP_S):
        store.write(list(fixes_between(day.timetable, day.buses, now_s - STEP_S + 1, now_s + 1)))
        snapshot = service.snapshot(store, now_ms=now_s * 1000, max_age_s=90, max_ahead_s=30)
        tally.add(day.score(snapshot.matches, now_s))
    return tally


def restart(day: Day, at_s: int, after_s: int, rules: MatchRules) -> Tally:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = SqliteStore(folder / "store.db")
        store.write(list(fixes_between(day.timetable, day.buses, at_s - HISTORY_S, at_s - STEP_S + 1)))
        return _drive(_service(folder, day, rules), store, day, at_s, at_s + after_s)


def swap(day: Day, at_s: int, after_s: int, rules: MatchRules, new_zip: bytes) -> Tally:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = SqliteStore(folder / "store.db")
        store.write(list(fixes_between(day.timetable, day.buses, at_s - HISTORY_S - 150, at_s - HISTORY_S)))
        service = _service(folder, day, rules)
        _drive(service, store, day, at_s - HISTORY_S, at_s)  # running before the swap
        service.source.publish(new_zip, now_s=at_s)
        return _drive(service, store, day, at_s, at_s + ZIP_MAX_AGE_S + after_s)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--every-min", type=int, default=20, help="minutes between restart moments")
    parser.add_argument("--after-s", type=int, default=300, help="seconds watched after each cold start")
    args = parser.parse_args()
    files = network_files()
    day = Day(zip_files(files))
    files["feed_info.txt"] = files["feed_info.txt"].replace(b"lviv-fixture-1", b"lviv-fixture-swapped")
    new_zip = zip_files(files)
    restarts = [day.local(m) for m in range(6 * 60, 22 * 60, args.every_min)]
    swaps = [day.local(m) for m in range(6 * 60 + 7, 22 * 60, 60)]
    figures: dict[str, object] = {"restarts": len(restarts), "swaps": len(swaps), "after_s": args.after_s}
    for name, rules in (("evidence", MatchRules()), ("baseline", MatchRules(require_evidence=False))):
        by_kind = {"restart": Tally(), "swap": Tally()}
        for at_s in restarts:
            by_kind["restart"].add(restart(day, at_s, args.after_s, rules))
        for at_s in swaps:
            by_kind["swap"].add(swap(day, at_s, args.after_s, rules, new_zip))
        total = Tally()
        for kind, tally in by_kind.items():
            total.add(tally)
            print(f"{name:<9} {kind:<8} {tally.figures()}")
        figures[name] = total.figures()
        figures[f"{name}_restart"] = by_kind["restart"].figures()
        figures[f"{name}_swap"] = by_kind["swap"].figures()
    figures["target_right_share"] = 0.99
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
