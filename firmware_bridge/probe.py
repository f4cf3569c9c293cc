"""A field engineer's probe: raw registers of a live device and every plausible reading of them.

Writing a profile for an unknown device starts here: read a range, find the known value (the
meter's display says 230.5 V) in the table, and the row names type, word order and address.
Before that, ``scan_units`` finds which unit ids answer on a line at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

from pymodbus.client.mixin import ModbusClientMixin

from citygw.contract.wire import FieldValue
from firmware_bridge.errors import (
    DecodeError,
    DeviceCrcError,
    DeviceExceptionResponse,
    DeviceTimeout,
    LineUnavailable,
)
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.planner import MAX_BITS, MAX_REGISTERS, ReadRequest, plan_requests
from firmware_bridge.profile import BIT_TABLES, DataType, Profile, Table, WordOrder
from firmware_bridge.registers import convert, decode, is_plausible_float, swap_bytes

WORD_ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
SINGLE_TYPES: tuple[DataType, ...] = ("u16", "i16")
DOUBLE_TYPES: tuple[DataType, ...] = ("u32", "i32", "f32")
QUAD_TYPES: tuple[DataType, ...] = ("u64", "i64", "f64")
# Answers that mean "nobody there" though something answered: a TCP gateway speaking for its bus.
GATEWAY_ABSENT = (0x0A, 0x0B)

ProbedValue = FieldValue | DecodeError


@dataclass(frozen=True)
class Row:
    """One reading of the registers starting at ``address``: type, word order and value.

    ``value`` is None when the registers cannot be that type in earnest (NaN, infinity, or a
    float no sensor measures); ``note`` then says why, and ``registers`` still shows the raw words.
    """

    address: int
    registers: tuple[int, ...]
    type: DataType
    order: WordOrder | None
    value: int | float | None
    note: str = ""


async def probe_registers(line: ModbusLine, unit: int, table: Table, address: int, count: int) -> list[int]:
    """Raw registers (bits as 0/1) of ``count`` addresses from ``address``, in one read."""
    limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
    if not 1 <= count <= limit:
        raise ValueError(f"count {count} is outside 1..{limit}, what one {table} read may ask for")
    if not 0 <= address <= 0xFFFF - count + 1:
        raise ValueError(f"addresses {address}..{address + count - 1} run outside 0..65535")
    return await line.read_request(unit, ReadRequest(table, address, count, ()))


def interpretations(words: Sequence[int], address: int) -> list[Row]:
    """Per starting register: u16 and i16, then u32, i32 and f32 under each word order."""
    rows: list[Row] = []
    for i, word in enumerate(words):
        start = address + i
        rows.extend(Row(start, (word,), t, None, _number(convert([word], t, "ABCD"))) for t in SINGLE_TYPES)
        if i + 1 >= len(words):
            continue
        pair = (word, words[i + 1])
        for order in WORD_ORDERS:
            for type_ in DOUBLE_TYPES:
                rows.append(_reading(start, pair, type_, order))
    return rows


def wide_interpretations(words: Sequence[int], address: int) -> list[Row]:
    """Per starting register with three more after it: u64, i64 and f64 under each word order."""
    rows: list[Row] = []
    for i in range(len(words) - 3):
        quad = tuple(words[i : i + 4])
        for order in WORD_ORDERS:
            rows.extend(_reading(address + i, quad, type_, order) for type_ in QUAD_TYPES)
    return rows


def string_views(words: Sequence[int]) -> dict[str, str]:
    """The registers as ASCII text, high byte first ("AB") and byte-swapped ("BA").

    Two characters per register, so a text's position gives its address; a byte that is no
    printable ASCII shows as ".".
    """
    views: dict[str, str] = {}
    for name, ordered in (("AB", list(words)), ("BA", swap_bytes(words))):
        text = ModbusClientMixin.convert_from_registers(
            ordered, ModbusClientMixin.DATATYPE.STRING, string_encoding="latin-1"
        )
        assert isinstance(text, str)
        shown = "".join(c if " " <= c <= "~" else "." for c in text)
        views[name] = shown.ljust(2 * len(words), ".")  # pymodbus drops trailing NULs
    return views


def _reading(start: int, words: tuple[int, ...], type_: DataType, order: WordOrder) -> Row:
    value = _number(convert(words, type_, order))
    if isinstance(value, float) and not is_plausible_float(value):
        note = "nan" if math.isnan(value) else "inf" if math.isinf(value) else f"implausible ({value:.3g})"
        return Row(start, words, type_, order, None, note)
    return Row(start, words, type_, order, value)


def _number(value: int | float | str) -> int | float:
    if isinstance(value, str):  # pragma: no cover - only the string type converts to str
        raise TypeError(value)
    return value


def format_table(rows: Sequence[Row]) -> str:
    """A terminal table: one block per starting address, one line per word order."""
    header = (
        f"{'addr':>5}  {'hex':>6}  {'raw':<9}  {'u16':>5}  {'i16':>6}  order  {'u32':>10}  {'i32':>11}  f32"
    )
    lines = [header, "-" * len(header)]
    for address, group in groupby(rows, key=lambda r: r.address):
        block = list(group)
        singles = {r.type: r for r in block if r.order is None}
        pairs = [r for r in block if r.order is not None]
        raw = " ".join(f"{w:04X}" for w in (pairs[0].registers if pairs else singles["u16"].registers))
        head = (
            f"{address:>5}  {address:#06x}  {raw:<9}  {_cell(singles['u16']):>5}  {_cell(singles['i16']):>6}"
        )
        if not pairs:
            lines.append(head)
            continue
        for n, (order, readings) in enumerate(groupby(pairs, key=lambda r: r.order)):
            by_type = {r.type: r for r in readings}
            prefix = head if n == 0 else " " * len(head)
            lines.append(
                f"{prefix}  {order}   {_cell(by_type['u32']):>10}  {_cell(by_type['i32']):>11}  "
                f"{_cell(by_type['f32'])}"
            )
    return "\n".join(lines)


def format_wide_table(rows: Sequence[Row]) -> str:
    """The 64-bit readings: one block per starting address, one line per word order."""
    header = f"{'addr':>5}  {'raw':<19}  order  {'u64':>20}  {'i64':>20}  f64"
    lines = [header, "-" * len(header)]
    for address, group in groupby(rows, key=lambda r: r.address):
        for n, (order, readings) in enumerate(groupby(group, key=lambda r: r.order)):
            by_type = {r.type: r for r in readings}
            raw = " ".join(f"{w:04X}" for w in by_type["u64"].registers)
            head = f"{address:>5}  {raw:<19}" if n == 0 else " " * 26
            lines.append(
                f"{head}  {order}   {_cell(by_type['u64']):>20}  {_cell(by_type['i64']):>20}  "
                f"{_cell(by_type['f64'])}"
            )
    return "\n".join(lines)


def format_strings(words: Sequence[int], address: int) -> str:
    """The registers as text in both byte orders, two characters per register from ``address``."""
    views = string_views(words)
    return "\n".join(f"ascii {name} from {address}: {text!r}" for name, text in views.items())


def _cell(row: Row) -> str:
    if row.value is None:
        return row.note
    if isinstance(row.value, float):
        return f"{row.value:.7g}"
    return str(row.value)


async def probe_profile(line: ModbusLine, unit: int, profile: Profile) -> dict[str, ProbedValue]:
    """Every field of ``profile`` read from the device; a field that does not decode keeps its error.

    A device that does not answer raises (``DeviceError``) as for any read.
    """
    requests = plan_requests(
        profile.select(), max_registers=profile.max_registers, forbidden=profile.forbidden
    )
    values: dict[str, ProbedValue] = {}
    for request in requests:
        words = await line.read_request(unit, request, timing=profile.timing)
        for spec in request.specs:
            try:
                values[spec.field] = decode(spec, request.slice_for(spec, words))
            except DecodeError as exc:
                values[spec.field] = exc
    return {spec.field: values[spec.field] for spec in profile.select()}


def format_values(profile: Profile, values: dict[str, ProbedValue]) -> str:
    """Decoded fields for a terminal, under a header saying where the profile's map comes from.

    A modelled map is flagged, so that nobody takes its values for a vendor's register map.
    """
    width = max(len(s.field) for s in profile.registers)
    lines = [f"profile {profile.model}: verified {profile.verified}; source: {profile.source}"]
    if profile.verified == "modelled":
        lines.append("  (modelled register map, not checked against a vendor document or a device)")
    for spec in profile.registers:
        where = f"{spec.table} {spec.address} {spec.type} {spec.order}"
        if not spec.readable:
            lines.append(f"{spec.field:<{width}}  {'(write-only)':<24}  ({where})")
            continue
        value = values.get(spec.field)
        unit = f" {spec.unit}" if spec.unit else ""
        shown = f"ERROR {value}" if isinstance(value, DecodeError) else f"{value}{unit}"
        lines.append(f"{spec.field:<{width}}  {shown:<24}  ({where})")
    return "\n".join(lines)


@dataclass(frozen=True)
class UnitAnswer:
    """A unit id that answered a scan, and how (``exception``: its code; ``crc``: a garbled answer)."""

    unit: int
    exception: int | None = None
    crc: bool = False

    def __str__(self) -> str:
        if self.exception is not None:
            return f"{self.unit} (exception {self.exception:02X})"
        return f"{self.unit} (garbled answer)" if self.crc else str(self.unit)


async def scan_units(line: ModbusLine, units: Iterable[int]) -> list[UnitAnswer]:
    """The unit ids that answer one read of holding register 0, with the line's (short) timeout.

    An exception response counts: the device is there, it just has no such register. A TCP
    gateway's "target failed to respond" (0B) or "path unavailable" (0A) does not.
    """
    found: list[UnitAnswer] = []
    probe = ReadRequest("holding", 0, 1, ())
    for unit in units:
        try:
            await line.read_request(unit, probe)
        except LineUnavailable:
            raise
        except DeviceExceptionResponse as exc:
            if exc.code not in GATEWAY_ABSENT:
                found.append(UnitAnswer(unit, exception=exc.code))
            continue
        except DeviceCrcError:
            found.append(UnitAnswer(unit, crc=True))
            continue
        except DeviceTimeout:
            continue
        found.append(UnitAnswer(unit))
    return found


def parse_units(text: str) -> list[int]:
    """Unit ids from "1-247" or "1,3,10-20" (ValueError naming the bad part)."""
    units: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"{part.strip()!r} is no unit id or range: write e.g. 1-247 or 1,3,10-20")
        low, high = int(first), int(last or first)
        if not 0 <= low <= high <= 255:
            raise ValueError(f"{part.strip()!r}: unit ids run from 0 to 255, low to high")
        units.extend(range(low, high + 1))
    return sorted(set(units))
