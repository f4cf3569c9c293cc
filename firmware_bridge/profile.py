"""Device profiles: a device model as data, one YAML file per model.

A ``modbus`` profile says which registers hold which field, how to decode them and how often
they are worth polling; an ``nmea`` profile (a GPS receiver) names the fields a fix yields and
the sentences used; an ``mbus`` profile (an M-Bus meter) maps data records, found by DIF/VIF,
storage number, tariff and subunit, to fields; an ``opcua`` profile names the nodes of an object
(a pump station) that hold each field; a ``lorawan`` profile maps the object a network server's
codec decoded (JSON paths) to fields and says how commands are encoded as downlinks; a ``dlms``
profile (a DLMS/COSEM electricity meter) maps COSEM objects, found by OBIS code, to fields and names
the load profile that backfills an outage. Adding a device model is adding a file under
``profiles/``, not code.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeGuard, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from citygw.contract.wire import NAME_PATTERN
from firmware_bridge.roles import LampBit, Role, role_problem

PROFILES_DIR = Path(__file__).parent / "profiles"

Table = Literal["coil", "discrete", "holding", "input"]
DataType = Literal["bit", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "string"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Poll = Literal["fast", "slow", "on_demand"]
# How a single holding register is written: FC06 (write single register) or FC16 (write multiple
# registers, with one); some devices refuse FC06. Values of several registers always go as FC16.
WriteFunction = Literal[6, 16]
# Where a register map was checked: against the vendor's published document, against a capture of
# a real device, or not at all (a map modelled on typical devices of a class).
Verified = Literal["datasheet", "capture", "modelled"]
Protocol = Literal["modbus", "nmea", "mbus", "opcua", "lorawan", "dlms"]
NmeaSentence = Literal["RMC", "GGA", "GLL", "VTG", "GSA", "ZDA"]
POSITION_SENTENCES: tuple[NmeaSentence, ...] = ("RMC", "GGA", "GLL")
# What a GPS fix yields (``firmware_bridge.nmea.GpsFix``, without its time).
NMEA_FIX_FIELDS: frozenset[str] = frozenset(
    {"lat", "lon", "speed_mps", "course_deg", "fix_quality", "satellites", "hdop", "altitude_m"}
)

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
WRITABLE_TABLES: frozenset[str] = frozenset({"coil", "holding"})
INTEGER_TYPES: frozenset[str] = frozenset({"u16", "i16", "u32", "i32", "u64", "i64"})
FLOAT_TYPES: frozenset[str] = frozenset({"f32", "f64"})
UNSIGNED_TYPES: frozenset[str] = frozenset({"u16", "u32", "u64"})
REGISTERS_PER_TYPE: dict[str, int] = {
    "bit": 1,
    "u16": 1,
    "i16": 1,
    "u32": 2,
    "i32": 2,
    "u64": 4,
    "i64": 4,
    "f32": 2,
    "f64": 4,
}
MAX_ADDRESS = 0xFFFF
ON_CHANGE = "on_change"
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def _address(value: Any) -> Any:
    """Accept ``0x1A`` written as a string (JSON configs) as well as YAML's own hex integers."""
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return value
    return value


Address = Annotated[int, BeforeValidator(_address), Field(ge=0, le=MAX_ADDRESS)]


