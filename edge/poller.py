"""Per-line polling: one owner task per line turns what devices say into journaled Readings.

A Modbus or M-Bus line carries one request at a time, so one task owns it and serves its devices from
a schedule: each device once as the line starts, then every ``poll_s`` at a phase taken from
its id (so a hundred meters do not all fire at :00). When several things are due the owner
picks by priority: commands first (``ModbusPoller.submit_priority``), then fast points, then
polls that also carry slow points, then devices in quarantine. A device that stops answering
goes into quarantine: it is tried once per backoff period, only when nothing else is waiting
(or when it has waited a whole backoff period more), so it costs at most one timeout per
period and its neighbours keep their rate. Anything that waited longer than its own period
competes as a fast poll, so nothing starves on a saturated line. A GPS line is read
continuously and yields at most one position per vehicle every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from citygw.contract import wire
from citygw.contract.agent_config import DEFAULT_GPS_PROFILE, Device, NmeaLine
from citygw.contract.bus_time import SLOW_EVERY
from edge.journal import Journal
from edge.report import ExceptionReport
from edge.vehicles import TRIP_FIELD, Vehicles
from firmware_bridge.dlms import DlmsLine, Meter
from firmware_bridge.errors import DeviceError, DeviceExceptionResponse
from firmware_bridge.mbus import MbusLine
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.nmea import (
    FixAssembler,
    GpsFix,
    NmeaError,
    NoFix,
    fix_fields,
    parse_sentence,
    read_lines,
)
from firmware_bridge.profile import DlmsProfile, MbusProfile, NmeaProfile, Poll, Profile, load_nmea_profile

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
# A device that keeps failing the same way is logged again at most this often (seconds).
FAILURE_LOG_EVERY_S = 300.0
GPS_REOPEN_S = 2.0
STANDING_MPS = 0.5  # slower than this a bus stands (GPS speed jitters around 0.1-0.3 m/s)
TURNING_MPS = 2.0  # a course means something only when the bus moves
TURN_DEG = 30.0  # a course change this big is a turn
# Upper bounds (ms) of the response-time histogram; slower answers count as gt_<last>.
RESPONSE_BUCKETS_MS = (50, 100, 250, 500, 1000)
RESET_SUFFIX = "_reset"

T = TypeVar("T")
L = TypeVar("L")  # the line a poller owns: a ModbusLine, an MbusLine, a DlmsLine


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def phase(device_id: str, period: float) -> float:
    """A stable offset in [0, period) from the device id (crc32: the same on every boot)."""
    return (zlib.crc32(device_id.encode()) / 2**32) * period


def backoff(period: float, consecutive_failures: int) -> float:
    """Delay before retrying a failing device: doubles per failure, never beyond 60 s or below its period."""
    return max(period, min(MAX_BACKOFF_S, period * 2.0 ** min(consecutive_failures, 16)))


def response_bucket(ms: float) -> str:
    """The histogram bucket of one response time."""
    for bound in RESPONSE_BUCKETS_MS:
        if ms <= bound:
            return f"le_{bound}"
    return f"gt_{RESPONSE_BUCKETS_MS[-1]}"


def _empty_buckets() -> dict[str, int]:
    return {response_bucket(b): 0 for b in (*RESPONSE_BUCKETS_MS, math.inf)}


@dataclass
class DeviceRecord:
    """What the agent knows about one device's health."""

    state: wire.DeviceState = wire.DeviceState.UNKNOWN
    last_ok: int | None = None
    error: str | None = None
    reads: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    exception_code: int | None = None
    last_error_at: int | None = None
    response_ms: dict[str, int] = field(default_factory=_empty_buckets)
    quarantined: bool = False
    counter_resets: int = 0
    skipped_polls: int = 0
    last_published: int | None = None
    suppressed: int = 0
    # Fields left out of the readings as last read (no measurement), each with why.
    fields_left_out: dict[str, str] = field(default_factory=dict)

    def answered_in(self, seconds: float | None) -> None:
        if seconds is not None:
            self.response_ms[response_bucket(seconds * 1000)] += 1

    def snapshot(self) -> wire.DeviceHealth:
        return wire.DeviceHealth(
            state=self.state,
            last_ok=self.last_ok,
            error=self.error[:512] if self.error else None,
            reads=self.reads,
            failures=self.failures,
            exception_code=self.exception_code,
            last_error_at=self.last_error_at,
            response_ms_buckets=dict(self.response_ms) if any(self.response_ms.values()) else None,
            quarantined=self.quarantined or None,
            counter_resets=self.counter_resets or None,
            skipped_polls=self.skipped_polls or None,
            last_published=self.last_published,
            suppressed=self.suppressed or None,
            fields_left_out={f: why[:512] for f, why in self.fields_left_out.items()} or None,
        )


