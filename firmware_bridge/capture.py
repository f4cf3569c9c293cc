"""Field captures: every mapped range of a live device, recorded raw, kept as a golden test case.

A case folder (``testcases/<case>/``) holds ``capture.jsonl`` (each read as sent and answered,
with its response time), ``expected.yaml`` (the readings CityGW decoded at capture time, for
review and for correction from the vendor's display) and ``capture.yaml`` (provenance). The
golden suite decodes the raw words with today's profile and compares them with the expected
readings; the simulator replays them. The format is described in docs/profiles.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from citygw.contract.wire import FieldValue
from firmware_bridge.errors import DecodeError, DeviceExceptionResponse, DeviceTimeout, LineUnavailable
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.planner import ILLEGAL_DATA_ADDRESS, ReadRequest, covering, plan_reads
from firmware_bridge.profile import BIT_TABLES, Profile, RegisterSpec, Table
from firmware_bridge.registers import decode

FORMAT = 1
CAPTURE_FILE = "capture.jsonl"
EXPECTED_FILE = "expected.yaml"
INFO_FILE = "capture.yaml"
FUNCTION_OF_TABLE: dict[Table, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
TABLE_OF_READ: dict[int, Table] = {f: t for t, f in FUNCTION_OF_TABLE.items()}
# A number written in expected.yaml matches a decoded one within this relative difference (float32).
RELATIVE_TOLERANCE = 1e-6
Origin = Literal["field", "simulator", "published"]
Decoded = FieldValue | DecodeError


class NotCaptured(DecodeError):
    """No read of the capture covers the field: it says nothing about it (a partial, published dump)."""


class CaptureError(ValueError):
    """A case folder that cannot be read: the message names the file, the line and the fix."""


class Exchange(BaseModel):
    """One read on the wire and what came back: words (``registers`` as hex, or ``bits``), an
    exception code, or no answer (``timeout``); ``ms`` from request to answer (None: not known,
    as in a published log without timing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: int = Field(ge=0, le=255)
    function: Literal[1, 2, 3, 4]
    address: int = Field(ge=0, le=0xFFFF)
    count: int = Field(ge=1, le=2000)
    registers: tuple[str, ...] | None = None
    bits: tuple[Literal[0, 1], ...] | None = None
    exception: int | None = Field(default=None, ge=1, le=255)
    timeout: bool = False
    ms: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_outcome(self) -> Self:
        outcomes = [
            self.registers is not None,
            self.bits is not None,
            self.exception is not None,
            self.timeout,
        ]
        if sum(outcomes) != 1:
            raise ValueError("give exactly one of registers, bits, exception or timeout")
        bit_read = self.table in BIT_TABLES
        if self.registers is not None:
            if bit_read:
                raise ValueError(f"function {self.function} reads bits: give bits, not registers")
            if any(len(w) != 4 or any(c not in "0123456789abcdefABCDEF" for c in w) for w in self.registers):
                raise ValueError('registers are 4-digit hex words, e.g. "4366"')
        if self.bits is not None and not bit_read:
            raise ValueError(f"function {self.function} reads registers: give registers, not bits")
        answered = self.registers if self.registers is not None else self.bits
        if answered is not None and len(answered) != self.count:
            raise ValueError(f"count is {self.count} but {len(answered)} values are given")
        return self

    @property
    def table(self) -> Table:
        return TABLE_OF_READ[self.function]

    @property
    def words(self) -> list[int] | None:
        """The answered registers (bits as 0/1); None for an exception or no answer."""
        if self.registers is not None:
            return [int(w, 16) for w in self.registers]
        return list(self.bits) if self.bits is not None else None

    @classmethod
    def answered(cls, unit: int, request: ReadRequest, words: Sequence[int], ms: float) -> Exchange:
        """The exchange of a read that was answered with ``words`` (bits as 0/1)."""
        values: dict[str, Any] = (
            {"bits": tuple(words)}
            if request.table in BIT_TABLES
            else {"registers": tuple(f"{w:04X}" for w in words)}
        )
        return cls(**_head(unit, request), **values, ms=ms)

    def line(self) -> str:
        """This exchange as one line of ``capture.jsonl``."""
        return self.model_dump_json(exclude_none=True, exclude_defaults=True)


def _head(unit: int, request: ReadRequest) -> dict[str, Any]:
    return {
        "unit": unit,
        "function": FUNCTION_OF_TABLE[request.table],
        "address": request.address,
        "count": request.count,
    }


class CaptureInfo(BaseModel):
    """Provenance of a capture: what was read, from what, when, by whom and with which tool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    profile: str = Field(description="the profile's model: the shipped profile the golden suite decodes with")
    profile_file: str = Field(description="the profile as given to the probe (shipped name or path)")
    profile_sha256: str = Field(description="SHA-256 of the profile file's bytes at capture time")
    profile_verified: str = Field(description="the profile's own verified: datasheet, capture or modelled")
    origin: Origin = Field(description="field (a live device), simulator, or published (someone else's dump)")
    line: str = Field(description="where the device was: tcp://HOST:PORT or PORT@BAUD")
    unit: int = Field(ge=0, le=255)
    captured_at: datetime
    tool: str = Field(description="the program and version that made the capture")
    operator: str = Field(description="who ran it")
    note: str = ""


@dataclass(frozen=True)
class Expected:
    """One expected reading: a value, matched exactly or within ``within`` (a display's rounding)."""

    value: FieldValue
    within: float | None = None

    def matches(self, got: FieldValue) -> bool:
        want = self.value
        if _is_number(want) and _is_number(got):
            assert isinstance(want, int | float)
            assert isinstance(got, int | float)
            if self.within is not None:
                return abs(got - want) <= self.within
            return math.isclose(got, want, rel_tol=RELATIVE_TOLERANCE)
        return type(got) is type(want) and got == want


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class CaptureCase:
    """A case folder as read from disk."""

    folder: Path
    info: CaptureInfo
    exchanges: tuple[Exchange, ...]
    values: dict[str, Expected]
    errors: dict[str, str]


async def capture_device(line: ModbusLine, unit: int, profile: Profile) -> list[Exchange]:
    """Read every range the planner makes for ``profile``, recording each exchange.

    A read the device refuses with exception 02 is recorded and its fields are then read one by
    one (recorded too), so that a hole in a merged read costs only its own fields. Raises
    ``DeviceTimeout`` when the device answered nothing at all, and ``LineUnavailable`` at once.
    """
    exchanges: list[Exchange] = []

    async def record(request: ReadRequest) -> Exchange:
        try:
            words = await line.read_request(unit, request, timing=profile.timing)
        except LineUnavailable:
            raise
        except DeviceExceptionResponse as exc:
            exchange = Exchange(**_head(unit, request), exception=exc.code, ms=_ms(line))
        except DeviceTimeout:
            exchange = Exchange(**_head(unit, request), timeout=True, ms=_ms(line))
        else:
            exchange = Exchange.answered(unit, request, words, _ms(line))
        exchanges.append(exchange)
        return exchange

    for request in plan_reads(profile):
        exchange = await record(request)
        if exchange.exception == ILLEGAL_DATA_ADDRESS and len(request.specs) > 1:
            alone = {(s.address, s.register_count): s for s in request.specs}
            for spec in alone.values():
                await record(covering([spec]))
    if exchanges and all(e.timeout for e in exchanges):
        raise DeviceTimeout(f"unit {unit} on {line.name}: no answer to any of {len(exchanges)} reads")
    return exchanges


def _ms(line: ModbusLine) -> float:
    """The line's last round trip in milliseconds, to 0.1 ms."""
    return round(line.last_round_trip_s * 1000, 1)


def register_image(exchanges: Iterable[Exchange]) -> dict[Table, dict[int, int]]:
    """The answered words by table and address (a later answer for an address wins)."""
    image: dict[Table, dict[int, int]] = {}
    for exchange in exchanges:
        words = exchange.words
        if words is not None:
            image.setdefault(exchange.table, {}).update(enumerate(words, start=exchange.address))
    return image


def decode_capture(profile: Profile, exchanges: Sequence[Exchange]) -> dict[str, Decoded]:
    """Every readable field of ``profile`` decoded from the captured words, or why it cannot be."""
    image = register_image(exchanges)
    decoded: dict[str, Decoded] = {}
    for spec in profile.select():
        words = image.get(spec.table, {})
        addresses = range(spec.address, spec.end + 1)
        if not all(a in words for a in addresses):
            decoded[spec.field] = _missing(spec, exchanges)
            continue
        try:
            decoded[spec.field] = decode(spec, [words[a] for a in addresses])
        except DecodeError as exc:
            decoded[spec.field] = exc
    return decoded


def _missing(spec: RegisterSpec, exchanges: Sequence[Exchange]) -> DecodeError:
    """Why a field's registers are not in the capture: the device refused them, was silent, or no read."""
    for exchange in reversed(exchanges):
        covers = exchange.address <= spec.address and spec.end < exchange.address + exchange.count
        if exchange.table == spec.table and covers and exchange.words is None:
            answer = f"exception {exchange.exception:02X}" if exchange.exception else "no answer"
            return DecodeError(
                f"{spec.field}: {exchange.table} {exchange.address}+{exchange.count} got {answer}"
            )
    return NotCaptured(
        f"{spec.field}: {spec.table} {spec.address}+{spec.register_count} is not in the capture"
    )


def check_case(case: CaptureCase, profile: Profile) -> list[str]:
    """What today's ``profile`` decodes differently from the case's expected readings, field by field.

    Empty when the case passes. A field the capture covers but expected.yaml does not list is a
    difference too: a reviewer adds it (the profile gained a field). A field no read of the
    capture covers is left alone unless expected.yaml names it.
    """
    decoded = decode_capture(profile, case.exchanges)
    image = register_image(case.exchanges)
    problems: list[str] = []

    def where(field: str) -> str:
        spec = profile.register(field)
        words = image.get(spec.table, {})
        raw = " ".join(f"{words[a]:04X}" for a in range(spec.address, spec.end + 1) if a in words)
        return f"{spec.table} {spec.address:#06x} [{raw}] as {spec.type} {spec.order}"

    for field, want in case.values.items():
        if field not in decoded:
            problems.append(
                f"{field}: expected {want.value!r}, but profile {profile.model} reads no such field"
            )
            continue
        got = decoded[field]
        if isinstance(got, DecodeError):
            problems.append(f"{field}: expected {want.value!r}, decoding fails: {got}")
        elif not want.matches(got):
            problems.append(f"{field}: expected {want.value!r}, decoded {got!r} from {where(field)}")
    for field, error in case.errors.items():
        if field in decoded and not isinstance(decoded[field], DecodeError):
            problems.append(
                f"{field}: expected to fail ({error}), decoded {decoded[field]!r} from {where(field)}"
            )
    for field, got in decoded.items():
        if field not in case.values and field not in case.errors and not isinstance(got, NotCaptured):
            shown = f"fails ({got})" if isinstance(got, DecodeError) else f"decodes to {got!r}"
            problems.append(f"{field}: {shown}, but {EXPECTED_FILE} has no entry for it")
    return problems


def profile_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_case(
    folder: Path,
    info: CaptureInfo,
    profile: Profile,
    exchanges: Sequence[Exchange],
    decoded: Mapping[str, Decoded],
) -> None:
    """Write a new case folder; refuses to overwrite one (FileExistsError)."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise FileExistsError(f"{folder} already holds files: choose another --case name or folder")
    (folder / CAPTURE_FILE).write_text("".join(e.line() + "\n" for e in exchanges), "utf-8")
    values = {f: _shown(profile.register(f), v) for f, v in decoded.items() if not isinstance(v, DecodeError)}
    errors = {f: str(v) for f, v in decoded.items() if isinstance(v, DecodeError)}
    header = (
        f"# Readings CityGW decoded from {CAPTURE_FILE} with profile {info.profile} at capture time.\n"
        "# Check them against the device's display; correct a value, or write {value: 230.2, within: 0.05}\n"
        "# for a display's rounding. The golden suite decodes the capture and compares with this file.\n"
    )
    body = yaml.safe_dump({"values": values, "errors": errors}, sort_keys=False, allow_unicode=True)
    (folder / EXPECTED_FILE).write_text(header + body, "utf-8")
    info_data = info.model_dump(mode="json")
    (folder / INFO_FILE).write_text(yaml.safe_dump(info_data, sort_keys=False, allow_unicode=True), "utf-8")


def _shown(spec: RegisterSpec, value: FieldValue) -> FieldValue:
    """A float32 as its 7 significant digits (230.2, not 230.1999969482422): what a display shows."""
    if spec.type == "f32" and isinstance(value, float) and spec.scale == 1 and spec.offset == 0:
        return float(f"{value:.7g}")
    return value


def load_case(folder: Path) -> CaptureCase:
    """Read a case folder; ``CaptureError`` names the file, the line and what is wrong."""
    info_path = folder / INFO_FILE
    try:
        info = CaptureInfo.model_validate(_yaml(info_path))
    except ValidationError as exc:
        raise CaptureError(f"{info_path}: {_first(exc)}") from exc
    exchanges: list[Exchange] = []
    capture_path = folder / CAPTURE_FILE
    for number, text in enumerate(_text(capture_path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            exchanges.append(Exchange.model_validate(json.loads(text)))
        except json.JSONDecodeError as exc:
            raise CaptureError(f"{capture_path}:{number}: not JSON ({exc.msg})") from exc
        except ValidationError as exc:
            raise CaptureError(f"{capture_path}:{number}: {_first(exc)}") from exc
    expected_path = folder / EXPECTED_FILE
    expected = _yaml(expected_path)
    values = expected.get("values") or {}
    errors = expected.get("errors") or {}
    if not isinstance(values, dict) or not isinstance(errors, dict):
        raise CaptureError(f"{expected_path}: values and errors are mappings of field to value or message")
    return CaptureCase(
        folder=folder,
        info=info,
        exchanges=tuple(exchanges),
        values={field: _expected(expected_path, field, v) for field, v in values.items()},
        errors={str(field): str(message) for field, message in errors.items()},
    )


def _expected(path: Path, field: str, entry: object) -> Expected:
    if isinstance(entry, dict):
        if set(entry) - {"value", "within"} or "value" not in entry:
            raise CaptureError(f"{path}: {field}: write a value, or {{value: V, within: D}}")
        within = entry.get("within")
        if within is not None and (not _is_number(within) or within < 0):
            raise CaptureError(f"{path}: {field}: within is a tolerance, a number of at least 0")
        return Expected(_field_value(path, field, entry["value"]), within)
    return Expected(_field_value(path, field, entry))


def _field_value(path: Path, field: str, value: object) -> FieldValue:
    if not isinstance(value, bool | int | float | str):
        raise CaptureError(f"{path}: {field}: {value!r} is no reading (a number, true/false or text)")
    return value


def _text(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot be read ({exc.strerror}): is this a capture folder?") from exc


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(_text(path))
    except yaml.YAMLError as exc:
        raise CaptureError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise CaptureError(f"{path}: expected a mapping")
    return data


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where + ': ' if where else ''}{error['msg'].removeprefix('Value error, ')}{more}"


def find_cases(root: Path) -> list[Path]:
    """Every capture case folder (``testcases/<case>/`` with a capture.jsonl) under ``root``."""
    return sorted(p.parent for p in root.rglob(f"testcases/*/{CAPTURE_FILE}"))
