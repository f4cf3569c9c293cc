"""The matcher's shortcuts give the answers of the long way: projections onto lines, kept projections."""

from __future__ import annotations

import datetime as dt
import math
import random

import pytest

from api.transit.geometry import OnLine, Polyline, _local_minima
from api.transit.matching import Projections, Sighting, match_bus
from api.transit.timetable import Timetable
from api.transit.vehicle_positions import fix_of
from simulators.transit.buses import Bus, fixes_between
from tests.api.transit.conftest import FRIDAY


def _every_segment(line: Polyline, x: float, y: float, within_m: float) -> list[OnLine]:
    """What ``Polyline.project`` answers, found by looking at every segment of the line."""
    found = []
    for index, ((x0, y0), (x1, y1)) in enumerate(zip(line.points, line.points[1:], strict=False)):
        dx, dy = x1 - x0, y1 - y0
        length_sq = dx * dx + dy * dy
        t = 0.0 if length_sq == 0 else max(0.0, min(1.0, ((x - x0) * dx + (y - y0) * dy) / length_sq))
        off = math.hypot(x - (x0 + t * dx), y - (y0 + t * dy))
        if off <= within_m:
            found.append(OnLine(line.cumulative[index] + t * math.sqrt(length_sq), off))
    return _local_minima(found)


def test_a_projection_finds_what_looking_at_every_segment_finds(timetable: Timetable) -> None:
    rng = random.Random(17)
    lines = {id(path.line): path.line for path in (timetable.path(t) for t in timetable.trips)}
    checked = 0
    for line in lines.values():
        for _ in range(200):
            x, y, _heading = line.point_at(rng.uniform(0, line.length_m))
            x, y = x + rng.uniform(-160, 160), y + rng.uniform(-160, 160)
            for within_m in (45.0, 150.0):
                expected = _every_segment(line, x, y, within_m)
                assert line.project(x, y, within_m=within_m) == expected
                checked += bool(expected)
    assert checked > 1000  # most points were near their line


def test_a_line_has_the_heading_of_the_segment_at_a_distance() -> None:
    line = Polyline([(0.0, 0.0), (10.0, 0.0), (10.0, 10.0)])  # east, then north
    assert line.point_at(5.0) == (5.0, 0.0, 90.0)
    assert line.point_at(15.0) == (10.0, 5.0, 0.0)
    assert line.point_at(-3.0) == (0.0, 0.0, 90.0)
    assert line.point_at(99.0) == (10.0, 10.0, 0.0)
    assert [line.heading_at(m) for m in (-3.0, 5.0, 10.0, 15.0, 99.0)] == [90.0, 90.0, 0.0, 0.0, 0.0]


def _sightings(timetable: Timetable, bus: Bus, start_s: int, end_s: int) -> list[Sighting]:
    fixes = [fix_of(point) for point in fixes_between(timetable, [bus], start_s, end_s)]
    return [Sighting(f.ts_ms / 1000, f.lat, f.lon, f.speed_mps, f.bearing_deg) for f in fixes if f]


def test_kept_projections_give_the_same_matches_and_spare_projecting_again(
    timetable: Timetable, friday: list[Bus], monkeypatch: pytest.MonkeyPatch
) -> None:
    projections: list[tuple[float, float]] = []
    project = Polyline.project

    def counted(line: Polyline, x: float, y: float, *, within_m: float) -> list[OnLine]:
        projections.append((x, y))
        return project(line, x, y, within_m=within_m)

    monkeypatch.setattr(Polyline, "project", counted)
    now_s = int(dt.datetime.combine(FRIDAY, dt.time(10), tzinfo=timetable._zone).timestamp())
    matched = spared = 0
    for bus in friday:
        earlier = _sightings(timetable, bus, now_s - 120, now_s - 30)
        later = _sightings(timetable, bus, now_s - 90, now_s)  # 60 s of the same fixes, then new ones
        projected: Projections = {}
        assert match_bus(earlier, timetable, projected=projected) == match_bus(earlier, timetable)
        projections.clear()
        match = match_bus(later, timetable)
        from_scratch = len(projections)
        projections.clear()
        assert match_bus(later, timetable, projected=projected) == match
        assert len(projections) <= from_scratch
        spared += from_scratch - len(projections)
        matched += match is not None
    assert matched >= len(friday) // 2
    assert spared >= 5 * matched  # the fixes both windows hold, on the line the bus was matched to
