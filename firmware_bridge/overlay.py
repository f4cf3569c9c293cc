"""A device's overlay on its profile: what one installed device does differently from its model.

A site config names a profile per device and may overlay it: the device's timing, the largest
read it takes, the subset of fields worth reading, and per field scale, offset, word order and
write function (a CT ratio, a firmware that swaps words, one that refuses FC06). The result is an
ordinary ``Profile`` validated like a profile file, so the planner, the bus budget, the poller and
commands need no special case. ``overlaid`` says which values differ from the profile, for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from firmware_bridge.profile import DeviceTiming, Profile, WordOrder, WriteFunction


def _timing_keys(value: dict[str, Any]) -> dict[str, Any]:
    """Only the keys given, each checked as ``DeviceTiming`` checks it (the others stay the profile's)."""
    try:
        DeviceTiming.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "timing"
        if error["type"] == "extra_forbidden":
            raise ValueError(
                f"{key} is no timing setting; timing takes {', '.join(DeviceTiming.model_fields)}"
            ) from None
        raise ValueError(f"{key}: {error['msg']}") from None
    return value


TimingOverlay = Annotated[dict[str, Any], AfterValidator(_timing_keys)]


class FieldOverlay(BaseModel):
    """How one field of this device differs from the profile; unset keys keep the profile's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: float | None = None
    offset: float | None = None
    order: WordOrder | None = Field(default=None, description="word and byte order (ABCD, CDAB, BADC, DCBA)")
    write_function: WriteFunction | None = None

    @field_validator("scale")
    @classmethod
    def _scale(cls, scale: float | None) -> float | None:
        if scale == 0:
            raise ValueError("scale 0 would turn every value into the offset; use a non-zero scale")
        return scale


class ProfileOverlay(BaseModel):
    """A device's overlay on its profile (agent config ``devices[].overlay``); unset keys keep the profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timing: TimingOverlay | None = Field(
        default=None,
        description="timing keys that replace the profile's: response_timeout_ms, guard_ms, settle_ms, "
        "connect_delay_s, close_between_polls",
    )
    max_registers: int | None = Field(default=None, ge=1, le=125, description="largest read the device takes")
    fields: list[str] | None = Field(
        default=None, min_length=1, description="read only these fields (writable ones stay writable)"
    )
    word_order: WordOrder | None = Field(
        default=None, description="word and byte order of every field of this device (a field's own wins)"
    )
    write_function: WriteFunction | None = Field(
        default=None, description="function code of single-register writes (16: the device refuses FC06)"
    )
    registers: dict[str, FieldOverlay] = Field(
        default_factory=dict, description="per field: scale, offset, order, write_function"
    )


@dataclass(frozen=True)
class OverlayProblem:
    """Why an overlay cannot apply: ``where`` in the overlay (``fields[2]``), what is wrong, the fix."""

    where: str
    what: str
    fix: str


class OverlayError(ValueError):
    def __init__(self, problems: list[OverlayProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.where}: {p.what}; fix: {p.fix}" for p in problems))


def apply_overlay(profile: Profile, overlay: ProfileOverlay | None) -> Profile:
    """The profile as this device has it; OverlayError naming each problem (unknown fields, bad values)."""
    if overlay is None:
        return profile
    names = [spec.field for spec in profile.registers]
    fix = f"use field names of profile {profile.model}: {', '.join(names)}"
    problems = [
        OverlayProblem(f"fields[{j}]", f"profile {profile.model} has no field {name!r}", fix)
        for j, name in enumerate(overlay.fields or [])
        if name not in names
    ]
    problems += [
        OverlayProblem(f"registers.{name}", f"profile {profile.model} has no field {name!r}", fix)
        for name in overlay.registers
        if name not in names
    ]
    if problems:
        raise OverlayError(problems)
    data = profile.model_dump()
    data["timing"] = {**data["timing"], **(overlay.timing or {})}
    for key in ("max_registers", "write_function"):
        if getattr(overlay, key) is not None:
            data[key] = getattr(overlay, key)
    wanted = set(overlay.fields) if overlay.fields is not None else None
    registers = []
    for spec in data["registers"]:
        if overlay.word_order is not None and spec["type"] != "bit":
            spec["order"] = overlay.word_order
        spec.update(overlay.registers.get(spec["field"], FieldOverlay()).model_dump(exclude_none=True))
        if wanted is not None and spec["field"] not in wanted:
            if not spec["writable"]:
                continue
            spec["readable"] = False  # still written by commands, no longer polled
        registers.append(spec)
    data["registers"] = registers
    try:
        overlaid = Profile.model_validate(data)
    except ValidationError as exc:
        raise OverlayError([_problem(error, data) for error in exc.errors()]) from None
    too_big = [s for s in overlaid.select() if s.table not in ("coil", "discrete")]
    too_big = [s for s in too_big if s.register_count > overlaid.max_registers]
    if too_big:
        need = max(s.register_count for s in too_big)
        raise OverlayError(
            [
                OverlayProblem(
                    "max_registers",
                    f"{too_big[0].field} takes {too_big[0].register_count} registers, more than one read "
                    f"of {overlaid.max_registers}",
                    f"set max_registers to {need} or more, or leave {too_big[0].field} out of fields",
                )
            ]
        )
    return overlaid


def _problem(error: Any, data: dict[str, Any]) -> OverlayProblem:
    """A problem of the overlaid profile, placed at the overlay key that caused it where that is known."""
    loc = list(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if loc[:1] == ["registers"] and len(loc) >= 2 and isinstance(loc[1], int):
        name = data["registers"][loc[1]]["field"]
        key = f".{loc[2]}" if len(loc) > 2 else ""
        return OverlayProblem(f"registers.{name}{key}", f"field {name}: {message}", "change or remove it")
    where = ".".join(str(part) for part in loc) or "overlay"
    return OverlayProblem(where, message, "change or remove it")


def overlaid(profile: Profile, overlay: ProfileOverlay | None) -> dict[str, dict[str, Any]]:
    """Each value the overlay changes, by path: ``{"max_registers": {"profile": 125, "device": 8}}``."""
    if overlay is None:
        return {}
    changes: dict[str, dict[str, Any]] = {}

    def note(path: str, before: Any, after: Any) -> None:
        if before != after:
            changes[path] = {"profile": before, "device": after}

    for key, value in (overlay.timing or {}).items():
        note(f"timing.{key}", getattr(profile.timing, key), value)
    for key in ("max_registers", "write_function"):
        if getattr(overlay, key) is not None:
            note(key, getattr(profile, key), getattr(overlay, key))
    if overlay.fields is not None:
        read = [spec.field for spec in profile.select()]
        note("fields", read, [name for name in read if name in overlay.fields])
    for spec in profile.registers:
        settings = overlay.registers.get(spec.field, FieldOverlay()).model_dump(exclude_none=True)
        if overlay.word_order is not None and spec.type != "bit":
            settings.setdefault("order", overlay.word_order)
        for key, value in settings.items():
            before = profile.write_function_of(spec) if key == "write_function" else getattr(spec, key)
            note(f"registers.{spec.field}.{key}", before, value)
    return changes
