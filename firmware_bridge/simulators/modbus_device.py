"""A Modbus field device that behaves like its firmware: the profile's register map, its word order,
its exception responses and its silences.

The simulator holds engineering values; the pymodbus datastore (``SimDevice``) only provides the
address space, and its ``action`` hook refreshes the registers from those values on every access.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import Final

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.simulator import DataType, SimData, SimDevice

from citygw.contract.wire import FieldValue
from firmware_bridge.errors import DecodeError
from firmware_bridge.profile import (
    BIT_TABLES,
    INTEGER_TYPES,
    AddressRange,
    Profile,
    RegisterSpec,
    Table,
    WordOrder,
    load_profile,
)
from firmware_bridge.registers import decode, encode

TABLE_OF_FUNCTION: Final[dict[int, Table]] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}
# How fast a counter without its own typical_rate grows per simulated hour, by unit.
_COUNTER_RATE_PER_HOUR: Final[dict[str, float]] = {"kWh": 7.5, "Wh": 7500.0, "m³": 0.4}
_DEFAULT_COUNTER_RATE: Final = 60.0
# Relative day/night swing of a value, by unit; anything else swings by _DEFAULT_SWING.
_SWING: Final[dict[str, float]] = {
    "V": 0.01,
    "mV": 0.01,
    "Hz": 0.001,
    "hPa": 0.002,
    "°C": 0.3,
    "%": 0.15,
    "pH": 0.02,
}
# What a device that mixes up its word order sends instead.
_SWAPPED: Final[dict[WordOrder, WordOrder]] = {"ABCD": "CDAB", "CDAB": "ABCD", "BADC": "DCBA", "DCBA": "BADC"}
_DEFAULT_SWING: Final = 0.35
_PEAK_HOUR: Final = 8.5  # morning rush hour: traffic pollution peaks


class ModbusDeviceSimulator:
    """One simulated device (one unit id) answering the registers of its profile."""

    def __init__(
        self,
        profile: Profile | str,
        *,
        unit: int = 1,
        values: Mapping[str, FieldValue] | None = None,
        animate: bool = False,
        time_scale: float = 1.0,
        start_s: float | None = None,
    ) -> None:
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        if not 0 <= unit <= 247:
            raise ValueError(f"unit id {unit} is outside 0..247")
        self.unit = unit
        self.animate = animate
        self.time_scale = time_scale
        # Fault knobs: no answer at all, a Modbus exception code for every request, (on a serial
        # line) answers with a wrong CRC, answers after ``delay`` seconds, 32-bit values sent in
        # the other word order (a misconfigured device). ``reboot()`` is the last one.
        self.offline = False
        self.crc_error = False
        self.delay = 0.0
        self.word_swapped = False
        # Function codes the firmware does not implement (answered 01), e.g. {6}: a device that takes
        # FC16 only. A register whose profile says write_function 16 refuses FC06 in any case.
        self.refused_functions: set[int] = set()
        # A value that follows a written setpoint (a lamp's actual level) reaches it this many
        # seconds after the write, moving linearly, as a DALI lamp fades.
        self.fade_s = 0.0
        # follower field -> (value at the write, setpoint, monotonic time of the write)
        self._ramps: dict[str, tuple[float, float, float]] = {}
        self._booting_until = 0.0
        # Registers the firmware refuses with exception 02 although the profile does not say so.
        self.holes: list[AddressRange] = []
        self._exception_code: ExcCodes | None = None
        # The device's own time (Unix s) now: ``start_s`` puts an animated device at a chosen time of
        # day (a benchmark that should not depend on when it runs); default the wall clock.
        self._clock_origin = (time.time() if start_s is None else start_s, time.monotonic())
        # Every request that reached this device: (function code, address, count).
        self.requests: list[tuple[int, int, int]] = []
        self._values: dict[str, FieldValue] = {s.field: _default(s) for s in self.profile.registers}
        self._anchors: dict[str, tuple[FieldValue, float]] = {}
        for spec in self.profile.registers:
            if spec.follows is not None:
                self._values[spec.field] = self._values[spec.follows]
        for field, value in (values or {}).items():
            self.set(field, value)
        now = self._sim_time()
        for field, value in self._values.items():
            self._anchors.setdefault(field, (value, now))
        self._start_values = dict(self._values)

    @property
    def exception_code(self) -> ExcCodes | None:
        """When set, every request is answered with this Modbus exception code."""
        return self._exception_code

    @exception_code.setter
    def exception_code(self, code: int | None) -> None:
        self._exception_code = None if code is None else ExcCodes(code)

    def set(self, field: str, value: FieldValue) -> None:
        """Give ``field`` a new engineering value (ValueError when its register cannot hold it)."""
        spec = self.profile.register(field)
        encode(spec, value)
        now = self._sim_time()
        self._values[field] = value
        self._anchors[field] = (value, now)
        for follower in self.profile.registers:
            if follower.follows == field:
                self._values[follower.field] = value
                self._anchors[follower.field] = (value, now)

    def command(self, field: str, value: FieldValue) -> None:
        """A setpoint written on the wire: its followers reach it over ``fade_s`` (at once when 0)."""
        followers = [s.field for s in self.profile.registers if s.follows == field]
        if not self.fade_s or not followers or not isinstance(value, int | float) or isinstance(value, bool):
            self.set(field, value)
            return
        self._values[field] = value
        self._anchors[field] = (value, self._sim_time())
        for follower in followers:
            start = self._values[follower]
            if isinstance(start, int | float) and not isinstance(start, bool):
                self._ramps[follower] = (float(start), float(value), time.monotonic())

    def fading(self, field: str) -> bool:
        """True while ``field`` is still moving towards its setpoint."""
        self._follow()
        return field in self._ramps

    def _follow(self) -> None:
        """Move the followers of recently written setpoints along their fades."""
        now = time.monotonic()
        for field, (start, target, began) in list(self._ramps.items()):
            done = (now - began) / self.fade_s if self.fade_s else 1.0
            if done >= 1:
                del self._ramps[field]
            step = (target - start) * min(done, 1.0)
            if self.profile.register(field).type in INTEGER_TYPES:
                # A fading level reaches its target only when the fade ends.
                self._values[field] = round(start) + math.trunc(step)
            else:
                self._values[field] = start + step

    def load_image(self, table: Table, words: Mapping[int, int]) -> None:
        """Hold these registers (bits as 0/1), as captured from a real device, decoded into values."""
        specs = [s for s in self.profile.registers if s.table == table]
        stray = [a for a in words if not any(s.address <= a <= s.end for s in specs)]
        if stray:
            raise ValueError(f"{self.profile.model} has no {table} field at address(es) {stray}")
        for spec in specs:
            addresses = range(spec.address, spec.end + 1)
            if all(a in words for a in addresses):
                self.set(spec.field, decode(spec, [words[a] for a in addresses]))

    def reboot(self, *, downtime: float = 0.0) -> None:
        """Restart the device: silent for ``downtime`` seconds, counters from 0, the rest as at start."""
        now = self._sim_time()
        for spec in self.profile.registers:
            value = 0 if spec.counter else self._start_values[spec.field]
            self._values[spec.field] = value
            self._anchors[spec.field] = (value, now)
        self._booting_until = time.monotonic() + downtime

    @property
    def booting(self) -> bool:
        """True while the device is still starting after ``reboot``."""
        return time.monotonic() < self._booting_until

    def get(self, field: str) -> FieldValue:
        """The engineering value the device currently holds."""
        return self._values[self.profile.register(field).field]

    def expected(self) -> dict[str, FieldValue]:
        """What a correct reader decodes now (float32 rounding and scale steps included)."""
        return {s.field: decode(s, encode(s, self._values[s.field])) for s in self.profile.select()}

    def image(self, table: Table) -> dict[int, int]:
        """The device's current registers (or bits as 0/1) of one table, by address."""
        self._follow()
        words: dict[int, int] = {}
        for spec in self.profile.registers:
            # A write-only register (a setpoint) is never reported: it reads as 0.
            if spec.table == table and spec.readable:
                sent = spec
                if self.word_swapped and spec.register_count > 1 and spec.type != "string":
                    sent = spec.model_copy(update={"order": _SWAPPED[spec.order]})
                for i, word in enumerate(encode(sent, self._values[spec.field])):
                    # Masked values share their register with others: their bits add up.
                    words[spec.address + i] = words.get(spec.address + i, 0) | word
        return words

    def advance(self) -> None:
        """Move animated values to the present (counters grow, pollution follows the day)."""
        if not self.animate:
            return
        now = self._sim_time()
        for spec in self.profile.registers:
            if not _animated(spec):
                continue
            base, then = self._anchors[spec.field]
            if isinstance(base, bool | str):
                continue
            if spec.counter:
                rate = spec.typical_rate
                if rate is None:
                    rate = _COUNTER_RATE_PER_HOUR.get(spec.unit or "", _DEFAULT_COUNTER_RATE)
                value = base + rate * (now - then) / 3600
            else:
                swing = _SWING.get(spec.unit or "", _DEFAULT_SWING if spec.unit else 0.02)
                value = base * _diurnal(now, swing) / _diurnal(then, swing)
                value = _clamp(spec, value)
            if spec.type in INTEGER_TYPES and spec.scale == 1:
                # A counter shows only what has fully happened: 41.9 taps are 41.
                value = math.floor(value) if spec.counter else round(value)
            self._values[spec.field] = value

    def sim_device(self) -> SimDevice:
        """This device as a pymodbus datastore device (address space plus access hook)."""
        blocks = (self._block("coil"), self._block("discrete"), self._block("holding"), self._block("input"))
        return SimDevice(id=self.unit, simdata=blocks, action=self.on_access)

    async def on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus datastore hook: fault knobs, address checks, writes, fresh registers for reads."""
        self.requests.append((function_code, address, count))
        if self.offline or self.booting:
            # The server answers NoSuchId with silence (ignore_missing_devices), like a dead device.
            raise NoSuchIdException(f"unit {self.unit} is offline")
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.exception_code is not None:
            return self.exception_code
        table = TABLE_OF_FUNCTION.get(function_code)
        refused = function_code in self.refused_functions or self._takes_fc16_only(function_code, address)
        if table is None or refused:
            return ExcCodes.ILLEGAL_FUNCTION
        if not any(s.table == table for s in self.profile.registers) or any(
            r.table == table and address <= r.end and r.start <= address + count - 1
            for r in [*self.profile.forbidden, *self.holes]
        ):
            return ExcCodes.ILLEGAL_ADDRESS
        if set_values is not None:
            return self._write(table, address, [int(v) for v in set_values])
        self.advance()
        self.fill(table, start_address, registers)
        return None

    def fill(self, table: Table, start_address: int, registers: list[int]) -> None:
        """Put the device's ``image`` of ``table`` into a pymodbus datastore block."""
        image = self.image(table)
        if table in BIT_TABLES:
            # Bit blocks are packed 16 to a register, bit 0 first, from address start_address*16.
            first = start_address * 16
            for i in range(len(registers) - 1):
                registers[i] = sum(image.get(first + 16 * i + b, 0) << b for b in range(16))
        else:
            for i in range(len(registers) - 1):
                registers[i] = image.get(start_address + i, 0)

    def _takes_fc16_only(self, function_code: int, address: int) -> bool:
        """FC06 to a register its profile writes with FC16 (the firmware has no FC06 for it)."""
        if function_code != 6:
            return False
        holding = (s for s in self.profile.registers if s.table == "holding" and s.address == address)
        spec = next(holding, None)
        return spec is not None and self.profile.write_function_of(spec) == 16

    def _write(self, table: Table, address: int, words: list[int]) -> ExcCodes | None:
        touched: dict[str, RegisterSpec] = {}
        for a in range(address, address + len(words)):
            spec = next(
                (s for s in self.profile.registers if s.table == table and s.address <= a <= s.end), None
            )
            if spec is None or not spec.writable:
                return ExcCodes.ILLEGAL_ADDRESS
            touched[spec.field] = spec
        image = self.image(table)
        for a, word in enumerate(words, start=address):
            image[a] = word
        new_values: dict[str, FieldValue] = {}
        for field, spec in touched.items():
            try:
                value = decode(spec, [image[a] for a in range(spec.address, spec.end + 1)])
            except DecodeError:
                return ExcCodes.ILLEGAL_VALUE
            if not spec.allows(value):
                return ExcCodes.ILLEGAL_VALUE
            new_values[field] = value
        for field, value in new_values.items():
            self.command(field, value)
        return None

    def extent(self, table: Table) -> int:
        """How many addresses of ``table`` the device has (0: none, it refuses the table)."""
        return max((s.end + 1 for s in self.profile.registers if s.table == table), default=0)

    def _block(self, table: Table) -> list[SimData]:
        size = self.extent(table)
        if table in BIT_TABLES:
            size = max(size, 1)
            return [SimData(address=0, values=[False] * (16 * math.ceil(size / 16)), datatype=DataType.BITS)]
        if not size:
            return [SimData(address=0, datatype=DataType.INVALID)]
        return [SimData(address=0, count=size, values=0, datatype=DataType.REGISTERS)]

    def _sim_time(self) -> float:
        wall, mono = self._clock_origin
        return wall + (time.monotonic() - mono) * self.time_scale


