"""Positions on a city map in metres: a local flat projection and lines buses drive along.

Within a city (tens of kilometres) an equirectangular projection around the network's centre
is accurate to centimetres, far below GPS noise, and keeps every distance a cheap ``hypot``.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

EARTH_RADIUS_M = 6_371_000.0
_CELL_M = 100.0


@dataclass(frozen=True, slots=True)
class CityPlane:
    """Latitude/longitude to metres east/north of an origin, and back."""

    origin_lat: float
    origin_lon: float
    _m_per_deg_lon: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_m_per_deg_lon", math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(self.origin_lat))
        )

    def to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        return (lon - self.origin_lon) * self._m_per_deg_lon, (lat - self.origin_lat) * _M_PER_DEG_LAT

    def to_lat_lon(self, x: float, y: float) -> tuple[float, float]:
        return self.origin_lat + y / _M_PER_DEG_LAT, self.origin_lon + x / self._m_per_deg_lon


_M_PER_DEG_LAT = math.radians(1) * EARTH_RADIUS_M


@dataclass(frozen=True, slots=True)
class OnLine:
    """Where a point falls on a line: distance along it, and how far off it the point is."""

    along_m: float
    off_m: float


class Polyline:
    """A line on the city plane (a route's shape) that points can be projected onto quickly.

    Segments are bucketed in a 100 m grid so a projection looks only at the segments near the
    point, not at the whole line; the buckets within reach of each cell are gathered once per
    reach, so that a projection reads one of them.
    """

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        if len(points) < 2:
            raise ValueError("a line needs at least two points")
        self.points = list(points)
        self.cumulative = [0.0]
        for (x0, y0), (x1, y1) in zip(self.points, self.points[1:], strict=False):
            self.cumulative.append(self.cumulative[-1] + math.hypot(x1 - x0, y1 - y0))
        self.length_m = self.cumulative[-1]
        self._grid: dict[tuple[int, int], list[int]] = defaultdict(list)
        # Per segment: start, direction, squared length, length, distance along the line to its start.
        self._segments: list[tuple[float, float, float, float, float, float, float]] = []
        for index, ((x0, y0), (x1, y1)) in enumerate(zip(self.points, self.points[1:], strict=False)):
            for cell in _cells_along(x0, y0, x1, y1):
                self._grid[cell].append(index)
            dx, dy = x1 - x0, y1 - y0
            length_sq = dx * dx + dy * dy
            self._segments.append((x0, y0, dx, dy, length_sq, math.sqrt(length_sq), self.cumulative[index]))
        self._headings = [heading_deg(dx, dy) for _, _, dx, dy, *_ in self._segments]
        self._near: dict[int, dict[tuple[int, int], tuple[int, ...]]] = {}

    def _near_cells(self, reach: int) -> dict[tuple[int, int], tuple[int, ...]]:
        """Each cell within ``reach`` cells of the line: the segments in the cells that near it, in order."""
        near = self._near.get(reach)
        if near is None:
            gathered: dict[tuple[int, int], set[int]] = defaultdict(set)
            for (cx, cy), segments in self._grid.items():
                for gx in range(cx - reach, cx + reach + 1):
                    for gy in range(cy - reach, cy + reach + 1):
                        gathered[gx, gy].update(segments)
            near = self._near[reach] = {cell: tuple(sorted(found)) for cell, found in gathered.items()}
        return near

    def project(self, x: float, y: float, *, within_m: float) -> list[OnLine]:
        """Every local nearest point of the line within ``within_m`` (a loop may pass twice)."""
        near = self._near_cells(math.ceil(within_m / _CELL_M))
        found: list[OnLine] = []
        for index in near.get((math.floor(x / _CELL_M), math.floor(y / _CELL_M)), ()):
            x0, y0, dx, dy, length_sq, length, start_m = self._segments[index]
            t = 0.0 if length_sq == 0 else max(0.0, min(1.0, ((x - x0) * dx + (y - y0) * dy) / length_sq))
            off = math.hypot(x - (x0 + t * dx), y - (y0 + t * dy))
            if off <= within_m:
                found.append(OnLine(start_m + t * length, off))
        return _local_minima(found) if len(found) > 1 else found

    def nearest(self, x: float, y: float, *, after_m: float = 0.0) -> OnLine:
        """The nearest point of the line at or beyond ``after_m`` along it (a stop on its shape)."""
        best: OnLine | None = None
        for index, ((x0, y0), (x1, y1)) in enumerate(zip(self.points, self.points[1:], strict=False)):
            if self.cumulative[index + 1] < after_m:
                continue
            dx, dy = x1 - x0, y1 - y0
            length_sq = dx * dx + dy * dy
            t = 0.0 if length_sq == 0 else max(0.0, min(1.0, ((x - x0) * dx + (y - y0) * dy) / length_sq))
            along = self.cumulative[index] + t * math.sqrt(length_sq)
            if along < after_m:
                t = (after_m - self.cumulative[index]) / math.sqrt(length_sq) if length_sq else 0.0
                along = after_m
            off = math.hypot(x - (x0 + t * dx), y - (y0 + t * dy))
            if best is None or off < best.off_m - 1e-9:
                best = OnLine(along, off)
        assert best is not None
        return best

    def point_at(self, along_m: float) -> tuple[float, float, float]:
        """x, y and heading (degrees clockwise from north) at ``along_m`` metres along the line."""
        low = self._segment_at(along_m)
        (x0, y0), (x1, y1) = self.points[low], self.points[low + 1]
        span = self.cumulative[low + 1] - self.cumulative[low]
        t = (max(0.0, min(self.length_m, along_m)) - self.cumulative[low]) / span if span else 0.0
        return x0 + t * (x1 - x0), y0 + t * (y1 - y0), self._headings[low]

    def heading_at(self, along_m: float) -> float:
        """The heading of ``point_at``, alone."""
        return self._headings[self._segment_at(along_m)]

    def _segment_at(self, along_m: float) -> int:
        """The last segment starting at or before ``along_m`` (clamped to the line)."""
        along_m = max(0.0, min(self.length_m, along_m))
        return min(bisect.bisect_right(self.cumulative, along_m) - 1, len(self.points) - 2)


def heading_deg(dx: float, dy: float) -> float:
    """Compass heading of a move east ``dx`` and north ``dy`` metres."""
    return math.degrees(math.atan2(dx, dy)) % 360


def _cells_along(x0: float, y0: float, x1: float, y1: float) -> set[tuple[int, int]]:
    steps = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / (_CELL_M / 2)))
    return {
        (
            math.floor((x0 + (x1 - x0) * i / steps) / _CELL_M),
            math.floor((y0 + (y1 - y0) * i / steps) / _CELL_M),
        )
        for i in range(steps + 1)
    }


def _local_minima(found: list[OnLine]) -> list[OnLine]:
    """Keep one projection per pass: neighbouring segments near a vertex give the same spot twice."""
    found.sort(key=lambda on: on.along_m)
    kept: list[OnLine] = []
    for on in found:
        if kept and on.along_m - kept[-1].along_m < 2 * _CELL_M:
            if on.off_m < kept[-1].off_m:
                kept[-1] = on
            continue
        kept.append(on)
    return kept
