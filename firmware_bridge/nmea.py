"""NMEA 0183 from a vehicle's GPS receiver: checked sentences, assembled into fixes."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import pynmea2
import serial_asyncio

from citygw.contract.wire import FieldValue
from firmware_bridge.profile import NmeaProfile, NmeaSentence

KNOT_MPS = 1852 / 3600
# Mode indicator (NMEA 2.3+): N means "data not valid"; A, D, E, F, R, P, M, S carry a position.
_NO_FIX_MODES = frozenset({"N"})
SENTENCES: tuple[str, ...] = get_args(NmeaSentence)
_TIMED = frozenset({"RMC", "GGA", "GLL", "ZDA"})  # VTG and GSA carry no time


class NmeaError(ValueError):
    """A line that is not a usable NMEA sentence (garbage, missing or wrong checksum, bad field)."""


@dataclass(frozen=True)
class GpsFix:
    """A valid position of one epoch: time, position and motion (RMC, GLL, VTG), quality (GGA, GSA)."""

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


@dataclass(frozen=True)
class _Report:
    """What one sentence says, its fields read and checked when it arrives."""

    kind: str
    rank: int  # the talker's trust: lower is more trusted
    time: dt.time | None = None
    date: dt.date | None = None
    invalid: str | None = None  # why the receiver says this is no fix
    lat: float | None = None
    lon: float | None = None
    speed_kn: float | None = None
    course: float | None = None
    quality: int | None = None
    satellites: int | None = None
    hdop: float | None = None
    altitude: float | None = None


@dataclass
class _Epoch:
    """The sentences of one UTC time (time-less VTG and GSA join the epoch open when they arrive)."""

    time: dt.time | None
    reports: dict[str, _Report] = field(default_factory=dict)
    done: bool = False


class FixAssembler:
    """Assembles one fix per epoch (one UTC time) from its RMC, GGA, GLL, VTG, GSA and ZDA.

    An epoch's fix is made as soon as its ``complete_with`` sentences are in, or else when a sentence
    of another time arrives (``flush`` at the end of a stream): whatever order the receiver sends them
    in, nothing of another epoch is merged in. Every talker is read unless ``talkers`` names those to
    read, most trusted first: of one kind of sentence in an epoch the most trusted talker's is used
    (without the list, the first to arrive), and the epoch is complete when its ``complete_with``
    sentences are in from the most trusted talker that spoke in it.
    """

    def __init__(
        self,
        *,
        sentences: Collection[str] = SENTENCES,
        talkers: Sequence[str] | None = None,
        complete_with: Collection[str] = ("RMC", "GGA"),
    ) -> None:
        self._sentences = frozenset(sentences)
        self._talkers = None if talkers is None else tuple(talkers)
        self._complete = frozenset(complete_with)
        self._epoch: _Epoch | None = None
        self._date: tuple[dt.date, dt.time] | None = None  # the last date a receiver gave, and its time

    @classmethod
    def for_profile(cls, profile: NmeaProfile) -> FixAssembler:
        """An assembler using the profile's sentences, talkers and complete epoch."""
        return cls(sentences=profile.sentences, talkers=profile.talkers, complete_with=profile.epoch_complete)

    def feed(self, sentence: pynmea2.NMEASentence | str) -> list[GpsFix | NoFix]:
        """The fixes (or NoFix) of the epochs this sentence completes or ends: usually none or one.

        A sentence with an unreadable field raises ``NmeaError`` naming it and the field, and is
        left out; the rest of its epoch is kept.
        """
        if isinstance(sentence, str):
            sentence = parse_sentence(sentence)
        kind = getattr(sentence, "sentence_type", "")
        if kind not in self._sentences:
            return []
        rank = self._rank(getattr(sentence, "talker", ""))
        if rank is None:
            return []
        report = _READERS[kind](sentence, rank)
        results: list[GpsFix | NoFix] = []
        timed = kind in _TIMED
        if self._epoch is None or (timed and report.time != self._epoch.time):
            results += self.flush()
            self._epoch = _Epoch(report.time)
        epoch = self._epoch
        if epoch.done:
            return results
        held = epoch.reports.get(kind)
        if held is None or report.rank < held.rank:
            epoch.reports[kind] = report
        # Complete when the sentences are in from the most trusted talker that spoke in this epoch.
        reports = epoch.reports
        best = min(r.rank for r in reports.values())
        if all(k in reports and reports[k].rank == best for k in self._complete):
            epoch.done = True
            result = self._result(epoch)
            if result is not None:
                results.append(result)
        return results

    def flush(self) -> list[GpsFix | NoFix]:
        """The fix of the open epoch if not made yet (the stream ended, or a newer epoch began)."""
        epoch, self._epoch = self._epoch, None
        if epoch is None or epoch.done:
            return []
        result = self._result(epoch)
        return [] if result is None else [result]

    def _rank(self, talker: str) -> int | None:
        if self._talkers is None:
            return 0
        return self._talkers.index(talker) if talker in self._talkers else None

    def _result(self, epoch: _Epoch) -> GpsFix | NoFix | None:
        get = epoch.reports.get
        rmc, gga, gll, vtg, gsa, zda = (get(k) for k in ("RMC", "GGA", "GLL", "VTG", "GSA", "ZDA"))
        ts_ms = self._epoch_ms(epoch.time, rmc, zda)
        if rmc is None and gga is None and gll is None:
            return None  # a time-less sentence, or ZDA, alone: no position was said
        for report in (rmc, gga):
            if report is not None and report.invalid:
                return NoFix(ts_ms, report.invalid)
        where = next(r for r in (rmc, gga, gll) if r is not None)
        if where.invalid:
            return NoFix(ts_ms, where.invalid)
        if epoch.time is None:
            return NoFix(None, f"{where.kind} without a UTC time")
        if ts_ms is None:
            when = epoch.time.replace(tzinfo=None).isoformat()
            return NoFix(None, f"{where.kind} at {when}: no date yet (no RMC or ZDA)")
        assert where.lat is not None  # the readers require a position on a valid fix
        assert where.lon is not None
        speed_kn = rmc.speed_kn if rmc is not None else None
        course = rmc.course if rmc is not None else None
        if vtg is not None:
            speed_kn = vtg.speed_kn if speed_kn is None else speed_kn
            course = vtg.course if course is None else course
        hdop = gga.hdop if gga is not None else None
        return GpsFix(
            ts_ms=ts_ms,
            lat=round(where.lat, 8),
            lon=round(where.lon, 8),
            speed_mps=speed_kn * KNOT_MPS if speed_kn is not None else None,
            course_deg=course,
            fix_quality=gga.quality if gga is not None else None,
            satellites=gga.satellites if gga is not None else None,
            hdop=hdop if hdop is not None or gsa is None else gsa.hdop,
            altitude_m=gga.altitude if gga is not None else None,
        )

    def _epoch_ms(self, time: dt.time | None, *dated: _Report | None) -> int | None:
        """The epoch's time with its date: said in the epoch (RMC, ZDA), or the last one said.

        A receiver sending neither every second (GGA and GLL carry no date) keeps the date it
        last gave; a time of day more than 12 h before the last one's is the next day (midnight
        passed), a little earlier is the same day (a receiver's clock stepping back).
        """
        if time is None:
            return None
        date = next((r.date for r in dated if r is not None and r.date is not None), None)
        if date is None and self._date is not None:
            known, at = self._date
            date = known + dt.timedelta(days=1) if _seconds(at) - _seconds(time) > 43_200 else known
        if date is None:
            return None
        self._date = (date, time)
        return _epoch_ms(date, time)


