"""NMEA 0183 from a vehicle's GPS receiver: checked sentences, assembled into fixes."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass

import pynmea2
import serial_asyncio

from citygw.wire import FieldValue
from firmware_bridge.profile import NmeaProfile

KNOT_MPS = 1852 / 3600
# Mode indicator (NMEA 2.3+): N means "data not valid"; A, D, E, F, R, P, M, S carry a position.
_NO_FIX_MODES = frozenset({"N"})
# A GGA belongs to the RMC of the same epoch; at 1 Hz the latest GGA may be one epoch older.
_GGA_MAX_AGE_S = 2.0


class NmeaError(ValueError):
    """A line that is not a usable NMEA sentence (garbage, missing or wrong checksum, bad field)."""


@dataclass(frozen=True)
class GpsFix:
    """A valid position from RMC (time, position, motion) and the latest GGA (quality)."""

    ts_ms: int
    lat: float
    lon: float
    speed_mps: float | None
    course_deg: float | None
    fix_quality: int | None
    satellites: int | None
    hdop: float | None
    altitude_m: float | None


@dataclass(frozen=True)
class NoFix:
    """The receiver says it has no valid position; ``ts_ms`` is its clock if it gave one."""

    ts_ms: int | None
    reason: str


def parse_sentence(line: str | bytes) -> pynmea2.NMEASentence:
    """Parse one sentence; the checksum must be present and right, else ``NmeaError``."""
    if isinstance(line, bytes):
        line = line.decode("ascii", errors="replace")
    text = line.strip()
    try:
        return pynmea2.parse(text, check=True)
    except pynmea2.ChecksumError as exc:
        missing = "missing" in str(exc)
        why = "has no checksum (*hh)" if missing else f"has a wrong checksum ({exc.args[0]})"
        raise NmeaError(f"sentence {text[:82]!r} {why}") from exc
    except Exception as exc:
        # pynmea2 raises ParseError, SentenceTypeError, ValueError, IndexError... on garbage.
        raise NmeaError(f"not an NMEA sentence: {text[:82]!r} ({exc.__class__.__name__})") from exc


def fix_fields(fix: GpsFix, profile: NmeaProfile) -> dict[str, FieldValue]:
    """The profile's fields of a fix, without those the receiver did not give."""
    values = {name: getattr(fix, name) for name in profile.field_names}
    return {name: value for name, value in values.items() if value is not None}