def gateway_placeholder(*, silent: bool = False) -> SimDevice:
    """Unit 0 of a TCP gateway: any unit id nobody simulates gets 0x0B, as real gateways answer.

    ``silent``: no answer at all, as on an RS-485 bus behind a serial server that passes frames through.
    """

    async def absent(*_: object) -> ExcCodes | None:
        if silent:
            raise NoSuchIdException("no such unit on the bus")
        return ExcCodes.GATEWAY_NO_RESPONSE

    return SimDevice(
        id=0, simdata=[SimData(address=0, count=65535, values=0, datatype=DataType.REGISTERS)], action=absent
    )


def _default(spec: RegisterSpec) -> FieldValue:
    if spec.typical is not None:
        return spec.typical
    if spec.type == "bit":
        return False
    if spec.type == "string":
        return ""
    return 0 if spec.is_integer else 0.0


def _animated(spec: RegisterSpec) -> bool:
    """Measurements move by themselves; setpoints, status words and text stay as they are set."""
    if spec.writable or spec.follows is not None or spec.mask is not None or spec.type in ("bit", "string"):
        return False
    return spec.counter or spec.type not in INTEGER_TYPES or spec.unit is not None


def _clamp(spec: RegisterSpec, value: float) -> float:
    if spec.min is not None:
        value = max(value, spec.min)
    if spec.max is not None:
        value = min(value, spec.max)
    return value


def _diurnal(t: float, swing: float) -> float:
    hour = (t % 86400) / 3600
    return 1 + swing * math.cos(2 * math.pi * (hour - _PEAK_HOUR) / 24)