class DeadbandError(ValueError):
    """A deadband setting that cannot be used: ``what`` is wrong, ``fix`` says how to write it."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{what}: {fix}")
        self.what, self.fix = what, fix


@dataclass(frozen=True)
class ReportRule:
    """When a field's new value is worth publishing (report by exception), against the last published one.

    ``absolute``: it moved more than ``amount`` (the field's unit); ``percent``: more than ``amount``
    percent of the last published value (any move from 0); ``change``: it is not equal (any type).
    """

    kind: Literal["absolute", "percent", "change"]
    amount: float = 0.0

    def moved(self, before: object, now: object) -> bool:
        if self.kind == "change" or not _number(before) or not _number(now):
            return before != now
        limit = self.amount if self.kind == "absolute" else abs(before) * self.amount / 100
        # Exactly the deadband is not beyond it, whatever float rounding made of the difference.
        return abs(now - before) > limit + 1e-9 * max(abs(before), abs(now))


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def report_rule(setting: object) -> ReportRule:
    """The rule of a deadband setting: a number (absolute), ``"N%"`` (percent) or ``on_change``.

    ValueError saying how to write it otherwise (pydantic turns it into a named field error).
    """
    how = (
        f"write a number in the field's unit (0.5), a percentage of the last published value (5%) "
        f"or {ON_CHANGE}"
    )
    if isinstance(setting, bool) or not isinstance(setting, int | float | str):
        raise DeadbandError(f"{setting!r} is no deadband", how)
    if isinstance(setting, int | float):
        if not math.isfinite(setting) or setting < 0:
            raise DeadbandError(
                f"deadband {setting} is negative or not finite", "use 0 or more (0: publish any change)"
            )
        return ReportRule("absolute", float(setting))
    if setting == ON_CHANGE:
        return ReportRule("change")
    match = _PERCENT.match(setting)
    if match is None:
        raise DeadbandError(f"{setting!r} is no deadband", how)
    return ReportRule("percent", float(match.group(1)))


def _deadband_setting(value: Any) -> Any:
    report_rule(value)  # raises with the fix
    return value


DeadbandSetting = Annotated[float | str, BeforeValidator(_deadband_setting)]
"""How a field is reported by exception: a number (absolute deadband), ``"N%"`` or ``on_change``."""


class ProfileError(ValueError):
    """A profile file cannot be used; the message names the file, the field and the fix."""


class RegisterSpec(BaseModel):
    """Where one field of a device lives and how to turn its registers into an engineering value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(pattern=NAME_PATTERN)
    table: Table
    address: Address
    type: DataType
    order: WordOrder = "ABCD"
    count: int | None = Field(default=None, ge=1, le=125, description="registers of a string")
    scale: float = 1
    offset: float = 0
    unit: str | None = None
    poll: Poll = "fast"
    writable: bool = False
    readable: bool = Field(
        default=True,
        description="false for a write-only register (a setpoint the device never reports): never read",
    )
    # The device's valid range: writes outside it are refused, reads outside it are a DecodeError.
    min: float | None = None
    max: float | None = None
    mask: int | None = Field(
        default=None, ge=1, description="bits of the register that hold the value, after shifting right"
    )
    shift: int = Field(default=0, ge=0, le=63, description="bits to shift right before masking")
    counter: bool = Field(
        default=False, description="only grows (energy, volume, taps); a drop means a reset or a wrap"
    )
    typical: bool | int | float | str | None = Field(
        default=None, description="a plausible value, the simulator's starting point"
    )
    typical_rate: float | None = Field(
        default=None, ge=0, description="how much a counter grows per hour, for the simulator"
    )
    follows: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="the writable field this value follows (an actual level following its setpoint)",
    )
    deadband: DeadbandSetting | None = Field(
        default=None,
        description="report by exception: publish when the value moved more than this (in its unit, or "
        "N% of the last published value); used by devices given a heartbeat_s",
    )
    report: Literal["on_change"] | None = Field(
        default=None, description="report by exception: publish whenever the value changed (status, codes)"
    )
    write_function: WriteFunction | None = Field(
        default=None,
        description="function code of a write to this single holding register (6 or 16); "
        "default the profile's write_function",
    )
    description: str = ""
    role: Role | None = Field(
        default=None, description="what the field measures, from the vocabulary in docs/profiles.md"
    )
    channel: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="which of the device's things the role describes: a lamp (lamp0), a phase (l1), inlet",
    )
    flags: dict[int, LampBit] | None = Field(
        default=None, description="what each bit (0 = lowest) of a status word means (lamp_status)"
    )

    @model_validator(mode="after")
    def _check(self) -> RegisterSpec:
        if (self.type == "bit") != (self.table in BIT_TABLES):
            if self.type == "bit":
                raise ValueError(f"type bit needs table coil or discrete, not {self.table}")
            raise ValueError(f"table {self.table} holds single bits: use type bit, not {self.type}")
        if self.type == "string" and self.count is None:
            raise ValueError("type string needs count: the number of registers it occupies")
        if self.type != "string" and self.count is not None:
            raise ValueError(f"count is only for strings; a {self.type} has a fixed size, remove count")
        if self.scale == 0:
            raise ValueError("scale 0 would turn every value into the offset; use a non-zero scale")
        if self.writable and self.table not in WRITABLE_TABLES:
            raise ValueError(f"table {self.table} is read-only on the wire: set writable false")
        if not self.readable and not self.writable:
            raise ValueError("a register that is neither readable nor writable is of no use: remove it")
        if self.mask is not None or self.shift:
            if self.type not in UNSIGNED_TYPES:
                raise ValueError(f"mask and shift need an unsigned type (u16, u32, u64), not {self.type}")
            if self.writable:
                raise ValueError(
                    "a masked value shares its register: it cannot be writable, set writable false"
                )
            bits = 16 * self.register_count
            if (self.bits >> bits) != 0:
                raise ValueError(f"mask {self.mask} shifted by {self.shift} does not fit in a {self.type}")
        if self.counter and self.type in ("bit", "string"):
            raise ValueError(f"a {self.type} cannot count: remove counter")
        if self.deadband is not None:
            problem = deadband_problem(self, self.deadband)
            if problem:
                raise problem
            if self.report is not None:
                raise ValueError("deadband and report: on_change exclude each other: keep one")
        if self.typical_rate is not None and not self.counter:
            raise ValueError("typical_rate is for counters: set counter true or remove typical_rate")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}: swap them")
        if self.write_function is not None:
            if not self.writable or self.table != "holding":
                raise ValueError("write_function is for writable holding registers: remove it")
            if self.write_function == 6 and self.register_count > 1:
                raise ValueError(
                    f"FC06 writes one register and a {self.type} takes {self.register_count}: "
                    "use write_function 16 or remove it"
                )
        end = self.address + self.register_count - 1
        if end > MAX_ADDRESS:
            raise ValueError(
                f"ends at address {end} (0x{end:X}), beyond 65535: check the address and the type"
            )
        return self

    @model_validator(mode="after")
    def _check_role(self) -> RegisterSpec:
        """The role fits the field: a unit the role takes, flags and max where it needs them."""
        problem = role_problem(self.role, self.unit, self.flags, self.max, 16 * self.register_count)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def register_count(self) -> int:
        """How many registers (or bits) the value occupies."""
        return self.count if self.count is not None else REGISTERS_PER_TYPE[self.type]

    @property
    def end(self) -> int:
        """Last address the value occupies (inclusive)."""
        return self.address + self.register_count - 1

    @property
    def bits(self) -> int:
        """The register bits the value occupies (all of them when the value has no mask)."""
        mask = self.mask if self.mask is not None else (1 << (16 * self.register_count)) - 1
        return mask << self.shift

    @property
    def is_integer(self) -> bool:
        """True when the engineering value is an int: an unscaled integer register holding a counter
        or a code (no unit). A physical quantity is always a float, whatever the register type, so
        two device models reporting the same field agree on its type (InfluxDB keeps one type per field).
        """
        plain = self.type in INTEGER_TYPES and self.scale == 1 and self.offset == 0
        return plain and (self.counter or self.unit is None)

    @property
    def report_rule(self) -> ReportRule | None:
        """How the profile reports this field by exception (counters: any change); None if it says nothing."""
        if self.counter or self.report == ON_CHANGE:
            return ReportRule("change")
        return None if self.deadband is None else report_rule(self.deadband)

    def allows(self, value: object) -> bool:
        """True when a numeric value lies within min..max (values of other kinds are not limited)."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            return True
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    @property
    def decimals(self) -> int | None:
        """Decimal places implied by scale and offset, e.g. 1 for scale 0.1; None for a float register."""
        if self.type not in INTEGER_TYPES:
            return None
        places = [-int(Decimal(str(x)).normalize().as_tuple().exponent) for x in (self.scale, self.offset)]
        return max(0, *places)


def deadband_problem(
    spec: RegisterSpec | MbusField | DlmsField, setting: float | str
) -> DeadbandError | None:
    """Why ``setting`` cannot report ``spec`` by exception (a deadband on text, bit or counter), or None."""
    if report_rule(setting).kind == "change":
        return None
    if spec.counter:
        return DeadbandError(
            f"{spec.field} is a counter, published whenever it changes", "remove its deadband"
        )
    if spec.type in ("bit", "string"):
        return DeadbandError(f"a {spec.type} has no deadband", f"use {ON_CHANGE} for {spec.field}")
    return None


class SerialSettings(BaseModel):
    """The device's factory serial settings (a site config may override them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1


