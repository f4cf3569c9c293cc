"""A bus's GPS receiver: RMC then GGA each epoch (GN talker, u-blox style) into a pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import pty
import tty
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import pynmea2

from firmware_bridge.nmea import KNOT_MPS, GpsFix, NoFix

EARTH_RADIUS_M = 6_371_000.0


Track = Callable[[float], "tuple[float, float, float, float] | None"]
"""Where the vehicle is at a UNIX time: (lat, lon, speed m/s, course degrees), or None (no sky)."""


class BusGpsSimulator:
    """Drives along ``route`` at ``speed_mps`` and prints one RMC + GGA pair every ``period`` seconds.

    With ``track`` the vehicle is wherever ``track`` says at each instant instead (a bus driving a
    timetable). Use as an async context manager; ``port`` is the serial device a reader opens.
    ``last_fix`` is what it last printed, after rounding to the printed precision. ``talker`` is the
    talker id (GN combined, GP, GL, GA, BD...), ``climb_mps`` changes the altitude every epoch (a hill)
    and ``gga_first`` prints GGA before RMC (SiRF, MediaTek order) instead of after it (u-blox, Quectel).
    """

    def __init__(
        self,
        route: Sequence[tuple[float, float]],
        *,
        track: Track | None = None,
        speed_mps: float = 8.0,
        vehicle_id: str = "bus",
        period: float = 1.0,
        satellites: int = 11,
        hdop: float = 0.8,
        altitude_m: float = 112.4,
        climb_mps: float = 0.0,
        talker: str = "GN",
        gga_first: bool = False,
    ) -> None:
        if track is None and len(route) < 2:
            raise ValueError("a route needs at least two points")
        self.route = list(route)
        self.track = track
        self.speed_mps = speed_mps
        self.vehicle_id = vehicle_id
        self.period = period
        self.satellites = satellites
        self.hdop = hdop
        self.altitude_m = altitude_m
        self.climb_mps = climb_mps
        self.talker = talker
        self.gga_first = gga_first
        # Fault knob: the receiver lost the sky (RMC status V, GGA quality 0).
        self.no_fix = False
        # Set ``speed_mps`` to 0 to stand at a stop and back to drive on: the bus moves from where it is.
        self._travelled_m = 0.0
        self._last_at: dt.datetime | None = None
        self.last_fix: GpsFix | NoFix | None = None
        self.emitted: deque[GpsFix | NoFix] = deque(maxlen=64)
        self.port = ""
        self._fds: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        master, slave = pty.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._fds = (master, slave)
        self.port = os.ttyname(slave)
        self._task = asyncio.create_task(self._run(), name=f"gps-{self.vehicle_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._fds is not None:
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds = None

    def sentences(self, now: dt.datetime | None = None) -> list[str]:
        """The RMC and GGA of this instant (and remember what they say in ``last_fix``)."""
        now = now or dt.datetime.now(dt.UTC)
        hhmmss = f"{now:%H%M%S}.{now.microsecond // 10_000:02d}"
        ddmmyy = f"{now:%d%m%y}"
        printed_time = now.replace(microsecond=now.microsecond // 10_000 * 10_000)
        ts_ms = round(printed_time.timestamp() * 1000)
        state = None if self.track is None else self.track(now.timestamp())
        if self.no_fix or (self.track is not None and state is None):
            rmc = pynmea2.RMC(
                self.talker, "RMC", (hhmmss, "V", "", "", "", "", "", "", ddmmyy, "", "", "N", "V")
            )
            gga = pynmea2.GGA(
                self.talker, "GGA", (hhmmss, "", "", "", "", "0", "00", "99.99", "", "", "", "", "", "")
            )
            self._remember(NoFix(ts_ms, "no fix"))
            return self._in_order(rmc, gga)
        if state is not None:
            lat, lon, speed_mps, course = state
        else:
            if self._last_at is not None:
                elapsed = max(0.0, (now - self._last_at).total_seconds())
                self._travelled_m += self.speed_mps * elapsed
                self.altitude_m += self.climb_mps * elapsed
            self._last_at = now
            lat, lon, course = self.at_distance(self._travelled_m)
            speed_mps = self.speed_mps
        lat_text, lat_dir, lat_printed = _degrees_minutes(lat, 2, "NS")
        lon_text, lon_dir, lon_printed = _degrees_minutes(lon, 3, "EW")
        knots = f"{speed_mps / KNOT_MPS:.3f}"
        course_text = f"{course:.2f}"
        rmc = pynmea2.RMC(
            self.talker,
            "RMC",
            (hhmmss, "A", lat_text, lat_dir, lon_text, lon_dir, knots, course_text, ddmmyy, "", "", "A", "V"),
        )
        gga = pynmea2.GGA(
            self.talker,
            "GGA",
            (
                hhmmss,
                lat_text,
                lat_dir,
                lon_text,
                lon_dir,
                "1",
                f"{self.satellites:02d}",
                f"{self.hdop:.2f}",
                f"{self.altitude_m:.1f}",
                "M",
                "47.0",
                "M",
                "",
                "",
            ),
        )
        self._remember(
            GpsFix(
                ts_ms=ts_ms,
                lat=lat_printed,
                lon=lon_printed,
                speed_mps=float(knots) * KNOT_MPS,
                course_deg=float(course_text),
                fix_quality=1,
                satellites=self.satellites,
                hdop=float(f"{self.hdop:.2f}"),
                altitude_m=float(f"{self.altitude_m:.1f}"),
            )
        )
        return self._in_order(rmc, gga)

    def _in_order(self, rmc: pynmea2.NMEASentence, gga: pynmea2.NMEASentence) -> list[str]:
        return [str(gga), str(rmc)] if self.gga_first else [str(rmc), str(gga)]

    def inject(self, data: bytes) -> None:
        """Put raw bytes on the line (noise, a half sentence) between the receiver's own output."""
        if self._fds is None:
            raise RuntimeError("the receiver is not running: use it inside 'async with'")
        os.write(self._fds[0], data)

    def position(self, elapsed_s: float) -> tuple[float, float, float]:
        """Latitude, longitude and course after ``elapsed_s`` s at ``speed_mps``, looping over the route."""
        return self.at_distance(self.speed_mps * elapsed_s)

    def at_distance(self, travelled_m: float) -> tuple[float, float, float]:
        """Latitude, longitude and course ``travelled_m`` metres along the route (looping over it)."""
        legs = list(zip(self.route, self.route[1:], strict=False))
        lengths = [_distance_m(a, b) for a, b in legs]
        total = sum(lengths) or 1.0
        travelled = travelled_m % total
        for (a, b), length in zip(legs, lengths, strict=True):
            if travelled <= length and length > 0:
                f = travelled / length
                return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, _bearing_deg(a, b)
            travelled -= length
        a, b = legs[-1]
        return b[0], b[1], _bearing_deg(a, b)

    def _remember(self, fix: GpsFix | NoFix) -> None:
        self.last_fix = fix
        self.emitted.append(fix)

    async def _run(self) -> None:
        assert self._fds is not None
        master = self._fds[0]
        while True:
            data = "".join(s + "\r\n" for s in self.sentences()).encode("ascii")
            # Nobody reading: a real receiver keeps talking into the void, so do we.
            with contextlib.suppress(BlockingIOError):
                os.write(master, data)
            await asyncio.sleep(self.period)


def _degrees_minutes(value: float, width: int, hemispheres: str) -> tuple[str, str, float]:
    """NMEA ``(d)ddmm.mmmmm`` text, hemisphere letter, and the signed degrees that text says."""
    total_minutes = round(abs(value) * 60, 5)
    degrees = int(total_minutes // 60)
    minutes = round(total_minutes - degrees * 60, 5)
    text = f"{degrees:0{width}d}{minutes:08.5f}"
    printed = degrees + float(f"{minutes:.5f}") / 60
    sign = 1 if value >= 0 else -1
    return text, hemispheres[0] if value >= 0 else hemispheres[1], round(sign * printed, 8)


def _distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat = math.radians((a[0] + b[0]) / 2)
    dx = math.radians(b[1] - a[1]) * math.cos(lat)
    dy = math.radians(b[0] - a[0])
    return EARTH_RADIUS_M * math.hypot(dx, dy)


def _bearing_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat = math.radians((a[0] + b[0]) / 2)
    dx = math.radians(b[1] - a[1]) * math.cos(lat)
    dy = math.radians(b[0] - a[0])
    return math.degrees(math.atan2(dx, dy)) % 360