def _read_rmc(rmc: pynmea2.NMEASentence, rank: int) -> _Report:
    time, date = _value(rmc, "timestamp"), _value(rmc, "datestamp")
    status = _text(rmc, "status")
    # Checked here, not with pynmea2's is_valid: it wants nav status S/C/U and so rejects
    # the 'V' ("no nav status") that current u-blox receivers send with every good fix.
    if status != "A":
        return _Report("RMC", rank, time, date, f"RMC status {status or 'empty'} (receiver warning)")
    mode = _text(rmc, "mode_indicator")
    if mode in _NO_FIX_MODES:
        return _Report("RMC", rank, time, date, f"RMC mode indicator {mode} (not valid)")
    lat, lon = _position(rmc, "RMC status A")
    speed, course = _number(rmc, "spd_over_grnd"), _number(rmc, "true_course")
    return _Report("RMC", rank, time, date, lat=lat, lon=lon, speed_kn=speed, course=course)


def _read_gga(gga: pynmea2.NMEASentence, rank: int) -> _Report:
    time = _value(gga, "timestamp")
    quality = _integer(gga, "gps_qual")
    if not quality:
        return _Report(
            "GGA", rank, time, invalid=f"GGA fix quality {quality if quality == 0 else 'empty'} (no fix)"
        )
    lat, lon = _position(gga, f"GGA fix quality {quality}")
    return _Report(
        "GGA",
        rank,
        time,
        lat=lat,
        lon=lon,
        quality=quality,
        satellites=_integer(gga, "num_sats"),
        hdop=_number(gga, "horizontal_dil"),
        altitude=_number(gga, "altitude"),
    )


def _read_gll(gll: pynmea2.NMEASentence, rank: int) -> _Report:
    time = _value(gll, "timestamp")
    status = _text(gll, "status")
    if status != "A":
        return _Report("GLL", rank, time, invalid=f"GLL status {status or 'empty'} (receiver warning)")
    mode = _text(gll, "faa_mode")
    if mode in _NO_FIX_MODES:
        return _Report("GLL", rank, time, invalid=f"GLL mode indicator {mode} (not valid)")
    lat, lon = _position(gll, "GLL status A")
    return _Report("GLL", rank, time, lat=lat, lon=lon)