@dataclass
class HealthBoard:
    """Per-device health, written by the pollers and read by the health publisher."""

    devices: dict[str, DeviceRecord] = field(default_factory=dict)

    def record(self, device_id: str) -> DeviceRecord:
        return self.devices.setdefault(device_id, DeviceRecord())

    def ok(self, device_id: str, at_ms: int, *, response_s: float | None = None) -> None:
        record = self.record(device_id)
        record.state = wire.DeviceState.OK
        record.last_ok = at_ms
        record.error = None
        record.exception_code = None
        record.reads += 1
        record.consecutive_failures = 0
        record.quarantined = False
        record.answered_in(response_s)

    def failed(
        self,
        device_id: str,
        state: wire.DeviceState,
        error: str,
        *,
        exception_code: int | None = None,
        response_s: float | None = None,
    ) -> None:
        """A failed read; ``response_s`` when the device did answer (an exception, a bad frame)."""
        record = self.record(device_id)
        record.state = state
        record.error = error
        record.exception_code = exception_code
        record.last_error_at = now_ms()
        record.failures += 1
        record.consecutive_failures += 1
        record.quarantined = state is wire.DeviceState.TIMEOUT
        record.answered_in(response_s)

    def published(self, device_id: str, ts_ms: int) -> None:
        """A reading of the device, taken at ``ts_ms``, was journaled."""
        self.record(device_id).last_published = ts_ms

    def suppressed(self, device_id: str) -> None:
        """A good read left unpublished: no field moved beyond its deadband, no heartbeat due."""
        self.record(device_id).suppressed += 1

    def noted(self, device_id: str, error: str) -> None:
        """A problem that does not change the device's state (a garbled NMEA line)."""
        record = self.record(device_id)
        record.error = error
        record.last_error_at = now_ms()
        record.failures += 1

    def left_out(self, device_id: str, errors: Mapping[str, Exception]) -> None:
        """The fields left out of the device's readings now (``ModbusLine.field_errors``), with why."""
        self.record(device_id).fields_left_out = {name: str(error) for name, error in errors.items()}

    def snapshot(self) -> dict[str, wire.DeviceHealth]:
        return {device_id: record.snapshot() for device_id, record in self.devices.items()}


def reading_tags(device: Device, site: str, vehicles: Vehicles | None = None) -> dict[str, str]:
    """The tags of a reading of ``device`` taken now: its own, the site and its vehicle's and route."""
    tags = {**device.tags, "site": site}
    if device.vehicle is not None:
        tags.update((vehicles or Vehicles()).tags(device.vehicle))
    return tags


def _with_fields(
    fields: dict[str, wire.FieldValue], more: Mapping[str, wire.FieldValue]
) -> dict[str, wire.FieldValue]:
    """``more`` added to a reading's ``fields``, all or none: only when the reading has room for all of
    them; a field of the device's own of the same name wins."""
    if len(fields) + len(more) > wire.MAX_FIELDS_PER_READING:
        return fields
    return {**more, **fields}


def with_location(device: Device, fields: dict[str, wire.FieldValue]) -> dict[str, wire.FieldValue]:
    """A located device's ``lat``/``lon`` as fields of its reading (maps; never tags: no new series)."""
    if device.location is None:
        return fields
    return _with_fields(fields, {"lat": device.location.lat, "lon": device.location.lon})