class AddressRange(BaseModel):
    """Registers a device answers badly or not at all: never read across them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: Table
    start: Address
    end: Address
    reason: str = ""

    @model_validator(mode="after")
    def _check(self) -> AddressRange:
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}: swap them")
        return self


class DeviceTiming(BaseModel):
    """What a device's firmware needs of the line's timing beyond the RTU defaults (milliseconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    response_timeout_ms: float | None = Field(
        default=None,
        gt=0,
        le=60_000,
        description="how long to wait for the device's answer; replaces the line's timeout for it",
    )
    guard_ms: float = Field(
        default=0,
        ge=0,
        le=1000,
        description="silence the device needs on the line before a frame addressed to it",
    )
    settle_ms: float = Field(
        default=0,
        ge=0,
        le=600_000,
        description="how long after a write the device's reported value may take to follow it (a fade)",
    )
    connect_delay_s: float = Field(
        default=0,
        ge=0,
        le=60,
        description="TCP: wait this long after connecting before the first request (gateways that drop "
        "the first frame); ignored on a serial port",
    )
    close_between_polls: bool = Field(
        default=False,
        description="TCP: close the connection after each poll (devices with a single connection slot); "
        "ignored on a serial port",
    )

    @property
    def response_timeout(self) -> float | None:
        """The response timeout in seconds, None when the device takes the line's."""
        return None if self.response_timeout_ms is None else self.response_timeout_ms / 1000

    @property
    def guard(self) -> float:
        """The guard interval in seconds."""
        return self.guard_ms / 1000

    @property
    def settle(self) -> float:
        """The settle time in seconds."""
        return self.settle_ms / 1000


class Provenance(BaseModel):
    """Where a profile's map comes from and how far it was checked; every profile must say it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        min_length=1,
        description="the vendor document (title, version or date, table or page), or why there is none",
    )
    verified: Verified = Field(
        description="datasheet: checked against the vendor document; capture: against a real device; "
        "modelled: modelled on typical devices of the class, not checked"
    )


class Profile(Provenance):
    """The register map of one device model."""

    model: str = Field(pattern=NAME_PATTERN)
    vendor: str
    description: str = ""
    measurement: str = Field(pattern=NAME_PATTERN)
    protocol: Literal["modbus"] = "modbus"
    serial: SerialSettings = SerialSettings()
    word_order: WordOrder = Field(default="ABCD", description="order of registers that do not set their own")
    max_registers: int = Field(default=125, ge=1, le=125, description="largest read the device accepts")
    write_function: WriteFunction = Field(
        default=6,
        description="function code of a single-register write (6, or 16 for devices that refuse FC06); "
        "a register's own write_function wins",
    )
    registers: list[RegisterSpec] = Field(min_length=1)
    forbidden: list[AddressRange] = Field(default_factory=list)
    timing: DeviceTiming = DeviceTiming()

    @model_validator(mode="before")
    @classmethod
    def _default_order(cls, data: Any) -> Any:
        """A register without ``order`` gets the profile's ``word_order``."""
        if isinstance(data, dict) and isinstance(data.get("registers"), list):
            order = data.get("word_order", "ABCD")
            data = {
                **data,
                "registers": [
                    {"order": order, **r} if isinstance(r, dict) and "order" not in r else r
                    for r in data["registers"]
                ],
            }
        return data

    @model_validator(mode="after")
    def _check(self) -> Profile:
        seen: set[str] = set()
        for spec in self.registers:
            if spec.field in seen:
                raise ValueError(f"field {spec.field} appears twice: give each register its own field name")
            seen.add(spec.field)
        for table in ("coil", "discrete", "holding", "input"):
            specs = sorted((s for s in self.registers if s.table == table), key=lambda s: s.address)
            for before, after in itertools.combinations(specs, 2):
                if after.address <= before.end and not _share_register(before, after):
                    raise ValueError(
                        f"{after.field} at {table} {after.address} overlaps {before.field} "
                        f"({before.address}..{before.end}): fix one of the addresses or types"
                    )
        for spec in self.registers:
            if spec.follows is not None and spec.follows not in seen:
                raise ValueError(f"{spec.field} follows {spec.follows}, which is not a field of this profile")
            for bad in self.forbidden:
                if bad.table == spec.table and spec.address <= bad.end and bad.start <= spec.end:
                    raise ValueError(
                        f"{spec.field} at {spec.table} {spec.address} lies in a forbidden range "
                        f"{bad.start}..{bad.end}: move the field or the range"
                    )
        return self

    @property
    def field_specs(self) -> list[RegisterSpec]:
        """The fields read (as ``MbusProfile.field_specs``): what a scheduler needs of any polled profile."""
        return self.registers

    def register(self, field: str) -> RegisterSpec:
        """The spec of ``field``; KeyError naming the known fields otherwise."""
        for spec in self.registers:
            if spec.field == field:
                return spec
        known = ", ".join(s.field for s in self.registers)
        raise KeyError(f"profile {self.model} has no field {field!r} (fields: {known})")

    def write_function_of(self, spec: RegisterSpec) -> WriteFunction:
        """The function code of a single-register write: the register's own, else the profile's."""
        return spec.write_function if spec.write_function is not None else self.write_function

    def select(self, poll: Poll | Iterable[Poll] | None = None) -> list[RegisterSpec]:
        """The readable registers of the given poll classes (all readable ones when None)."""
        readable = [s for s in self.registers if s.readable]
        if poll is None:
            return readable
        wanted = {poll} if isinstance(poll, str) else set(poll)
        return [s for s in readable if s.poll in wanted]

    def follower(self, field: str) -> RegisterSpec | None:
        """The readable field that reports what the device made of writable ``field`` (its actual level)."""
        return next((s for s in self.registers if s.follows == field), None)


class NmeaField(BaseModel):
    """One field of a GPS fix that goes into the reading."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(pattern=NAME_PATTERN)
    unit: str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> NmeaField:
        if self.field not in NMEA_FIX_FIELDS:
            known = ", ".join(sorted(NMEA_FIX_FIELDS))
            raise ValueError(f"a fix has no field {self.field}: use one of {known}")
        return self


class NmeaProfile(Provenance):
    """A GPS receiver speaking NMEA 0183: the measurement, the fields of a fix, the sentences used."""

    model: str = Field(pattern=NAME_PATTERN)
    vendor: str
    description: str = ""
    measurement: str = Field(pattern=NAME_PATTERN)
    protocol: Literal["nmea"]
    serial: SerialSettings = SerialSettings()
    sentences: list[NmeaSentence] = Field(min_length=1)
    talkers: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] | None = Field(
        default=None,
        min_length=1,
        description="talker ids read, most trusted first (GP GPS, GL GLONASS, GA Galileo, GB/BD BeiDou, "
        "GQ QZSS, GI NavIC, GN combined); others are ignored. Without it every talker is read, the first "
        "of each sentence in an epoch used",
    )
    complete_with: list[NmeaSentence] | None = Field(
        default=None,
        min_length=1,
        description="an epoch's fix is made as soon as these sentences of it are in (else when a sentence "
        "of a newer time arrives), from the most trusted talker that spoke; default RMC and GGA, those of "
        "them in sentences",
    )
    fields: list[NmeaField] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> NmeaProfile:
        names = [f.field for f in self.fields]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"field {twice[0]} appears twice: list each field once")
        if not {"lat", "lon"} <= set(names):
            raise ValueError("a position needs the fields lat and lon: add them")
        if not set(POSITION_SENTENCES) & set(self.sentences):
            raise ValueError("a fix needs a position: add RMC, GGA or GLL to sentences")
        unused = [s for s in self.complete_with or () if s not in self.sentences]
        if unused:
            raise ValueError(f"complete_with names {unused[0]}, which is not read: add it to sentences")
        return self

    @property
    def epoch_complete(self) -> tuple[NmeaSentence, ...]:
        """The sentences whose arrival completes an epoch (``complete_with`` or its default)."""
        if self.complete_with is not None:
            return tuple(self.complete_with)
        return tuple(s for s in ("RMC", "GGA") if s in self.sentences) or tuple(self.sentences)

    @property
    def field_names(self) -> tuple[str, ...]:
        """The fix's fields that go into a reading, in profile order."""
        return tuple(f.field for f in self.fields)


MbusFunction = Literal["instantaneous", "maximum", "minimum", "error"]
_HEX_BYTES = r"^(?:[0-9A-Fa-f]{2})+$"


class MbusField(BaseModel):
    """One field of an M-Bus meter: the data record it comes from and how to turn its value into the field.

    A record is found by its VIF (with VIFEs, as the hex bytes on the wire; a VIF of the same
    quantity with another decimal exponent matches too), function, storage number, tariff and
    subunit; its value arrives scaled to the VIF's unit (Wh, m^3, C: see
    ``firmware_bridge.mbus_frames.Record``), times ``scale`` gives the field in ``unit``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(pattern=NAME_PATTERN)
    vif: str = Field(pattern=_HEX_BYTES, description="VIF and VIFEs as on the wire, hex (06, 13, FD17)")
    function: MbusFunction = "instantaneous"
    storage: int = Field(default=0, ge=0, le=2**41, description="storage number (0: the current value)")
    tariff: int = Field(default=0, ge=0, le=2**20)
    subunit: int = Field(default=0, ge=0, le=2**10)
    type: Literal["float", "int", "string"] = Field(
        default="float", description="float (a quantity), int (a count or code), string (a date, text)"
    )
    scale: float = 1
    unit: str | None = None
    counter: bool = Field(default=False, description="only grows (energy, volume)")
    deadband: DeadbandSetting | None = None
    report: Literal["on_change"] | None = None
    description: str = ""
    role: Role | None = Field(
        default=None, description="what the field measures, from the vocabulary in docs/profiles.md"
    )
    channel: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="which of the meter's things the role describes: a phase (l1), a tariff (t1), flow",
    )

    @model_validator(mode="after")
    def _check(self) -> MbusField:
        role_issue = role_problem(self.role, self.unit, None, None, 64)
        if role_issue:
            raise ValueError(role_issue)
        if self.scale == 0:
            raise ValueError("scale 0 would turn every value into 0; use a non-zero scale")
        if self.counter and self.type == "string":
            raise ValueError("a string cannot count: remove counter")
        if self.type == "string" and self.scale != 1:
            raise ValueError("a string has no scale: remove scale")
        if self.deadband is not None:
            problem = deadband_problem(self, self.deadband)
            if problem:
                raise problem
            if self.report is not None:
                raise ValueError("deadband and report: on_change exclude each other: keep one")
        return self

    @property
    def key(self) -> tuple[str, str, int, int, int]:
        """What identifies the record in a telegram: VIF bytes, function, storage, tariff, subunit."""
        return (self.vif.upper(), self.function, self.storage, self.tariff, self.subunit)

    @property
    def report_rule(self) -> ReportRule | None:
        """How the profile reports this field by exception (counters: any change); None if it says nothing."""
        if self.counter or self.report == ON_CHANGE:
            return ReportRule("change")
        return None if self.deadband is None else report_rule(self.deadband)


class MbusProfile(Provenance):
    """An M-Bus meter (EN 13757-3): the measurement and the data records that become its fields."""

    model: str = Field(pattern=NAME_PATTERN)
    vendor: str
    description: str = ""
    measurement: str = Field(pattern=NAME_PATTERN)
    protocol: Literal["mbus"]
    manufacturer: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="the FLAG id in the meter's header (KAM)"
    )
    medium: int | None = Field(default=None, ge=0, le=255, description="the medium byte of its header")
    fields: list[MbusField] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> MbusProfile:
        names = [f.field for f in self.fields]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"field {twice[0]} appears twice: give each record its own field name")
        keys = [f.key for f in self.fields]
        for spec in self.fields:
            if keys.count(spec.key) > 1:
                raise ValueError(
                    f"{spec.field}: another field reads the same record (vif {spec.vif}, {spec.function}, "
                    f"storage {spec.storage}, tariff {spec.tariff}, subunit {spec.subunit}): keep one"
                )
        return self

    @property
    def field_specs(self) -> list[MbusField]:
        """The fields read (the scheduler's and report-by-exception's view, as ``Profile.field_specs``)."""
        return self.fields


# OPC UA: a node is named by a NodeId string (ns=2;s=PS1.Flow, nsu=<namespace URI>;i=1001; i=2258 in
# namespace 0) or by a browse path from the device's object, one browse name per step (Pump1/Flow).
NODE_ID_PATTERN = r"^(?:(?:ns=\d+|nsu=[^;]+);)?(?:i=\d+|s=.+|g=[0-9A-Fa-f-]{36}|b=[A-Za-z0-9+/=]+)$"
STANDARD_NAMESPACE = "ua"  # the alias of the OPC Foundation's namespace 0 in browse paths
OPCUA_STANDARD_URI = "http://opcfoundation.org/UA/"
TimestampSource = Literal["source", "server", "agent"]


class OpcUaNode(BaseModel):
    """One field of an OPC UA device: the node that holds it and how its value becomes the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(pattern=NAME_PATTERN)
    node: str | None = Field(
        default=None,
        pattern=NODE_ID_PATTERN,
        description="a NodeId string: ns=2;s=PS1.Flow, nsu=<namespace URI>;s=..., i=2258 (namespace 0)",
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        description="a browse path from the device's object: browse names separated by /, each in the "
        "profile's first namespace unless written alias:Name (an alias of namespaces, or ua: for the "
        "standard namespace)",
    )
    unit: str | None = None
    scale: float = 1
    offset: float = 0
    sampling_ms: float | None = Field(
        default=None, ge=0, description="subscriptions: how often the server samples the node (ms)"
    )
    deadband: float | None = Field(
        default=None,
        ge=0,
        description="subscriptions: the server reports a change only beyond this (absolute, in the node's "
        "own unit, before scale)",
    )
    typical: bool | int | float | str | None = Field(
        default=None, description="a plausible value, the simulator's starting point"
    )
    description: str = ""
    role: Role | None = Field(
        default=None, description="what the field measures, from the vocabulary in docs/profiles.md"
    )
    channel: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="which of the device's things the role describes: a pump (pump1), an inlet, an outlet",
    )

    @model_validator(mode="after")
    def _check(self) -> OpcUaNode:
        role_issue = role_problem(self.role, self.unit, None, None, 64)
        if role_issue:
            raise ValueError(role_issue)
        if (self.node is None) == (self.path is None):
            raise ValueError(
                "name the node either as node (a NodeId) or as path (a browse path): one of them"
            )
        if self.scale == 0:
            raise ValueError("scale 0 would turn every value into the offset; use a non-zero scale")
        if self.path is not None and any(not step.strip() for step in self.path.split("/")):
            raise ValueError(f"browse path {self.path!r} has an empty step: write Name/Name")
        return self

    @property
    def is_quantity(self) -> bool:
        """A physical quantity (a unit, or scaled) is always a float, whatever type the server sends."""
        return self.unit is not None or self.scale != 1 or self.offset != 0

    @property
    def where(self) -> str:
        """The node as the profile names it, for messages."""
        return self.node if self.node is not None else f"path {self.path}"