def _read_vtg(vtg: pynmea2.NMEASentence, rank: int) -> _Report:
    knots, kmph = _number(vtg, "spd_over_grnd_kts"), _number(vtg, "spd_over_grnd_kmph")
    if knots is None and kmph is not None:
        knots = kmph / 1.852
    return _Report("VTG", rank, speed_kn=knots, course=_number(vtg, "true_track"))


def _read_gsa(gsa: pynmea2.NMEASentence, rank: int) -> _Report:
    return _Report("GSA", rank, hdop=_number(gsa, "hdop"))


def _read_zda(zda: pynmea2.NMEASentence, rank: int) -> _Report:
    time = _value(zda, "timestamp")
    day, month, year = (_integer(zda, name) for name in ("day", "month", "year"))
    if day is None or month is None or year is None:
        return _Report("ZDA", rank, time)
    try:
        return _Report("ZDA", rank, time, dt.date(year, month, day))
    except ValueError as exc:
        raise NmeaError(f"{_name(zda)} date {year}-{month}-{day} is no date ({exc}): {zda}") from exc


_READERS: dict[str, Callable[[pynmea2.NMEASentence, int], _Report]] = {
    "RMC": _read_rmc,
    "GGA": _read_gga,
    "GLL": _read_gll,
    "VTG": _read_vtg,
    "GSA": _read_gsa,
    "ZDA": _read_zda,
}


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


def _name(sentence: pynmea2.NMEASentence) -> str:
    return f"{getattr(sentence, 'talker', '')}{getattr(sentence, 'sentence_type', '')}"


def _text(sentence: pynmea2.NMEASentence, name: str) -> str | None:
    """A field's raw text, None when empty or absent (an older receiver's shorter sentence)."""
    index: int = sentence.name_to_idx[name]
    data: list[str] = sentence.data
    return data[index] if index < len(data) and data[index] else None


def _unreadable(sentence: pynmea2.NMEASentence, name: str, why: object) -> NmeaError:
    index: int = sentence.name_to_idx[name]
    label = sentence.fields[index][0]
    return NmeaError(
        f"{_name(sentence)} field {index + 1} ({label}) {_text(sentence, name)!r} is unreadable ({why}): "
        f"{str(sentence)[:82]}"
    )


def _value(sentence: pynmea2.NMEASentence, name: str) -> Any:
    """A field read by pynmea2's own converter (time, date), None when empty; else ``NmeaError`` naming it.

    Called directly: pynmea2's attribute access hands back the raw text when its converter fails.
    """
    text = _text(sentence, name)
    if text is None:
        return None
    spec = sentence.fields[sentence.name_to_idx[name]]
    try:
        return spec[2](text) if len(spec) > 2 else text
    except Exception as exc:  # the converters raise ValueError, IndexError... on a garbled field
        raise _unreadable(sentence, name, f"{exc.__class__.__name__}: {exc}") from exc


def _number(sentence: pynmea2.NMEASentence, name: str) -> float | None:
    """A number field; 'nan' or 'inf' is no reading."""
    text = _text(sentence, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise _unreadable(sentence, name, "not a number") from exc
    if not math.isfinite(value):
        raise _unreadable(sentence, name, "not a finite number")
    return value


def _integer(sentence: pynmea2.NMEASentence, name: str) -> int | None:
    text = _text(sentence, name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise _unreadable(sentence, name, "not a whole number") from exc


def _position(sentence: pynmea2.NMEASentence, valid: str) -> tuple[float, float]:
    """Signed degrees of a sentence that says it has a fix; a missing or garbled one is ``NmeaError``."""
    signed: list[float] = []
    for name, hemispheres, limit in (("lat", "NS", 90.0), ("lon", "EW", 180.0)):
        text, hemisphere = _text(sentence, name), _text(sentence, f"{name}_dir")
        if text is None or hemisphere is None:
            raise NmeaError(f"{_name(sentence)} says {valid} but has no position ({name} empty): {sentence}")
        if hemisphere not in hemispheres:
            raise _unreadable(sentence, f"{name}_dir", f"not {' or '.join(hemispheres)}")
        try:
            degrees = pynmea2.nmea_utils.dm_to_sd(text)
        except ValueError as exc:
            raise _unreadable(sentence, name, "not (d)ddmm.mmm") from exc
        if not math.isfinite(degrees) or abs(degrees) > limit:
            raise _unreadable(sentence, name, f"beyond {limit:g} degrees")
        signed.append(-degrees if hemisphere == hemispheres[1] else degrees)
    return signed[0], signed[1]


def _seconds(time: dt.time) -> float:
    return time.hour * 3600 + time.minute * 60 + time.second + time.microsecond / 1e6


def _epoch_ms(date: dt.date, time: dt.time) -> int:
    moment = dt.datetime.combine(date, time.replace(tzinfo=None), tzinfo=dt.UTC)
    return round(moment.timestamp() * 1000)