def with_trip(
    device: Device, fields: dict[str, wire.FieldValue], vehicles: Vehicles
) -> dict[str, wire.FieldValue]:
    """The trip the device's vehicle is on (its console's log-in) as the string field ``trip_id``.

    A field, never a tag: a bus makes some 30 trips a day, each would be a new series.
    """
    trip = vehicles.trip(device.vehicle) if device.vehicle is not None else None
    return fields if trip is None else _with_fields(fields, {TRIP_FIELD: trip})


def device_reading(
    device: Device,
    site: str,
    vehicles: Vehicles,
    *,
    measurement: str,
    ts: int,
    fields: dict[str, wire.FieldValue],
) -> wire.Reading:
    """The one way a reading of ``device`` is built: its fields, its location and vehicle's trip, its tags."""
    return wire.Reading(
        device=device.id,
        measurement=measurement,
        ts=ts,
        fields=with_trip(device, with_location(device, fields), vehicles),
        tags=reading_tags(device, site, vehicles),
    )


@dataclass
class _Slot:
    device: Device
    profile: Profile | MbusProfile | DlmsProfile
    polls: int = 0
    due: float = 0.0
    # How long this slot may wait past ``due`` before it competes as a fast poll.
    patience: float = 0.0
    counters: dict[str, float] = field(default_factory=dict)
    # The failure last logged (its health state and kind) and when: a new one is logged at once.
    logged_failure: tuple[wire.DeviceState, type[Exception]] | None = None
    logged_at: float = 0.0
    failures: int = 0
    # Report by exception (the device has a heartbeat_s), else None: every poll is published.
    report: ExceptionReport | None = None

    @property
    def next_polls(self) -> tuple[Poll, ...]:
        """The poll classes of this slot's next read: slow points on the first and every SLOW_EVERY-th."""
        return ("fast", "slow") if self.polls % SLOW_EVERY == 0 else ("fast",)


class LineStopped(Exception):
    """A command's line stopped (restarted by a new config, or the agent stopped) before it answered."""


def _fail(future: asyncio.Future[Any], error: LineStopped) -> None:
    if not future.done():
        future.set_exception(error)


# Ranks when several things are due at once (commands always go first).
FAST, WITH_SLOW, QUARANTINED = 1, 2, 3


