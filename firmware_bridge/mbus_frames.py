"""M-Bus (EN 13757-2/3) frames and data records, built and parsed with pyMeterBus (module ``meterbus``).

The link layer here says how long a frame is from its first bytes and whether it is whole
(start bytes, both length bytes, checksum, stop byte): pyMeterBus skips some of those checks,
and a bad frame must name what was wrong with it. Decoding the records (DIF/VIF, storage
number, tariff, subunit, value scaled to the VIF's unit) is pyMeterBus's.
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import logging
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from citygw.contract.wire import FieldValue
from firmware_bridge.profile import MbusProfile


def _import_meterbus() -> ModuleType:
    """pyMeterBus, without the ``logging.basicConfig(level=INFO)`` its serial module runs on import
    (it would send every library's INFO lines to stderr: the agent's and the CLI's logging is theirs)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return importlib.import_module("meterbus")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


meterbus = _import_meterbus()
DataEncoding, FunctionType, VIFTable = meterbus.DataEncoding, meterbus.FunctionType, meterbus.VIFTable
MBusError = meterbus.exceptions.MBusError

ACK = 0xE5
SHORT_START, LONG_START, STOP = 0x10, 0x68, 0x16
NETWORK_LAYER = 0xFD  # the meter selected by secondary address answers here
MAX_PRIMARY = 250  # 251..255 are reserved, the network layer, broadcasts
SND_NKE, SND_UD, REQ_UD2 = 0x40, 0x53, 0x5B
FCB, FCV = 0x20, 0x10
CI_SELECT = 0x52
RSP_UD_CI = frozenset({0x72, 0x76, 0x78})  # variable data, LSB or MSB first, without header
WILDCARD_SECONDARY = "FFFFFFFFFFFFFFFF"
CI_ERROR = 0x70  # the meter's application error report (EN 13757-3), one code byte
APPLICATION_ERRORS: dict[int | None, str] = {
    0: "unspecified error",
    1: "unimplemented CI field",
    2: "buffer too long, truncated",
    3: "too many records",
    4: "premature end of record",
    5: "more than 10 DIFEs",
    6: "more than 10 VIFEs",
    8: "application busy",
    9: "too many readouts",
}
SHOWN_BYTES = 48  # bytes of a bad frame quoted in its error

Function = Literal["instantaneous", "maximum", "minimum", "error", "manufacturer"]
_FUNCTIONS: dict[Any, Function] = {  # pyMeterBus FunctionType -> ours
    FunctionType.INSTANTANEOUS_VALUE: "instantaneous",
    FunctionType.MAXIMUM_VALUE: "maximum",
    FunctionType.MINIMUM_VALUE: "minimum",
    FunctionType.ERROR_STATE_VALUE: "error",
    FunctionType.SPECIAL_FUNCTION: "manufacturer",
}

Value = float | int | str | None


class FrameError(ValueError):
    """Bytes that are no usable M-Bus frame; the message says what was wrong and quotes them."""

    def __init__(self, what: str, data: bytes) -> None:
        super().__init__(f"{what}: received {show(data)}")
        self.what, self.data = what, data


class RecordsError(FrameError):
    """A whole, well-checked frame whose content is no usable RSP_UD telegram (C, CI, records)."""


def show(data: bytes) -> str:
    """Bytes as hex for an error line, cut after SHOWN_BYTES."""
    if not data:
        return "nothing"
    text = data[:SHOWN_BYTES].hex(" ").upper()
    more = f" … ({len(data)} bytes)" if len(data) > SHOWN_BYTES else f" ({len(data)} bytes)"
    return text + more


def short_frame(control: int, address: int) -> bytes:
    """A short frame (SND_NKE, REQ_UD2) to ``address``, built by pyMeterBus."""
    frame = meterbus.TelegramShort()
    frame.header.cField.parts = [control]
    frame.header.aField.parts = [address]
    return bytes(frame)


def snd_nke(address: int) -> bytes:
    """Link reset: the meter acknowledges with E5 and starts its telegram sequence again."""
    return short_frame(SND_NKE, address)


def req_ud2(address: int, *, fcb: bool) -> bytes:
    """Request class 2 data, with the frame count bit valid: toggled, the next telegram; same, a repeat."""
    return short_frame(REQ_UD2 | FCV | (FCB if fcb else 0), address)


def select(secondary: str) -> bytes:
    """SND_UD selecting by secondary address (F nibbles and FF bytes are wildcards), built by pyMeterBus."""
    check_secondary(secondary)
    sent = bytearray()

    class _Collect:
        def write(self, data: bytes) -> None:
            sent.extend(data)

    meterbus.send_select_frame(_Collect(), secondary.upper())
    return bytes(sent)


def check_secondary(secondary: str) -> str:
    """The secondary address upper-cased; ValueError saying how to write one otherwise."""
    text = secondary.upper()
    if len(text) != 16 or any(c not in "0123456789ABCDEF" for c in text):
        raise ValueError(
            f"secondary address {secondary!r}: write 16 hex digits, id (8 digits) + manufacturer (4) + "
            "version (2) + medium (2), F for a wildcard"
        )
    if any(c in "ABCDE" for c in text[:8]):
        raise ValueError(f"secondary address {secondary!r}: the id (first 8 digits) is decimal, F a wildcard")
    return text


def frame_length(head: bytes) -> int:
    """How many bytes the frame starting with ``head`` has (1, 5, or the long frame's L + 6).

    A long frame needs its first 4 bytes. FrameError when they start no M-Bus frame.
    """
    if not head:
        raise FrameError("empty answer", head)
    start = head[0]
    if start == ACK:
        return 1
    if start == SHORT_START:
        return 5
    if start != LONG_START:
        raise FrameError(f"no M-Bus frame starts with {start:02X} (E5, 10 or 68)", head)
    if len(head) < 4:
        raise FrameError("truncated long frame header", head)
    if head[1] != head[2]:
        raise FrameError(f"length bytes differ ({head[1]} and {head[2]})", head)
    if head[3] != LONG_START:
        raise FrameError(f"second start byte is {head[3]:02X}, not 68", head)
    if head[1] < 3:
        raise FrameError(f"length {head[1]} is below the 3 of C, A and CI fields", head)
    return head[1] + 6


def check_frame(data: bytes) -> None:
    """FrameError unless ``data`` is one whole frame: length, checksum and stop byte."""
    need = frame_length(data[:4])
    if len(data) < need:
        raise FrameError(f"truncated frame: {len(data)} of {need} bytes", data)
    if len(data) > need:
        raise FrameError(f"{len(data) - need} bytes after the frame", data)
    if need == 1:
        return
    body = data[1:3] if need == 5 else data[4:-2]
    checksum = sum(body) & 0xFF
    if data[-2] != checksum:
        raise FrameError(f"checksum {data[-2]:02X}, computed {checksum:02X}", data)
    if data[-1] != STOP:
        raise FrameError(f"stop byte {data[-1]:02X}, not 16", data)


@dataclass(frozen=True)
class Record:
    """One data record of a telegram, decoded by pyMeterBus.

    ``vif`` is the VIF and its VIFEs as on the wire (hex, e.g. ``"06"``, ``"FD17"``), which with
    ``function``, ``storage``, ``tariff`` and ``subunit`` identifies the record in a profile;
    ``value`` is scaled to ``unit`` (pyMeterBus's name: Wh, m^3, C, ...), a date as ISO text,
    a manufacturer-specific block as hex.
    """

    dif: str
    vif: str
    function: Function
    storage: int
    tariff: int
    subunit: int
    unit: str
    value: Value


@dataclass(frozen=True)
class Telegram:
    """A RSP_UD telegram: the meter's identity and its records."""

    address: int
    id: str
    manufacturer: str
    version: int
    medium: int
    access: int
    status: int
    records: tuple[Record, ...]
    more_follow: bool
    raw: bytes

    @property
    def secondary(self) -> str:
        """id, manufacturer, version and medium as a selection names the meter ("" without a header)."""
        if not self.id:
            return ""
        return self.id + self.raw[11:15].hex().upper()


def decode(data: bytes) -> Telegram:
    """A whole RSP_UD frame as a Telegram; FrameError naming what is wrong otherwise."""
    check_frame(data)
    if data[0] != LONG_START:
        raise RecordsError("expected a RSP_UD telegram (a long frame)", data)
    control, ci = data[4], data[6]
    if control & 0x4F != 0x08:
        raise RecordsError(f"C field {control:02X} is no RSP_UD (08, 18, 28, 38)", data)
    if ci == CI_ERROR:
        code = data[7] if len(data) > 9 else None
        said = "no code" if code is None else f"code {code}: {APPLICATION_ERRORS.get(code, 'reserved')}"
        raise RecordsError(f"the meter reports an application error (CI 70, {said})", data)
    if ci not in RSP_UD_CI:
        raise RecordsError(f"CI field {ci:02X} is no variable data response (72, 76, 78)", data)
    if ci != 0x78 and len(data) < 6 + 3 + 12:
        raise RecordsError(f"variable data header of {len(data) - 9} bytes, not 12 (id to signature)", data)
    try:
        telegram = meterbus.TelegramLong(list(data))
        records = tuple(_record(r, i) for i, r in enumerate(telegram.records) if not r.more_records_follow)
        header = telegram.body.bodyHeader
        more = bool(telegram.more_records_follow)
    except (MBusError, IndexError, KeyError, ValueError, TypeError, struct.error) as exc:
        raise RecordsError(f"records cannot be decoded ({type(exc).__name__} {exc})", data) from None
    if ci == 0x78:  # no fixed header: the meter's identity is not in this telegram
        return Telegram(data[5], "", "", 0, 0, 0, 0, records, more, data)
    return Telegram(
        address=data[5],
        id="".join(f"{b:02X}" for b in header.id_nr),
        manufacturer=header.manufacturer_field.decodeManufacturer,
        version=header.version_field.parts[0],
        medium=header.measure_medium_field.parts[0],
        access=header.acc_nr_field.parts[0],
        status=header.status_field.parts[0],
        records=records,
        more_follow=more,
        raw=data,
    )


def _record(rec: Any, index: int) -> Record:
    dib, vib = rec.dib, rec.vib
    function = _FUNCTIONS.get(dib.function_type, "manufacturer")
    if function != "manufacturer":
        where = f"record {index} (DIF {bytes(dib.parts).hex().upper()})"
        if dib.has_extension_bit:
            raise ValueError(f"{where}: the DIF announces a DIFE that is not there")
        if not vib.parts or vib.has_extension_bit:
            raise ValueError(f"{where}: the VIF or a VIFE it announces is missing")
        if len(vib.parts) > 11:
            raise ValueError(f"{where}: {len(vib.parts) - 1} VIFEs, at most 10 allowed")
        length, encoding = dib.length_encoding
        have = len(rec.dataField.parts)
        if encoding != DataEncoding.ENCODING_VARIABLE_LENGTH and have != length:
            raise ValueError(f"{where}: {have} of its {length} data bytes")
    storage, tariff, subunit = dib.parse_dife()
    if function == "manufacturer":
        value: Value = rec.dataField.decodeRAW
        unit = ""
    else:
        value = _plain(rec.parsed_value)
        unit = str(rec.unit)
    return Record(
        dif=bytes(dib.parts).hex().upper(),
        vif=bytes(vib.parts).hex().upper(),
        function=function,
        storage=int(storage),
        tariff=int(tariff or 0),
        subunit=int(subunit or 0),
        unit=unit,
        value=value,
    )


def _plain(value: object) -> Value:
    """pyMeterBus's value as a plain field value: Decimal to float, dates to ISO text."""
    if isinstance(value, decimal.Decimal):
        return _significant(float(value))
    if isinstance(value, float):
        return _significant(value)
    if isinstance(value, bool) or value is None:
        return None if value is None else int(value)
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def vif_quantity(vif: str) -> str:
    """The quantity a VIF with its VIFEs names, without the VIF's decimal exponent (pyMeterBus's table).

    Two meters of one model that differ only in resolution (volume in 10 l or in 100 l steps: VIF
    14 or 15) send records of the same quantity; their values arrive scaled alike. Plain-text and
    manufacturer VIFs, and codes the table lacks, are their own bytes.
    """
    data = bytes.fromhex(vif)
    if not data:
        return ""
    first = data[0]
    if first in (0xFB, 0xFD) and len(data) > 1:
        code, rest = (data[1] & 0x7F) | (0x200 if first == 0xFB else 0x100), data[2:]
    elif first & 0x7F in (0x7C, 0x7E, 0x7F):
        return vif.upper()
    else:
        code, rest = first & 0x7F, data[1:]
    entry = VIFTable.lut.get(code)
    if entry is None:
        return vif.upper()
    return str(entry[2].name) + (f"+{rest.hex().upper()}" if rest else "")


def profile_fields(
    records: Iterable[Record], profile: MbusProfile
) -> tuple[dict[str, FieldValue], dict[str, str]]:
    """The profile's fields from a meter's records, and why each field left out is missing.

    A field whose record is absent, or whose value is of the wrong kind, is left out with the
    reason; the other fields are kept (one bad record loses nothing else).
    """
    found: dict[tuple[str, str, int, int, int], Record] = {}
    for each in records:
        key = (vif_quantity(each.vif), each.function, each.storage, each.tariff, each.subunit)
        found.setdefault(key, each)
    fields: dict[str, FieldValue] = {}
    missing: dict[str, str] = {}
    for spec in profile.fields:
        record = found.get((vif_quantity(spec.vif), *spec.key[1:]))
        if record is None:
            missing[spec.field] = (
                f"no record with vif {spec.vif}, {spec.function}, storage {spec.storage}, "
                f"tariff {spec.tariff}, subunit {spec.subunit} in the telegram"
            )
            continue
        value = record.value
        if spec.type == "string":
            if value is None:
                missing[spec.field] = f"record vif {spec.vif} has no value"
            else:
                fields[spec.field] = str(value)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            missing[spec.field] = f"record vif {spec.vif} holds {value!r}, not a number"
            continue
        scaled = value * spec.scale
        if not math.isfinite(scaled):
            missing[spec.field] = f"record vif {spec.vif} holds {value!r}, no measurement"
            continue
        fields[spec.field] = round(scaled) if spec.type == "int" else _significant(float(scaled))
    return fields, missing


def _significant(value: float) -> float:
    """``value`` without the float noise of decimal scaling (561.0800000000001 -> 561.08)."""
    return float(f"{value:.12g}")