class OpcUaProfile(Provenance):
    """The object model of one kind of device on an OPC UA server: which node holds which field."""

    model: str = Field(pattern=NAME_PATTERN)
    vendor: str
    description: str = ""
    measurement: str = Field(pattern=NAME_PATTERN)
    protocol: Literal["opcua"]
    namespaces: dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict,
        description="alias -> namespace URI of the browse names in paths; the first is the default. "
        "Servers number their namespaces as they like: names are resolved by URI when connecting",
    )
    timestamp: TimestampSource = Field(
        default="source",
        description="the time a reading carries: source (when the device measured it; else the server's "
        "time, else the agent's), server (when the server last saw it), agent (when the agent received it)",
    )
    # At most 32: with an Uncertain flag each, a reading stays within the wire's 64 fields.
    nodes: list[OpcUaNode] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _check(self) -> OpcUaProfile:
        names = [n.field for n in self.nodes]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"field {twice[0]} appears twice: give each node its own field name")
        if STANDARD_NAMESPACE in self.namespaces:
            raise ValueError(f"namespace alias {STANDARD_NAMESPACE} is the standard namespace: use another")
        for spec in self.nodes:
            if spec.path is None:
                continue
            for step in spec.path.split("/"):
                alias, colon, _ = step.partition(":")
                if colon and alias != STANDARD_NAMESPACE and alias not in self.namespaces:
                    known = ", ".join([*self.namespaces, STANDARD_NAMESPACE])
                    raise ValueError(f"{spec.field}: path step {step!r} names no namespace alias ({known})")
                if not colon and not self.namespaces:
                    raise ValueError(
                        f"{spec.field}: path step {step!r} has no namespace: add namespaces: {{alias: <URI>}}"
                    )
        return self

    def browse_steps(self, spec: OpcUaNode) -> list[tuple[str, str]]:
        """The (namespace URI, browse name) of each step of ``spec``'s path."""
        assert spec.path is not None
        default = next(iter(self.namespaces.values()), OPCUA_STANDARD_URI)
        steps: list[tuple[str, str]] = []
        for step in spec.path.split("/"):
            alias, colon, name = step.partition(":")
            if not colon:
                steps.append((default, step))
            elif alias == STANDARD_NAMESPACE:
                steps.append((OPCUA_STANDARD_URI, name))
            else:
                steps.append((self.namespaces[alias], name))
        return steps

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(n.field for n in self.nodes)

    @property
    def field_specs(self) -> list[OpcUaNode]:
        """The fields read (as ``Profile.field_specs``): what the role catalogue reads of any profile."""
        return self.nodes


