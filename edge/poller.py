"""Per-line polling: one owner task per line turns what devices say into journaled Readings.

A Modbus line carries one request at a time, so one task owns it and serves its devices
from a schedule: each device every ``poll_s`` at a phase taken from its id (so a hundred
meters do not all fire at :00), and a device that keeps failing backs off so a dead meter
does not steal the line from its neighbours. A GPS line is read continuously and yields
at most one position per vehicle every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from citygw import wire
from edge.config import VEHICLE_MEASUREMENT, Device, NmeaLine
from edge.journal import Journal
from firmware_bridge.errors import DeviceError
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.nmea import FixAssembler, GpsFix, NmeaError, NoFix, parse_sentence, read_lines
from firmware_bridge.profile import Poll, Profile

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
# Slow registers (totals, configuration) are read on the first poll and every this many polls.
SLOW_EVERY = 10
GPS_REOPEN_S = 2.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def phase(device_id: str, period: float) -> float:
    """A stable offset in [0, period) from the device id (crc32: the same on every boot)."""
    return (zlib.crc32(device_id.encode()) / 2**32) * period


def backoff(period: float, consecutive_failures: int) -> float:
    """Delay before retrying a failing device: doubles per failure, never beyond 60 s or below its period."""
    return max(period, min(MAX_BACKOFF_S, period * 2.0 ** min(consecutive_failures, 16)))


@dataclass
class DeviceRecord:
    """What the agent knows about one device's health."""

    state: wire.DeviceState = wire.DeviceState.UNKNOWN
    last_ok: int | None = None
    error: str | None = None
    reads: int = 0
    failures: int = 0
    consecutive_failures: int = 0

    def snapshot(self) -> wire.DeviceHealth:
        return wire.DeviceHealth(
            state=self.state,
            last_ok=self.last_ok,
            error=self.error[:512] if self.error else None,
            reads=self.reads,
            failures=self.failures,
        )


@dataclass
class HealthBoard:
    """Per-device health, written by the pollers and read by the health publisher."""

    devices: dict[str, DeviceRecord] = field(default_factory=dict)

    def record(self, device_id: str) -> DeviceRecord:
        return self.devices.setdefault(device_id, DeviceRecord())

    def ok(self, device_id: str, at_ms: int) -> None:
        record = self.record(device_id)
        record.state = wire.DeviceState.OK
        record.last_ok = at_ms
        record.error = None
        record.reads += 1
        record.consecutive_failures = 0

    def failed(self, device_id: str, state: wire.DeviceState, error: str) -> None:
        record = self.record(device_id)
        record.state = state
        record.error = error
        record.failures += 1
        record.consecutive_failures += 1

    def noted(self, device_id: str, error: str) -> None:
        """A problem that does not change the device's state (a garbled NMEA line)."""
        record = self.record(device_id)
        record.error = error
        record.failures += 1

    def snapshot(self) -> dict[str, wire.DeviceHealth]:
        return {device_id: record.snapshot() for device_id, record in self.devices.items()}


def reading_tags(device: Device, site: str) -> dict[str, str]:
    tags = {**device.tags, "site": site}
    if device.vehicle is not None:
        tags["vehicle"] = device.vehicle.id
        tags["vehicle_label"] = device.vehicle.label
        if device.vehicle.route is not None:
            tags["route"] = device.vehicle.route
    return tags


def _finite(values: Mapping[str, wire.FieldValue]) -> dict[str, wire.FieldValue]:
    """Drop NaN and infinity (a sensor's "no value"): the wire contract refuses them."""
    return {k: v for k, v in values.items() if not (isinstance(v, float) and not math.isfinite(v))}


@dataclass
class _Slot:
    device: Device
    profile: Profile
    tags: dict[str, str]
    polls: int = 0