class LinePoller(ABC, Generic[L]):
    """Owns one line and polls its devices on their schedules; the one way onto the line.

    The schedule is the line's kind's own only in how one device is read (``_read``): a Modbus
    line reads a unit's planned registers, an M-Bus line a meter's telegrams.

    The poller outlives a line that is reopened: ``run(line)`` serves one open line until
    cancelled; commands submitted while no line is open wait for the next ``run``. While the
    journal refuses a device's readings (quota policy stop_slow), its polls are skipped and
    counted (``skipped_polls`` on health) instead of spending line time on them.
    """

    def __init__(
        self,
        devices: Sequence[tuple[Device, Profile | MbusProfile | DlmsProfile]],
        *,
        journal: Journal,
        board: HealthBoard,
        site: str,
        vehicles: Vehicles | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.journal = journal
        self.board = board
        self.site = site
        self.vehicles = vehicles or Vehicles()
        self._clock = clock
        self._slots = [
            _Slot(device, profile, report=ExceptionReport.for_device(device, profile))
            for device, profile in devices
        ]
        self._commands: list[tuple[Callable[[L], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        for slot in self._slots:
            board.record(slot.device.id)

    async def submit_priority(self, job: Callable[[L], Awaitable[T]]) -> T:
        """Run ``job(line)`` on this line before any waiting poll and return its result.

        A poll already on the wire finishes first (one device's read). Example:
        ``await poller.submit_priority(lambda line: line.write(unit, profile, "level", 128))``.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._commands.append((job, future))
        self._wake.set()
        return await future

    def close(self) -> None:
        """This poller is discarded (its line restarts or goes): fail the commands still waiting for it."""
        while self._commands:
            _fail(self._commands.pop(0)[1], LineStopped("the line restarted before the command ran; not run"))

    async def run(self, line: L) -> None:
        """Serve the line until cancelled."""
        start = self._clock()
        for slot in self._slots:
            # Due now, as if last polled one period before its phase: each device is read once as
            # the line starts (a new config learns at once whether it answers), then at its phase.
            slot.due = start + phase(slot.device.id, slot.device.poll_s) - slot.device.poll_s
            slot.patience = slot.device.poll_s
        while True:
            await self._run_commands(line)
            now = self._clock()
            ready = self._next_ready(now)
            if ready is None:
                wait = min((s.due for s in self._slots), default=now + 3600.0) - now
                self._wake.clear()
                if not self._commands:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation
                    # arriving with the wake-up (CPython gh-86296), and the line would never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(wait, 0.0)):
                            await self._wake.wait()
                continue
            if self.journal.refuses(ready.device.id):  # stop_slow: the reading would be refused
                self.board.record(ready.device.id).skipped_polls += 1
                self._reschedule(ready, True)
                continue
            ok = await self.poll(ready, line)
            self._reschedule(ready, ok)
            await self._polled(line, ready)

    def _rank(self, slot: _Slot, now: float) -> int:
        if now - slot.due > slot.patience:
            return FAST  # waited a whole period more: no longer outranked
        if self.board.record(slot.device.id).quarantined:
            return QUARANTINED
        return WITH_SLOW if "slow" in slot.next_polls else FAST

    def _next_ready(self, now: float) -> _Slot | None:
        ready = [s for s in self._slots if s.due <= now]
        if not ready:
            return None
        return min(ready, key=lambda s: (self._rank(s, now), s.due))

    def _reschedule(self, slot: _Slot, ok: bool) -> None:
        period = slot.device.poll_s
        now = self._clock()
        if ok:
            # Keep the cadence; if the line fell behind by a whole period, skip rather than burst.
            slot.due += period
            if slot.due < now:
                slot.due = now + period
            slot.patience = period
        else:
            failures = self.board.record(slot.device.id).consecutive_failures
            slot.patience = backoff(period, failures - 1)
            slot.due = now + slot.patience

    async def _run_commands(self, line: L) -> None:
        ran = False
        while self._commands:
            ran = True
            job, future = self._commands.pop(0)
            if future.cancelled():
                continue
            try:
                result = await job(line)
            except asyncio.CancelledError:  # the line stops mid-command: its submitter must still hear
                _fail(
                    future,
                    LineStopped("the line restarted while the command was on the wire; it may have run"),
                )
                raise
            except Exception as exc:  # the submitter gets the error; the line goes on
                if not future.cancelled():
                    future.set_exception(exc)
            else:
                if not future.cancelled():
                    future.set_result(result)
        if ran:
            await self._commands_ran(line)

    @abstractmethod
    async def _read(self, line: L, slot: _Slot, polls: tuple[Poll, ...]) -> dict[str, wire.FieldValue]:
        """One read of the slot's device: its fields (DeviceError when it gives none)."""

    @abstractmethod
    def _left_out(self, line: L, slot: _Slot) -> Mapping[str, Exception]:
        """The device's fields left out of its last read, each with why."""

    async def _polled(self, line: L, slot: _Slot) -> None:
        """After a poll of the slot's device (a line kind's own upkeep)."""

    async def _commands_ran(self, line: L) -> None:
        """After commands ran on the line."""

    async def poll(self, slot: _Slot, line: L) -> bool:
        """Read one device once; True when it answered with fields.

        The reading is journaled unless the device reports by exception and nothing moved
        (``edge.report``); health counts that as ``suppressed``. The line leaves out fields that
        are no measurement (NaN, infinity, out of range) and says which (``field_errors``): they go
        on the device's health as ``fields_left_out``.
        """
        device = slot.device
        polls = slot.next_polls
        slot.polls += 1
        started = self._clock()
        try:
            fields = await self._read(line, slot, polls)
        except DeviceError as exc:
            took = self._clock() - started
            answered = exc.state is not wire.DeviceState.TIMEOUT
            self.board.failed(
                device.id,
                exc.state,
                str(exc) or type(exc).__name__,
                exception_code=exc.code if isinstance(exc, DeviceExceptionResponse) else None,
                response_s=took if answered else None,
            )
            self._log_failure(slot, exc)
            if slot.report is not None:
                slot.report.forget()
            return False
        finally:
            self.board.left_out(device.id, self._left_out(line, slot))
        read_at = self._clock()
        took = read_at - started
        at = now_ms()
        if not fields:  # nothing of this poll class to read (a profile of slow points only)
            self.board.failed(
                device.id, wire.DeviceState.DECODE_ERROR, "no field in the answer", response_s=took
            )
            return False
        fields.update(self._counter_resets(slot, fields))
        unusable = self.vehicles.heard(device.id, fields)  # a console's log-in applies to its own reading too
        if slot.report is None or slot.report.due(fields, read_at):
            reading = device_reading(
                device, self.site, self.vehicles, measurement=slot.profile.measurement, ts=at, fields=fields
            )
            if self.journal.append([reading]):  # 0: refused (quota drop_newest, a full disk)
                self.board.published(device.id, at)
                if slot.report is not None:  # else the next poll is published, moved or not
                    slot.report.sent(fields, read_at)
        else:
            self.board.suppressed(device.id)
        if slot.logged_failure is not None:
            log.info("device %s answers again after %d failed reads", device.id, slot.failures)
        slot.logged_failure, slot.failures = None, 0
        self.board.ok(device.id, at, response_s=took)
        if unusable:
            self.board.noted(device.id, unusable)
        return True

    def _log_failure(self, slot: _Slot, exc: DeviceError) -> None:
        """One warning per failure, not per poll: the device, and the line's words for what was sent and why.

        Logged again when the failure changes kind, and every FAILURE_LOG_EVERY_S while it lasts.
        """
        slot.failures += 1
        kind = (exc.state, type(exc))
        now = time.monotonic()
        if kind == slot.logged_failure and now - slot.logged_at < FAILURE_LOG_EVERY_S:
            log.debug("device %s: %s", slot.device.id, exc)
            return
        again = f" ({slot.failures} failed reads)" if slot.failures > 1 else ""
        log.warning("device %s: %s%s", slot.device.id, str(exc) or type(exc).__name__, again)
        slot.logged_failure, slot.logged_at = kind, now

    def _counter_resets(self, slot: _Slot, fields: Mapping[str, wire.FieldValue]) -> dict[str, bool]:
        """``<field>_reset: true`` for each counter that went down since the last reading (reboot or wrap).

        A consumer summing consumption takes the new value itself as the increment of such a
        reading, not new minus old. Counters are remembered in memory, from the agent's start.
        """
        flags: dict[str, bool] = {}
        for spec in slot.profile.field_specs:
            value = fields.get(spec.field)
            if not spec.counter or isinstance(value, bool | str) or value is None:
                continue
            before = slot.counters.get(spec.field)
            if before is not None and value < before:
                flags[reset_field(spec.field)] = True
                self.board.record(slot.device.id).counter_resets += 1
            slot.counters[spec.field] = value
        return flags


class ModbusPoller(LinePoller[ModbusLine]):
    """Owns one Modbus line (RTU bus or TCP endpoint): reads each unit's planned registers."""

    async def _read(
        self, line: ModbusLine, slot: _Slot, polls: tuple[Poll, ...]
    ) -> dict[str, wire.FieldValue]:
        assert isinstance(slot.profile, Profile)
        return await line.read(slot.device.unit or 0, slot.profile, polls)

    def _left_out(self, line: ModbusLine, slot: _Slot) -> Mapping[str, Exception]:
        return line.field_errors(slot.device.unit or 0)

    async def _polled(self, line: ModbusLine, slot: _Slot) -> None:
        if isinstance(slot.profile, Profile) and slot.profile.timing.close_between_polls:
            await line.close_connection()  # a single-slot device: free its slot until the next poll

    async def _commands_ran(self, line: ModbusLine) -> None:
        if any(isinstance(s.profile, Profile) and s.profile.timing.close_between_polls for s in self._slots):
            await line.close_connection()


class MbusPoller(LinePoller[MbusLine]):
    """Owns one M-Bus line: reads each meter's telegrams (all its records at once: no slow points)."""

    async def _read(self, line: MbusLine, slot: _Slot, polls: tuple[Poll, ...]) -> dict[str, wire.FieldValue]:
        assert isinstance(slot.profile, MbusProfile)
        assert slot.device.address is not None
        return await line.read(slot.device.address, slot.profile)

    def _left_out(self, line: MbusLine, slot: _Slot) -> Mapping[str, Exception]:
        return line.field_errors(slot.device.address) if slot.device.address is not None else {}


def dlms_meter(device: Device) -> Meter:
    """How the DLMS meter ``device`` is reached (its ``dlms`` section, else logical 1, public client)."""
    return device.dlms.meter if device.dlms is not None else Meter()


class DlmsPoller(LinePoller[DlmsLine]):
    """Owns one DLMS line: reads each meter's objects in one association, and backfills outages.

    The poller remembers, per meter, the time up to which its readings are published (the last
    good poll, or the last load profile row published). A meter that answers again after failed
    polls first has its load profile read from that time to now: each row is journaled as a
    reading stamped with the meter's own capture time, then the poll's reading as usual. A
    backfill cut short by silence fails the poll and leaves the mark where it was, so the next
    good poll asks for the same interval again: nothing is lost, and no row is published twice.
    A load profile the meter answers but that cannot be used (refused, garbled past the retries)
    is logged and noted on the device's health, and live reading goes on.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published_up_to: dict[str, int] = {}  # device id -> ms: readings published up to here

    async def _read(self, line: DlmsLine, slot: _Slot, polls: tuple[Poll, ...]) -> dict[str, wire.FieldValue]:
        assert isinstance(slot.profile, DlmsProfile)
        device, meter = slot.device, dlms_meter(slot.device)
        since = self.published_up_to.get(device.id)
        failed_before = self.board.record(device.id).consecutive_failures > 0
        if since is not None and failed_before and slot.profile.load_profile is not None:
            try:
                await self._backfill(line, slot, meter, since)
            except DeviceError as exc:
                if exc.state is wire.DeviceState.TIMEOUT:
                    raise  # silent again: the next good poll asks for the same interval
                # an answer that cannot be used would block every poll: say so, and read on live
                log.warning("device %s: load profile not backfilled: %s", device.id, exc)
                self.board.noted(device.id, f"load profile not backfilled: {exc}")
        fields = await line.read(meter, slot.profile)
        self.published_up_to[device.id] = max(now_ms(), self.published_up_to.get(device.id, 0))
        return fields

    async def _backfill(self, line: DlmsLine, slot: _Slot, meter: Meter, since: int) -> None:
        assert isinstance(slot.profile, DlmsProfile)
        rows = await line.read_load_profile(meter, slot.profile, since, now_ms())
        readings = [
            device_reading(
                slot.device,
                self.site,
                self.vehicles,
                measurement=slot.profile.measurement,
                ts=ts,
                fields=fields,
            )
            for ts, fields in rows
        ]
        if readings and self.journal.append(readings):
            self.published_up_to[slot.device.id] = rows[-1][0]
            self.board.published(slot.device.id, rows[-1][0])
        log.info("device %s: %d load profile rows backfilled after %d ms", slot.device.id, len(rows), since)

    def _left_out(self, line: DlmsLine, slot: _Slot) -> Mapping[str, Exception]:
        return line.field_errors(dlms_meter(slot.device))


def reset_field(counter: str) -> str:
    """The flag field set on a reading whose counter went down (kept within the 64-character name limit)."""
    return counter[: 64 - len(RESET_SUFFIX)] + RESET_SUFFIX


def significant_change(before: GpsFix, now: GpsFix) -> bool:
    """Whether a bus arrived at or left a stop (speed crossed standstill) or turned (course > 30°)."""
    if (before.speed_mps is None) != (now.speed_mps is None):
        return True
    if before.speed_mps is None or now.speed_mps is None:
        return False
    if (before.speed_mps < STANDING_MPS) != (now.speed_mps < STANDING_MPS):
        return True
    if before.course_deg is None or now.course_deg is None:
        return False
    moving = before.speed_mps >= TURNING_MPS and now.speed_mps >= TURNING_MPS
    return moving and abs((now.course_deg - before.course_deg + 180) % 360 - 180) > TURN_DEG


class GpsPoller:
    """Reads one GPS receiver and journals the vehicle's position every ``poll_s``, and at once on a change.

    A change is a stop arrival or departure, or a turn (``significant_change``): residents' apps
    see the bus stop at the stop and round the corner when it does, not up to ``poll_s`` later.
    The measurement, the fields and the sentences used come from the device's NMEA profile
    (``gps_nmea`` when the device names none).
    """

    def __init__(
        self,
        line: NmeaLine,
        device: Device,
        *,
        journal: Journal,
        board: HealthBoard,
        site: str,
        profile: NmeaProfile | None = None,
        vehicles: Vehicles | None = None,
    ) -> None:
        self.line = line
        self.device = device
        self.profile = profile or load_nmea_profile(device.profile or DEFAULT_GPS_PROFILE)
        self.journal = journal
        self.board = board
        self.site = site
        self.vehicles = vehicles or Vehicles()
        self.assembler = FixAssembler.for_profile(self.profile)
        self._last_ts: int | None = None
        self._last_sent: GpsFix | None = None
        self._last_line = time.monotonic()
        board.record(device.id)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read(), name=f"gps-read:{self.line.id}")
            tasks.create_task(self._watch_silence(), name=f"gps-silence:{self.line.id}")

    async def _read(self) -> None:
        while True:
            try:
                lines = read_lines(self.line.port, self.line.baudrate, discarded=self._discarded)
                async for line in lines:
                    self._last_line = time.monotonic()
                    self.take(line)
                self.end_of_stream()
            except OSError as exc:  # pyserial's SerialException is an OSError
                self.board.failed(
                    self.device.id, wire.DeviceState.TIMEOUT, f"cannot read {self.line.port}: {exc}"
                )
            await asyncio.sleep(GPS_REOPEN_S)

    def _discarded(self, why: str) -> None:
        """Bytes dropped from the line (no line end within the limit): a line fault, like a garbled line."""
        log.warning("%s: %s", self.device.id, why)
        self.board.noted(self.device.id, why)

    async def _watch_silence(self) -> None:
        """A receiver that stops talking is a timeout, even though no read ever fails."""
        while True:
            await asyncio.sleep(self.line.timeout / 2)
            silent = time.monotonic() - self._last_line
            record = self.board.record(self.device.id)
            if silent > self.line.timeout and record.state is not wire.DeviceState.TIMEOUT:
                self.board.failed(
                    self.device.id,
                    wire.DeviceState.TIMEOUT,
                    f"no NMEA on {self.line.port} for {silent:.0f} s",
                )

    def take(self, line: str) -> None:
        """Handle one line from the receiver: the fixes of the epochs it completes or ends."""
        try:
            results = self.assembler.feed(parse_sentence(line))
        except NmeaError as exc:
            self.board.noted(self.device.id, str(exc))
            return
        for result in results:
            self._handle(result)

    def end_of_stream(self) -> None:
        """The line closed: the epoch still open is complete as it is."""
        for result in self.assembler.flush():
            self._handle(result)

    def _handle(self, result: GpsFix | NoFix) -> None:
        device_id = self.device.id
        if isinstance(result, NoFix):
            record = self.board.record(device_id)
            if record.state is not wire.DeviceState.NO_FIX:
                self.board.failed(device_id, wire.DeviceState.NO_FIX, result.reason)
            return
        self.board.ok(device_id, result.ts_ms)
        if self._last_ts is not None and 0 <= result.ts_ms - self._last_ts < self.device.poll_s * 1000:
            sent = self._last_sent
            if result.ts_ms == self._last_ts or sent is None or not significant_change(sent, result):
                return
        self._last_ts, self._last_sent = result.ts_ms, result
        if self.journal.append([self.position(result)]):
            self.board.published(device_id, result.ts_ms)

    def position(self, fix: GpsFix) -> wire.Reading:
        return device_reading(
            self.device,
            self.site,
            self.vehicles,
            measurement=self.profile.measurement,
            ts=fix.ts_ms,
            fields=fix_fields(fix, self.profile),
        )