# A JSON path into a decoded uplink object: keys joined by dots, a list index as a number.
JSON_PATH_PATTERN = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"
ValueKind = Literal["number", "bool", "string"]
# How a command's engineering value becomes bytes in a downlink (big or little endian).
DownlinkEncoding = Literal["u8", "u16be", "u16le", "u32be", "u32le", "i8", "i16be", "i16le"]


class LorawanField(BaseModel):
    """One field of a reading, taken from the object the network server's codec decoded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(pattern=NAME_PATTERN)
    path: str = Field(
        pattern=JSON_PATH_PATTERN,
        description="where the value sits in the decoded object: keys joined by dots (battery, "
        "sensors.0.value)",
    )
    kind: ValueKind = Field(
        default="number", description="number (a numeric string is read as a number), bool or string"
    )
    scale: float = 1
    offset: float = 0
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    description: str = ""
    role: Role | None = Field(
        default=None, description="what the field measures, from the vocabulary in docs/profiles.md"
    )
    channel: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="which of the device's things the role describes"
    )

    @model_validator(mode="after")
    def _check(self) -> LorawanField:
        role_issue = role_problem(self.role, self.unit, None, None, 64)
        if role_issue:
            raise ValueError(role_issue)
        if self.scale == 0:
            raise ValueError("scale 0 would turn every value into the offset; use a non-zero scale")
        if self.kind != "number" and (self.scale != 1 or self.offset != 0 or self.unit is not None):
            raise ValueError(f"a {self.kind} has no scale, offset or unit: remove them")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}: swap them")
        return self


class LorawanCommand(BaseModel):
    """A field a command may set (``set_field``), sent to the device as a downlink.

    ``template`` is the downlink in hex with ``{value}`` where the encoded value goes; with
    ``payload: ascii_hex`` the hex text itself is what the device expects, as ASCII characters.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(pattern=NAME_PATTERN)
    f_port: int = Field(ge=1, le=223, description="LoRaWAN application port of the downlink")
    template: str = Field(pattern=r"^([0-9A-Fa-f]{2}|\{value\})+$")
    encoding: DownlinkEncoding
    payload: Literal["bytes", "ascii_hex"] = "bytes"
    scale: float = Field(default=1, description="engineering value = raw value x scale")
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    confirmed: bool = Field(default=False, description="ask the device to acknowledge the downlink")
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> LorawanCommand:
        if self.template.count("{value}") != 1:
            raise ValueError("template needs {value} exactly once, where the encoded value goes")
        if self.scale == 0:
            raise ValueError("scale 0 cannot encode a value; use a non-zero scale")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}: swap them")
        return self