class FixAssembler:
    """Combines RMC, GGA and VTG of the same receiver into one fix per RMC.

    Sentences of other talkers or kinds than the given ones (a profile's) are ignored.
    """

    def __init__(
        self, *, sentences: Collection[str] = ("RMC", "GGA", "VTG"), talkers: Collection[str] | None = None
    ) -> None:
        self._gga: pynmea2.NMEASentence | None = None
        self._vtg: pynmea2.NMEASentence | None = None
        self._sentences = frozenset(sentences)
        self._talkers = None if talkers is None else frozenset(talkers)

    @classmethod
    def for_profile(cls, profile: NmeaProfile) -> FixAssembler:
        """An assembler using the profile's sentences and talkers."""
        return cls(sentences=profile.sentences, talkers=profile.talkers)

    def feed(self, sentence: pynmea2.NMEASentence | str) -> GpsFix | NoFix | None:
        """A fix (or NoFix) on each RMC; None for sentences that only add detail or are not used."""
        if isinstance(sentence, str):
            sentence = parse_sentence(sentence)
        kind = getattr(sentence, "sentence_type", "")
        talker = getattr(sentence, "talker", "")
        if kind not in self._sentences or (self._talkers is not None and talker not in self._talkers):
            return None
        try:
            if kind == "GGA":
                self._gga = sentence
                if _int(sentence.gps_qual) == 0:
                    return NoFix(None, "GGA fix quality 0 (no fix)")
                return None
            if kind == "VTG":
                self._vtg = sentence
                return None
            if kind == "RMC":
                return self._rmc(sentence)
        except (ValueError, TypeError, AttributeError) as exc:
            raise NmeaError(f"{kind} with unreadable fields: {sentence} ({exc})") from exc
        return None

    def _rmc(self, rmc: pynmea2.NMEASentence) -> GpsFix | NoFix:
        ts_ms = _epoch_ms(rmc.datestamp, rmc.timestamp)
        # Checked here, not with pynmea2's is_valid: it wants nav status S/C/U and so rejects
        # the 'V' ("no nav status") that current u-blox receivers send with every good fix.
        if rmc.status != "A":
            return NoFix(ts_ms, f"RMC status {rmc.status or 'empty'} (receiver warning)")
        mode = _field(rmc, "mode_indicator")
        if mode in _NO_FIX_MODES:
            return NoFix(ts_ms, f"RMC mode indicator {mode} (not valid)")
        if ts_ms is None:
            raise NmeaError(f"RMC without date and time: {rmc}")
        if not rmc.lat or not rmc.lon or rmc.lat_dir not in ("N", "S") or rmc.lon_dir not in ("E", "W"):
            raise NmeaError(f"RMC status A without a position: {rmc}")
        gga = self._gga if self._gga is not None and _same_epoch(self._gga, rmc) else None
        quality = _int(gga.gps_qual) if gga is not None else None
        if quality == 0:
            return NoFix(ts_ms, "GGA fix quality 0 (no fix)")
        speed_kn: float | None = rmc.spd_over_grnd
        course: float | None = rmc.true_course
        if self._vtg is not None:
            if speed_kn is None and self._vtg.spd_over_grnd_kts is not None:
                speed_kn = float(self._vtg.spd_over_grnd_kts)
            if course is None:
                course = self._vtg.true_track
        speed_kn, course = _float(speed_kn), _float(course)
        return GpsFix(
            ts_ms=ts_ms,
            lat=round(_float(rmc.latitude) or 0.0, 8),
            lon=round(_float(rmc.longitude) or 0.0, 8),
            speed_mps=speed_kn * KNOT_MPS if speed_kn is not None else None,
            course_deg=course,
            fix_quality=quality,
            satellites=_int(gga.num_sats) if gga is not None else None,
            hdop=_float(gga.horizontal_dil) if gga is not None else None,
            altitude_m=_float(gga.altitude) if gga is not None else None,
        )


async def read_lines(
    port_url: str, baudrate: int = 9600, *, discarded: Callable[[str], None] | None = None
) -> AsyncIterator[str]:
    """Text lines from a serial port or pyserial URL; garbled bytes become U+FFFD, never an error.

    A run of bytes longer than the stream's limit (64 KiB) without a line end, as a floating or
    shorted RX line sends, is dropped: ``discarded`` is told why, and reading goes on.
    """
    reader, writer = await serial_asyncio.open_serial_connection(url=port_url, baudrate=baudrate)
    try:
        while True:
            try:
                raw = await reader.readline()
            except ValueError as exc:  # asyncio's limit overrun: readline already dropped the chunk
                if discarded is not None:
                    discarded(f"{port_url}: dropped a run of bytes without a line end ({exc})")
                continue
            if not raw:
                return
            line = raw.decode("ascii", errors="replace").strip()
            if line:
                yield line
    finally:
        writer.close()


def _field(sentence: pynmea2.NMEASentence, name: str) -> str | None:
    index: int = sentence.name_to_idx[name]
    data: list[str] = sentence.data
    return data[index] if index < len(data) and data[index] else None


def _epoch_ms(date: dt.date | None, time: dt.time | None) -> int | None:
    if date is None or time is None:
        return None
    moment = dt.datetime.combine(date, time.replace(tzinfo=None), tzinfo=dt.UTC)
    return round(moment.timestamp() * 1000)


def _same_epoch(gga: pynmea2.NMEASentence, rmc: pynmea2.NMEASentence) -> bool:
    if gga.timestamp is None or rmc.timestamp is None:
        return False
    seconds: list[float] = [
        t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6 for t in (gga.timestamp, rmc.timestamp)
    ]
    gap = abs(seconds[0] - seconds[1])
    return min(gap, 86400 - gap) <= _GGA_MAX_AGE_S


def _int(text: object) -> int | None:
    return int(text) if text not in (None, "") else None  # type: ignore[call-overload]


def _float(text: object) -> float | None:
    """A number field of a sentence (None when empty); 'nan' or 'inf' is no reading: ValueError."""
    if text in (None, ""):
        return None
    value = float(text)  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value
