"""Registers ↔ engineering values, with pymodbus's own converters doing the packing.

Word orders, as vendors' manuals write them for the 32-bit value 0x11223344:
ABCD ``[0x1122, 0x3344]`` (big-endian), CDAB ``[0x3344, 0x1122]`` (word-swapped),
BADC ``[0x2211, 0x4433]`` (byte-swapped), DCBA ``[0x4433, 0x2211]`` (both).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Literal

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ModbusException

from citygw.contract.wire import FieldValue
from firmware_bridge.errors import DecodeError
from firmware_bridge.profile import FLOAT_TYPES, INTEGER_TYPES, DataType, RegisterSpec, WordOrder

# A float outside these magnitudes (other than 0) is no measurement: typically a value read
# with the wrong word order, e.g. 12.5 word-swapped reads as 2.3e-41.
PLAUSIBLE_FLOAT: tuple[float, float] = (1e-20, 1e15)


class BadFieldValue(DecodeError):
    """The registers decode, but not to a measurement (NaN, infinity, outside the profile's range).

    Only this field is unusable: a reader leaves it out and keeps the device's other fields. Any
    other ``DecodeError`` (a float no sensor measures: a wrong word order) makes every value of the
    device suspect.
    """


_CONVERT = ModbusClientMixin.DATATYPE
_DATATYPES: dict[str, ModbusClientMixin.DATATYPE] = {
    "u16": _CONVERT.UINT16,
    "i16": _CONVERT.INT16,
    "u32": _CONVERT.UINT32,
    "i32": _CONVERT.INT32,
    "u64": _CONVERT.UINT64,
    "i64": _CONVERT.INT64,
    "f32": _CONVERT.FLOAT32,
    "f64": _CONVERT.FLOAT64,
    "string": _CONVERT.STRING,
}


def _word_order(spec: RegisterSpec) -> Literal["big", "little"]:
    return "little" if spec.order in ("CDAB", "DCBA") else "big"


def swap_bytes(registers: Sequence[int]) -> list[int]:
    """Each register's two bytes exchanged (the B in BADC and DCBA)."""
    return [((r & 0xFF) << 8) | (r >> 8) for r in registers]


def decode_raw(spec: RegisterSpec, registers: Sequence[int]) -> bool | int | float | str:
    """The value as the device stores it, before scale and offset."""
    if len(registers) != spec.register_count:
        raise DecodeError(f"{spec.field}: got {len(registers)} registers, expected {spec.register_count}")
    if spec.type == "bit":
        return bool(registers[0])
    try:
        value = convert(registers, spec.type, spec.order)
    except ValueError as exc:
        raise DecodeError(f"{spec.field}: {exc}") from exc
    if isinstance(value, float) and not math.isfinite(value):
        raise BadFieldValue(f"{spec.field}: the device reports {value} (no valid measurement)")
    if isinstance(value, float) and not is_plausible_float(value):
        raise DecodeError(
            f"{spec.field}: registers {list(registers)} decode to {value!r}, not a plausible "
            f"measurement: check the word order ({spec.order})"
        )
    if isinstance(value, int) and (spec.mask is not None or spec.shift):
        value = (value >> spec.shift) & (spec.mask if spec.mask is not None else -1)
    return value


def convert(registers: Sequence[int], type_: DataType, order: WordOrder) -> int | float | str:
    """Registers as one value of ``type_`` under ``order``, no checks (ValueError if impossible)."""
    if type_ == "bit":
        raise ValueError("a bit is not made of registers")
    words = swap_bytes(registers) if order in ("BADC", "DCBA") else list(registers)
    word_order: Literal["big", "little"] = "little" if order in ("CDAB", "DCBA") else "big"
    try:
        value = ModbusClientMixin.convert_from_registers(words, _DATATYPES[type_], word_order)
    except (ModbusException, UnicodeDecodeError) as exc:
        raise ValueError(f"registers {list(registers)} do not decode as {type_}") from exc
    if not isinstance(value, int | float | str):
        raise ValueError(f"registers {list(registers)} decode to {value!r}")
    return value


def is_plausible_float(value: float) -> bool:
    """False for NaN, infinities and magnitudes no sensor measures (see ``PLAUSIBLE_FLOAT``)."""
    if not math.isfinite(value):
        return False
    return value == 0 or PLAUSIBLE_FLOAT[0] <= abs(value) <= PLAUSIBLE_FLOAT[1]


def decode(spec: RegisterSpec, registers: Sequence[int]) -> FieldValue:
    """The engineering value: raw value * scale + offset (ints stay ints when unscaled)."""
    raw = decode_raw(spec, registers)
    if isinstance(raw, bool | str) or spec.is_integer:
        value: FieldValue = raw
    else:
        scaled = raw * spec.scale + spec.offset
        decimals = spec.decimals
        # Scale 0.1 on an integer register means one decimal: 231 → 23.1, not 23.100000000000001.
        value = float(round(scaled, decimals) if decimals is not None else scaled)
        if not math.isfinite(value):  # a finite raw value under an extreme scale or offset
            raise BadFieldValue(f"{spec.field}: {raw} scaled is {value} (no valid measurement)")
    if not spec.allows(value):
        raise BadFieldValue(
            f"{spec.field}: {value} is outside the device's range {spec.min}..{spec.max}: "
            f"check the word order ({spec.order}) and the scale"
        )
    return value


def encode(spec: RegisterSpec, value: FieldValue) -> list[int]:
    """The registers a device holds for an engineering value (the inverse of ``decode``)."""
    if spec.type == "bit":
        if not isinstance(value, bool | int):
            raise ValueError(f"{spec.field}: a bit needs a bool, not {value!r}")
        return [int(bool(value))]
    if spec.type == "string":
        if not isinstance(value, str):
            raise ValueError(f"{spec.field}: a string register needs a str, not {value!r}")
        words = ModbusClientMixin.convert_to_registers(value, _CONVERT.STRING, "big")
        if len(words) > spec.register_count:
            raise ValueError(f"{spec.field}: {value!r} does not fit in {spec.register_count} registers")
        words += [0] * (spec.register_count - len(words))
        if _word_order(spec) == "little":
            words.reverse()
    else:
        if isinstance(value, bool | str):
            raise ValueError(f"{spec.field}: a {spec.type} register needs a number, not {value!r}")
        # Unscaled integers stay exact: a float detour would corrupt 64-bit counters.
        raw = value if spec.scale == 1 and spec.offset == 0 else (value - spec.offset) / spec.scale
        number: int | float
        if spec.type in INTEGER_TYPES:
            number = round(raw)
            if spec.mask is not None or spec.shift:
                if number < 0 or (spec.mask is not None and number > spec.mask):
                    raise ValueError(f"{spec.field}: {value} does not fit in mask {spec.mask}")
                number <<= spec.shift
        elif spec.type in FLOAT_TYPES:
            number = float(raw)
        else:  # pragma: no cover - every type is handled above
            raise AssertionError(spec.type)
        try:
            words = ModbusClientMixin.convert_to_registers(number, _DATATYPES[spec.type], _word_order(spec))
        except (struct.error, OverflowError) as exc:
            raise ValueError(f"{spec.field}: {value} does not fit in a {spec.type}") from exc
    return swap_bytes(words) if spec.order in ("BADC", "DCBA") else words
