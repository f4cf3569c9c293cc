"""M-Bus (EN 13757-2/3) frames and data records, built and parsed with pyMeterBus (module ``meterbus``).

The link layer here says how long a frame is from its first bytes and whether it is whole
(start bytes, both length bytes, checksum, stop byte): pyMeterBus skips some of those checks,
and a bad frame must name what was wrong with it. Decoding the records (DIF/VIF, storage
number, tariff, subunit, value scaled to the VIF's unit) is pyMeterBus's.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from dataclasses import dataclass
from typing import Literal

import meterbus  # type: ignore[import-untyped]
from meterbus.core_objects import FunctionType  # type: ignore[import-untyped]

ACK = 0xE5
SHORT_START, LONG_START, STOP = 0x10, 0x68, 0x16
NETWORK_LAYER = 0xFD  # the meter selected by secondary address answers here
MAX_PRIMARY = 250  # 251..255 are reserved, the network layer, broadcasts
SND_NKE, SND_UD, REQ_UD2 = 0x40, 0x53, 0x5B
FCB, FCV = 0x20, 0x10
CI_SELECT = 0x52
RSP_UD_CI = frozenset({0x72, 0x76, 0x78})  # variable data, LSB or MSB first, without header
WILDCARD_SECONDARY = "FFFFFFFFFFFFFFFF"
SHOWN_BYTES = 48  # bytes of a bad frame quoted in its error

Function = Literal["instantaneous", "maximum", "minimum", "error", "manufacturer"]
_FUNCTIONS: dict[FunctionType, Function] = {
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
        """id + manufacturer + version + medium as one selects the meter (16 hex digits)."""
        man = manufacturer_code(self.manufacturer)
        return f"{self.id}{man & 0xFF:02X}{man >> 8:02X}{self.version:02X}{self.medium:02X}"


def manufacturer_code(name: str) -> int:
    """The 2-byte manufacturer field of a 3-letter FLAG id (KAM -> 0x2C2D)."""
    code = meterbus.manufacturer_id(name)
    if code is False:
        raise ValueError(f"{name!r} is no 3-letter manufacturer id")
    return int(code)


def decode(data: bytes) -> Telegram:
    """A whole RSP_UD frame as a Telegram; FrameError naming what is wrong otherwise."""
    check_frame(data)
    if data[0] != LONG_START:
        raise FrameError("expected a RSP_UD telegram (a long frame)", data)
    control, ci = data[4], data[6]
    if control & 0x4F != 0x08:
        raise FrameError(f"C field {control:02X} is no RSP_UD (08, 18, 28, 38)", data)
    if ci not in RSP_UD_CI:
        raise FrameError(f"CI field {ci:02X} is no variable data response (72, 76, 78)", data)
    try:
        telegram = meterbus.TelegramLong(list(data))
        records = tuple(_record(r) for r in telegram.records if not r.more_records_follow)
        header = telegram.body.bodyHeader
        more = bool(telegram.more_records_follow)
    except (meterbus.MBusError, IndexError, KeyError, ValueError, TypeError, struct.error) as exc:
        raise FrameError(f"records cannot be decoded ({type(exc).__name__} {exc})", data) from None
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


def _record(rec: object) -> Record:
    dib, vib = rec.dib, rec.vib  # type: ignore[attr-defined]
    function = _FUNCTIONS.get(dib.function_type, "manufacturer")
    storage, tariff, subunit = dib.parse_dife()
    if function == "manufacturer":
        value: Value = rec.dataField.decodeRAW  # type: ignore[attr-defined]
        unit = ""
    else:
        value = _plain(rec.parsed_value)  # type: ignore[attr-defined]
        unit = str(rec.unit)  # type: ignore[attr-defined]
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
        return float(value)
    if isinstance(value, bool) or value is None:
        return None if value is None else int(value)
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)