class LorawanProfile(Provenance):
    """A LoRaWAN device: what of its decoded uplinks goes into a reading, and its downlink commands.

    The network server decodes the payload with the vendor's codec; this profile maps the
    decoded object's paths to fields (``firmware_bridge.lorawan``).
    """

    model: str = Field(pattern=NAME_PATTERN)
    vendor: str
    description: str = ""
    measurement: str = Field(pattern=NAME_PATTERN)
    protocol: Literal["lorawan"]
    uplink_interval_s: float = Field(
        gt=0, description="the device's factory uplink interval (a device config's poll_s may differ)"
    )
    fields: list[LorawanField] = Field(min_length=1)
    commands: list[LorawanCommand] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> LorawanProfile:
        for names, what in (
            ([f.field for f in self.fields], "field"),
            ([c.field for c in self.commands], "command"),
        ):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what} {twice[0]} appears twice: list each {what} once")
        return self

    @property
    def field_specs(self) -> list[LorawanField]:
        """The fields read (the role catalogue's view, as ``Profile.field_specs``)."""
        return self.fields

    def command(self, field: str) -> LorawanCommand:
        """The command that sets ``field``; KeyError naming the known ones otherwise."""
        for command in self.commands:
            if command.field == field:
                return command
        known = ", ".join(c.field for c in self.commands) or "none"
        raise KeyError(f"profile {self.model} has no command for {field!r} (commands: {known})")