class ModbusPoller:
    """Owns one Modbus line and polls its devices on their schedules."""

    def __init__(
        self,
        line: ModbusLine,
        devices: list[tuple[Device, Profile]],
        *,
        journal: Journal,
        board: HealthBoard,
        site: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.line = line
        self.journal = journal
        self.board = board
        self._clock = clock
        self._slots = [_Slot(device, profile, reading_tags(device, site)) for device, profile in devices]
        for slot in self._slots:
            board.record(slot.device.id)

    async def run(self) -> None:
        start = self._clock()
        # (when due, tie-breaker, slot index)
        due = [(start + phase(s.device.id, s.device.poll_s), i, i) for i, s in enumerate(self._slots)]
        heapq.heapify(due)
        while due:
            when, _, index = heapq.heappop(due)
            delay = when - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            slot = self._slots[index]
            ok = await self.poll(slot)
            period = slot.device.poll_s
            if ok:
                # Keep the cadence; if the line fell behind by a whole period, skip rather than burst.
                next_due = when + period
                if next_due < self._clock():
                    next_due = self._clock() + period
            else:
                failures = self.board.record(slot.device.id).consecutive_failures
                next_due = self._clock() + backoff(period, failures - 1)
            heapq.heappush(due, (next_due, index, index))

    async def poll(self, slot: _Slot) -> bool:
        """Read one device once; True when a reading was journaled."""
        device = slot.device
        polls: tuple[Poll, ...] = ("fast", "slow") if slot.polls % SLOW_EVERY == 0 else ("fast",)
        slot.polls += 1
        try:
            values = await self.line.read(device.unit or 0, slot.profile, polls)
        except DeviceError as exc:
            self.board.failed(device.id, exc.state, str(exc) or type(exc).__name__)
            log.debug("%s: %s", device.id, exc)
            return False
        at = now_ms()
        fields = _finite(values)
        if not fields:
            self.board.failed(device.id, wire.DeviceState.DECODE_ERROR, "no finite value in the answer")
            return False
        reading = wire.Reading(
            device=device.id, measurement=slot.profile.measurement, ts=at, fields=fields, tags=slot.tags
        )
        self.journal.append([reading])
        self.board.ok(device.id, at)
        return True


class GpsPoller:
    """Reads one GPS receiver and journals the vehicle's position at most every ``poll_s``."""

    def __init__(
        self, line: NmeaLine, device: Device, *, journal: Journal, board: HealthBoard, site: str
    ) -> None:
        self.line = line
        self.device = device
        self.journal = journal
        self.board = board
        self.tags = reading_tags(device, site)
        self.assembler = FixAssembler()
        self._last_ts: int | None = None
        self._last_line = time.monotonic()
        board.record(device.id)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read(), name=f"gps-read:{self.line.id}")
            tasks.create_task(self._watch_silence(), name=f"gps-silence:{self.line.id}")

    async def _read(self) -> None:
        while True:
            try:
                async for line in read_lines(self.line.port, self.line.baudrate):
                    self._last_line = time.monotonic()
                    self.take(line)
            except OSError as exc:  # pyserial's SerialException is an OSError
                self.board.failed(
                    self.device.id, wire.DeviceState.TIMEOUT, f"cannot read {self.line.port}: {exc}"
                )
            await asyncio.sleep(GPS_REOPEN_S)

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
        """Handle one line from the receiver."""
        device_id = self.device.id
        try:
            result = self.assembler.feed(parse_sentence(line))
        except NmeaError as exc:
            self.board.noted(device_id, str(exc))
            return
        if result is None:
            return
        if isinstance(result, NoFix):
            record = self.board.record(device_id)
            if record.state is not wire.DeviceState.NO_FIX:
                self.board.failed(device_id, wire.DeviceState.NO_FIX, result.reason)
            return
        self.board.ok(device_id, result.ts_ms)
        if self._last_ts is not None and 0 <= result.ts_ms - self._last_ts < self.device.poll_s * 1000:
            return
        self._last_ts = result.ts_ms
        self.journal.append([self.position(result)])

    def position(self, fix: GpsFix) -> wire.Reading:
        optional = {
            "speed_mps": fix.speed_mps,
            "course_deg": fix.course_deg,
            "fix_quality": fix.fix_quality,
            "satellites": fix.satellites,
            "hdop": fix.hdop,
        }
        fields: dict[str, wire.FieldValue] = {"lat": fix.lat, "lon": fix.lon}
        fields.update({k: v for k, v in optional.items() if v is not None})
        return wire.Reading(
            device=self.device.id,
            measurement=VEHICLE_MEASUREMENT,
            ts=fix.ts_ms,
            fields=fields,
            tags=self.tags,
        )