OBIS_PATTERN = r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$"
DlmsClass = Literal["register", "data"]


class DlmsField(BaseModel):
    """One field of a DLMS/COSEM meter: the object (by OBIS code) whose value becomes the field.

    A ``register`` (interface class 3) carries its scaler and unit in attribute 3: the value read
    is scaled by it, and ``cosem_unit`` (the Blue Book's unit code: 30 Wh, 27 W, 35 V, 33 A) must
    match what the meter says, so that a meter configured in kWh is never read as Wh. A ``data``
    object (class 1) has no unit: its value is taken as it is. ``scale`` then converts into ``unit``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str = Field(pattern=NAME_PATTERN)
    obis: str = Field(
        pattern=OBIS_PATTERN, description="the object's logical name, A.B.C.D.E.F (1.0.1.8.0.255)"
    )
    cosem_class: DlmsClass = Field(default="register", alias="class")
    cosem_unit: int | None = Field(
        default=None, ge=0, le=255, description="the unit code the meter must report (registers)"
    )
    type: Literal["float", "int", "string"] = "float"
    scale: float = 1
    unit: str | None = None
    counter: bool = Field(default=False, description="only grows (energy)")
    deadband: DeadbandSetting | None = None
    report: Literal["on_change"] | None = None
    description: str = ""
    role: Role | None = Field(
        default=None, description="what the field measures, from the vocabulary in docs/profiles.md"
    )
    channel: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="which of the meter's things the role describes: a phase (l1), a tariff (t1)",
    )

    @model_validator(mode="after")
    def _check(self) -> DlmsField:
        role_issue = role_problem(self.role, self.unit, None, None, 64)
        if role_issue:
            raise ValueError(role_issue)
        if self.scale == 0:
            raise ValueError("scale 0 would turn every value into 0; use a non-zero scale")
        if self.cosem_class == "register" and self.cosem_unit is None:
            raise ValueError("a register needs cosem_unit: the unit code its attribute 3 must report")
        if self.cosem_class == "data" and self.cosem_unit is not None:
            raise ValueError("a data object has no scaler/unit: remove cosem_unit or use class: register")
        if self.counter and self.type == "string":
            raise ValueError("a string cannot count: remove counter")
        if self.deadband is not None:
            problem = deadband_problem(self, self.deadband)
            if problem:
                raise problem
            if self.report is not None:
                raise ValueError("deadband and report: on_change exclude each other: keep one")
        return self

    @property
    def report_rule(self) -> ReportRule | None:
        """How the profile reports this field by exception (counters: any change); None if it says nothing."""
        if self.counter or self.report == ON_CHANGE:
            return ReportRule("change")
        return None if self.deadband is None else report_rule(self.deadband)


class DlmsProfile(Provenance):
    """A DLMS/COSEM meter (IEC 62056): the measurement, its objects by OBIS, and its load profile."""

    model: str = Field(pattern=NAME_PATTERN)
    vendor: str
    description: str = ""
    measurement: str = Field(pattern=NAME_PATTERN)
    protocol: Literal["dlms"]
    load_profile: str | None = Field(
        default=None,
        pattern=OBIS_PATTERN,
        description="the profile generic read to backfill an outage (1.0.99.1.0.255); its columns are "
        "matched to fields by OBIS code",
    )
    fields: list[DlmsField] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> DlmsProfile:
        names = [f.field for f in self.fields]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"field {twice[0]} appears twice: give each object its own field name")
        codes = [f.obis for f in self.fields]
        again = sorted({c for c in codes if codes.count(c) > 1})
        if again:
            raise ValueError(f"OBIS code {again[0]} is read by two fields: keep one")
        return self

    @property
    def field_specs(self) -> list[DlmsField]:
        """The fields read (the scheduler's and report-by-exception's view, as ``Profile.field_specs``)."""
        return self.fields


AnyProfile = Annotated[
    Profile | NmeaProfile | MbusProfile | OpcUaProfile | LorawanProfile | DlmsProfile,
    Field(discriminator="protocol"),
]
_ANY_PROFILE: TypeAdapter[
    Profile | NmeaProfile | MbusProfile | OpcUaProfile | LorawanProfile | DlmsProfile
] = TypeAdapter(AnyProfile)
P = TypeVar("P", Profile, NmeaProfile, MbusProfile, OpcUaProfile, LorawanProfile, DlmsProfile)


def _share_register(a: RegisterSpec, b: RegisterSpec) -> bool:
    """Two masked values may share a register when their bits do not overlap (status words)."""
    return (
        a.mask is not None
        and b.mask is not None
        and (a.address, a.register_count) == (b.address, b.register_count)
        and a.bits & b.bits == 0
    )


def available_profiles(protocol: Protocol | None = "modbus") -> list[str]:
    """Names of the profiles shipped with CityGW that speak ``protocol`` (all when None)."""
    return sorted(
        p.stem for p in PROFILES_DIR.glob("*.yaml") if protocol is None or _protocol_of(p) == protocol
    )


def _protocol_of(path: Path) -> object:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data.get("protocol", "modbus") if isinstance(data, dict) else None


def load_profile(name_or_path: str | Path) -> Profile:
    """Load and validate a Modbus profile: a shipped model name (file stem) or a path to a YAML file."""
    return _expect(Profile, name_or_path, "a device on a Modbus line (tcp or rtu) needs a modbus profile")


def load_mbus_profile(name_or_path: str | Path) -> MbusProfile:
    """Load and validate an M-Bus meter profile, by shipped name or path."""
    return _expect(MbusProfile, name_or_path, "a meter on an M-Bus line (mbus) needs an mbus profile")


def load_dlms_profile(name_or_path: str | Path) -> DlmsProfile:
    """Load and validate a DLMS/COSEM meter profile, by shipped name or path."""
    return _expect(DlmsProfile, name_or_path, "a meter on a DLMS line (dlms) needs a dlms profile")


def load_opcua_profile(name_or_path: str | Path) -> OpcUaProfile:
    """Load and validate an OPC UA profile (the object model of a SCADA server's device), by name or path."""
    return _expect(OpcUaProfile, name_or_path, "a device on an OPC UA line (opcua) needs an opcua profile")


def load_lorawan_profile(name_or_path: str | Path) -> LorawanProfile:
    """Load and validate a LoRaWAN profile, by shipped name or path."""
    return _expect(
        LorawanProfile, name_or_path, "a device on a LoRaWAN line (lorawan) needs a lorawan profile"
    )


def load_nmea_profile(name_or_path: str | Path) -> NmeaProfile:
    """Load and validate an NMEA (GPS receiver) profile, by shipped name or path."""
    return _expect(NmeaProfile, name_or_path, "a device on a GPS line (nmea) needs an nmea profile")


def _expect(kind: type[P], name_or_path: str | Path, fix: str) -> P:
    profile = load_any_profile(name_or_path)
    if not isinstance(profile, kind):
        protocols: dict[type, Protocol] = {
            NmeaProfile: "nmea",
            MbusProfile: "mbus",
            OpcUaProfile: "opcua",
            LorawanProfile: "lorawan",
            DlmsProfile: "dlms",
        }
        wanted = protocols.get(kind, "modbus")
        names = ", ".join(available_profiles(wanted)) or "none"
        raise ProfileError(f"{_resolve(name_or_path)}: speaks {profile.protocol}; {fix} (shipped: {names})")
    return profile


def load_any_profile(
    name_or_path: str | Path,
) -> Profile | NmeaProfile | MbusProfile | OpcUaProfile | LorawanProfile | DlmsProfile:
    """Load and validate a profile of any protocol (``protocol`` defaults to modbus)."""
    path = _resolve(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot be read ({exc.strerror}); check the path") from exc
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML ({exc}); fix the syntax at the marked line") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping with model, vendor, measurement, registers")
    try:
        return _ANY_PROFILE.validate_python({"protocol": "modbus", **data})
    except ValidationError as exc:
        problems = "\n".join(f"  - {_describe(error, data)}" for error in exc.errors())
        raise ProfileError(f"{path}: {exc.error_count()} problem(s):\n{problems}") from exc


def profile_file(name_or_path: str | Path) -> Path:
    """The file a profile name or path stands for (ProfileError for a name nobody ships)."""
    return _resolve(name_or_path)


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        return Path(name_or_path)
    path = PROFILES_DIR / f"{text}.yaml"
    if not path.exists():
        raise ProfileError(
            f"{path}: no profile named {text!r}; shipped profiles: {', '.join(available_profiles())}"
        )
    return path


def _describe(error: ErrorDetails, data: dict[str, Any]) -> str:
    """One readable line: where (with the register's field name), what, and how to fix it."""
    loc = list(error["loc"])
    if loc and loc[0] in ("modbus", "nmea", "mbus", "opcua", "lorawan", "dlms"):
        loc = loc[1:]  # the union's tag, not a key of the file
    where = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and "field" in node:
                where += f" ({node['field']})"
        else:
            where += f".{part}" if where else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    message = error["msg"].removeprefix("Value error, ")
    fix = _FIXES.get(error["type"], "")
    if error["type"] == "missing" and loc and loc[-1] in _MISSING_FIXES:
        fix = _MISSING_FIXES[str(loc[-1])]
    where = where or "profile"
    return f"{where}: {message}" + (f" — fix: {fix}" if fix else "")


_MISSING_FIXES: dict[str, str] = {
    "source": "add source: the vendor document the map was transcribed from (title, version or date, "
    "table or page), or say that none was found",
    "verified": "add verified: datasheet (checked against that document), capture (against a real "
    "device) or modelled (modelled on typical devices, not checked)",
}

_FIXES: dict[str, str] = {
    "missing": "add this key",
    "extra_forbidden": "remove this key or check its spelling",
    "literal_error": "use one of the listed values",
    "string_pattern_mismatch": "use lower-case snake_case (letters, digits, _), starting with a letter",
    "less_than_equal": "use an address of at most 65535 (0xFFFF)",
    "greater_than_equal": "use a value that is not negative",
    "int_parsing": "write a whole number, e.g. 12 or 0x0C",
    "int_type": "write a whole number, e.g. 12 or 0x0C",
    "float_parsing": "write a number",
    "too_short": "list at least one entry",
    "string_type": "quote the value: YAML reads bare no/yes/on/off as booleans",
    "enum": "use one of the listed values (docs/profiles.md lists the roles and lamp status bits)",
}
