"""Commands from the ``cmd`` topic become Modbus writes on the device's line, read back and answered.

A command is range-checked against the device's profile before anything touches the line,
runs ahead of waiting polls (``ModbusPoller.submit_priority``), and is answered on
``cmd/result``. Ids are remembered on disk (``commands.sqlite`` next to the journal) for a
week: a redelivered command is answered again with its first result, never run twice. A
command that cannot start before ``expires_at`` is answered ``expired`` and never runs late.

Lighting actions map onto the profile's writable ``*_brightness`` fields (DALI arc level):
``lamp`` A → ``lamp{A}_brightness``, ``group`` G → ``group{G}_brightness``, ``cabinet`` →
every ``*_brightness`` field; ``on`` writes the field's max, ``off`` its min, ``dim`` the
level in percent of min..max (rounded).

A written value is judged at the device, not by the set point: a readable register is read
back; a write-only set point (a lamp's brightness) by the field that ``follows`` it (its actual
level) and the lamp's DALI status byte, read until the level is reached or the profile's
settle time is over. A lamp asked to light that reports a lamp or ballast failure, or stays at
level 0, is ``done_but_dark``; a level that does not arrive is ``failed``; each with what was read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
from pydantic import ValidationError

from citygw.contract import wire
from edge.poller import LineStopped, ModbusPoller, now_ms
from firmware_bridge.errors import DeviceError
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.profile import INTEGER_TYPES, Profile, RegisterSpec
from firmware_bridge.registers import decode, encode
from firmware_bridge.roles import lamp_faults
from firmware_bridge.settable import check_set_field

if TYPE_CHECKING:
    from edge.agent import Agent
    from edge.lorawan import LorawanBridge

log = logging.getLogger(__name__)

REMEMBER_S = 7 * 24 * 3600
BRIGHTNESS = "_brightness"
LOOK_EVERY_S = 0.25  # how often a lamp is read while it settles after a command
# A *_brightness field of range 0..254 is a DALI arc power level (IEC 62386-102): 0 is off, 1..254
# follow the standard logarithmic curve from 0.1 % to 100 % of light output, so 127 gives 3 %.
DALI_ARC_MAX = 254
_DALI_STEPS_PER_DECADE = 253 / 3


class Refused(ValueError):
    """The command cannot be run as asked; the message says why."""


@dataclass(frozen=True)
class Write:
    field: str
    value: wire.FieldValue
    spec: RegisterSpec


class CommandLog:
    """Ids of recent commands and their results, on disk, so a redelivery is answered, not re-run."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS commands "
            "(id TEXT PRIMARY KEY, received_at REAL NOT NULL, result BLOB)"
        )
        self._db.execute("DELETE FROM commands WHERE received_at < ?", (time.time() - REMEMBER_S,))

    def seen(self, command_id: str) -> tuple[bool, bytes | None]:
        """(known, its result if it has one)."""
        row = self._db.execute("SELECT result FROM commands WHERE id = ?", (command_id,)).fetchone()
        return (False, None) if row is None else (True, None if row[0] is None else bytes(row[0]))

    def started(self, command_id: str) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO commands (id, received_at) VALUES (?, ?)", (command_id, time.time())
        )

    def finished(self, command_id: str, result: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO commands (id, received_at, result) VALUES (?, ?, ?)",
            (command_id, time.time(), result),
        )

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class Look:
    """Where to see what a device made of one write: the write's own read-back, or a write-only set
    point's actual level (``follows``), the lamp's DALI status byte, a group's fault register."""

    write: Write
    level: RegisterSpec | None = None
    status: RegisterSpec | None = None
    fault: RegisterSpec | None = None

    @property
    def fields(self) -> list[str]:
        return [s.field for s in (self.level, self.status, self.fault) if s is not None]

    @property
    def asks_light(self) -> bool:
        """A lighting write that asks for light (on, or dim above 0)."""
        value = self.write.value
        lighting = self.write.field.endswith(BRIGHTNESS)
        return lighting and isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class Verdict:
    outcome: wire.CommandOutcome
    detail: str | None = None


def looks_for(profile: Profile, writes: list[Write]) -> list[Look]:
    """What to read after each write-only write (none for a write that is read back)."""
    looks = []
    for write in writes:
        if write.spec.readable:
            continue
        base = write.field.removesuffix(BRIGHTNESS) if write.field.endswith(BRIGHTNESS) else None
        level = profile.follower(write.field)
        status = _optional(profile, f"{base}_status") if base is not None and level is not None else None
        fault = _optional(profile, f"{base}_fault") if base is not None else None
        looks.append(Look(write, level, status, fault))
    return looks


def _optional(profile: Profile, field: str) -> RegisterSpec | None:
    try:
        spec = profile.register(field)
    except KeyError:
        return None
    return spec if spec.readable else None


def judge(look: Look, read: dict[str, wire.FieldValue], *, final: bool) -> Verdict | None:
    """The outcome of one write from what was read at the device; None: not settled yet, look again."""
    name = look.write.field.removesuffix(BRIGHTNESS)
    status = read.get(look.status.field) if look.status is not None else None
    flags = (look.status.flags or {}) if look.status is not None else {}
    faults = lamp_faults(flags, status) if isinstance(status, int) and not isinstance(status, bool) else []
    fault = read.get(look.fault.field) if look.fault is not None else None
    if look.asks_light and (faults or fault not in (None, 0, False)):
        why = f"{' and '.join(faults)} failure (status {status})" if faults else f"fault register {fault}"
        level = f", level {read[look.level.field]}" if look.level is not None else ""
        return Verdict(wire.CommandOutcome.DONE_BUT_DARK, f"{name}: {why}{level}")
    if look.level is None:
        if look.fault is None:
            return Verdict(
                wire.CommandOutcome.FAILED, f"{look.write.field} is write-only and nothing reports it"
            )
        return Verdict(wire.CommandOutcome.DONE)  # a group reports no level: no fault is all it tells
    actual = read[look.level.field]
    if holds(look.level, look.write.value, actual):
        return Verdict(wire.CommandOutcome.DONE)
    if not final:
        return None
    if look.asks_light and actual in (0, 0.0):
        return Verdict(
            wire.CommandOutcome.DONE_BUT_DARK,
            f"{name}: level 0 although {look.write.value} was asked, no failure reported",
        )
    return Verdict(
        wire.CommandOutcome.FAILED, f"{look.level.field} reads {actual} after writing {look.write.value}"
    )


def plan_writes(command: wire.Command, profile: Profile) -> list[Write]:
    """The field writes a command means for this profile; raises Refused (no such field, out of range)."""
    if command.action is wire.CommandAction.SET_FIELD:
        assert command.field is not None
        assert command.value is not None
        try:
            check_set_field(profile, command.field, command.value)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        return [Write(command.field, command.value, profile.register(command.field))]
    target = command.target
    assert target is not None
    if target.kind is wire.TargetKind.CABINET:
        fields = [s.field for s in profile.registers if s.writable and s.field.endswith(BRIGHTNESS)]
        if not fields:
            raise Refused(f"profile {profile.model} has no writable *{BRIGHTNESS} field to switch")
    else:
        fields = [f"{target.kind.value}{target.address}{BRIGHTNESS}"]
    writes = []
    for field in fields:
        spec = _writable(profile, field)
        low, high = spec.min or 0, spec.max if spec.max is not None else DALI_ARC_MAX
        if command.action is wire.CommandAction.ON:
            value = high
        elif command.action is wire.CommandAction.OFF:
            value = low
        elif _is_dali_arc(spec):
            value = dali_arc_level(command.level or 0)
        else:
            value = round(low + (high - low) * (command.level or 0) / 100)
        if spec.is_integer and isinstance(value, float) and value.is_integer():
            value = int(value)  # a level, not a measurement: 254, not 254.0
        writes.append(Write(field, value, spec))
    return writes


def _is_dali_arc(spec: RegisterSpec) -> bool:
    return (spec.min or 0) == 0 and spec.max == DALI_ARC_MAX


def dali_arc_level(percent: float) -> int:
    """The DALI arc power level that gives ``percent`` of full light output (0: off)."""
    if percent <= 0:
        return 0
    return max(1, min(DALI_ARC_MAX, round(1 + _DALI_STEPS_PER_DECADE * (math.log10(percent) + 1))))


def dali_percent(arc: float) -> float:
    """Light output in percent at DALI arc power level ``arc`` (0: off)."""
    return 0.0 if arc <= 0 else 10 ** ((arc - 1) / _DALI_STEPS_PER_DECADE - 1)


def level_percent(spec: RegisterSpec, value: wire.FieldValue) -> int | None:
    """A brightness read back, in percent of light output (DALI) or of the field's range."""
    if not isinstance(value, int | float) or isinstance(value, bool) or spec.max is None:
        return None
    if _is_dali_arc(spec):
        return round(dali_percent(value))
    low = spec.min or 0
    return round(100 * (value - low) / (spec.max - low)) if spec.max > low else None


def holds(spec: RegisterSpec, written: wire.FieldValue, read_back: wire.FieldValue) -> bool:
    """Whether ``read_back`` is ``written`` as the register can hold it.

    That is what the profile's codec makes of it (7.3 in an f32 reads back 7.300000190734863,
    21.55 on a scale-0.1 register 21.5), or within half a step of a scaled integer register,
    where the device rounded its own way (21.6).
    """
    if read_back == written:
        return True
    numbers = [v for v in (written, read_back) if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) < 2:
        return False
    try:
        if read_back == decode(spec, encode(spec, written)):
            return True
    except (ValueError, DeviceError):
        return False
    step = abs(spec.scale) if spec.type in INTEGER_TYPES else 0.0
    return abs(numbers[1] - numbers[0]) <= step * (0.5 + 1e-9)


def _writable(profile: Profile, field: str) -> RegisterSpec:
    try:
        spec = profile.register(field)
    except KeyError:
        raise Refused(f"profile {profile.model} has no field {field}") from None
    if not spec.writable:
        raise Refused(f"{field} is read-only in profile {profile.model}")
    return spec


class Commands:
    """Receives ``cmd`` messages for one agent and answers each on ``cmd/result``."""

    def __init__(
        self, agent: Agent, path: Path, send: Callable[[wire.CommandResult], Awaitable[None]]
    ) -> None:
        self.agent = agent
        self.log = CommandLog(path)
        self._send = send
        self._running: set[str] = set()

    def close(self) -> None:
        self.log.close()

    async def receive(self, payload: bytes) -> None:
        """Handle one ``cmd`` message (a bad one is answered ``refused`` when it has an id)."""
        try:
            command = wire.Command.model_validate_json(payload)
        except ValidationError as exc:
            command_id = _id_of(payload)
            log.warning("refused a command that does not validate: %s", exc)
            if command_id is not None:
                await self._answer(command_id, wire.CommandOutcome.REFUSED, detail=_first_error(exc))
            return
        known, result = self.log.seen(command.id)
        if command.id in self._running:
            return  # a redelivery while it runs: its result is on the way
        if result is not None:
            await self._send(wire.CommandResult.model_validate_json(result))
            return
        if known:
            await self._answer(
                command.id,
                wire.CommandOutcome.FAILED,
                detail="interrupted by an agent restart; not run again",
            )
            return
        self._running.add(command.id)
        try:
            await self._run(command)
        finally:
            self._running.discard(command.id)

    async def _run(self, command: wire.Command) -> None:
        agent_id = self.agent.config.agent_id
        if command.agent != agent_id:
            await self._answer(command.id, wire.CommandOutcome.REFUSED, detail=f"sent to {command.agent}")
            return
        if now_ms() > command.expires_at:
            await self._answer(command.id, wire.CommandOutcome.EXPIRED, detail="arrived after expires_at")
            return
        bridge = self.agent.lorawan_bridge(command.device)
        if bridge is not None:
            await self._downlink(command, bridge)
            return
        try:
            device, profile, poller = self.agent.commandable(command.device)
            writes = plan_writes(command, profile)
        except Refused as exc:
            await self._answer(command.id, wire.CommandOutcome.REFUSED, detail=str(exc))
            return
        self.log.started(command.id)
        log.info("command %s from %s: %s on %s", command.id, command.requested_by, command.action, device.id)
        unit = device.unit or 0
        started = asyncio.Event()

        async def job(line: ModbusLine) -> list[wire.FieldValue | None]:
            if now_ms() > command.expires_at:
                raise TimeoutError("expired while waiting for the line")
            started.set()
            return [await line.write(unit, profile, w.field, w.value) for w in writes]

        run = asyncio.ensure_future(poller.submit_priority(job))
        await asyncio.wait({run}, timeout=max(0.0, (command.expires_at - now_ms()) / 1000))
        if not run.done() and not started.is_set():
            run.cancel()  # never started: the poller skips it, it cannot run late
            await self._answer(
                command.id, wire.CommandOutcome.EXPIRED, detail="line busy or down until expires_at"
            )
            return
        try:
            values = await run
        except TimeoutError:
            await self._answer(
                command.id, wire.CommandOutcome.EXPIRED, detail="line busy or down until expires_at"
            )
            return
        except LineStopped as exc:
            await self._answer(command.id, wire.CommandOutcome.FAILED, detail=str(exc))
            return
        except (DeviceError, ValueError) as exc:
            await self._answer(command.id, wire.CommandOutcome.FAILED, detail=str(exc) or type(exc).__name__)
            return
        looks = looks_for(profile, writes)
        try:
            verdicts, read = await self._look(poller, unit, profile, looks)
        except (DeviceError, ValueError, LineStopped) as exc:
            why = str(exc) or type(exc).__name__
            await self._answer(
                command.id, wire.CommandOutcome.FAILED, detail=f"written; reading it back: {why}"
            )
            return
        # A readable register is judged by its read-back, a write-only one at the device.
        at_device = {look.write.field: (look, verdict) for look, verdict in zip(looks, verdicts, strict=True)}
        judged: list[Verdict] = []
        actual: list[tuple[RegisterSpec, wire.FieldValue]] = []
        for write, value in zip(writes, values, strict=True):
            if write.field in at_device:
                look, verdict = at_device[write.field]
                judged.append(verdict)
                if look.level is not None:
                    actual.append((write.spec, read[look.level.field]))
                continue
            assert value is not None  # a readable register is read back
            ok = holds(write.spec, write.value, value)
            detail = None if ok else f"{write.field} reads back {value} after writing {write.value}"
            judged.append(Verdict(wire.CommandOutcome.DONE if ok else wire.CommandOutcome.FAILED, detail))
            actual.append((write.spec, value))
        outcome = next(
            (
                o
                for o in (wire.CommandOutcome.FAILED, wire.CommandOutcome.DONE_BUT_DARK)
                if any(v.outcome is o for v in judged)
            ),
            wire.CommandOutcome.DONE,
        )
        levels = {level_percent(spec, value) for spec, value in actual}
        await self._answer(
            command.id,
            outcome,
            detail="; ".join(v.detail for v in judged if v.detail) or None,
            value=actual[0][1] if len(writes) == 1 and actual else None,
            level=levels.pop() if command.target is not None and len(levels) == 1 else None,
            read=read or None,
        )

    async def _downlink(self, command: wire.Command, bridge: LorawanBridge) -> None:
        """A command for a LoRaWAN device: the downlink its profile declares, queued at the network server.

        ``done`` says the server took it: a class A device receives it after its next uplink, and
        its effect shows in the uplinks after that.
        """
        if (
            command.action is not wire.CommandAction.SET_FIELD
            or command.field is None
            or command.value is None
        ):
            await self._answer(
                command.id,
                wire.CommandOutcome.REFUSED,
                detail=f"{command.device} is a LoRaWAN device: it takes set_field for a command of its "
                "profile",
            )
            return
        self.log.started(command.id)
        log.info(
            "command %s from %s: downlink %s to %s",
            command.id,
            command.requested_by,
            command.field,
            command.device,
        )
        try:
            async with asyncio.timeout(max(0.0, (command.expires_at - now_ms()) / 1000)):
                detail = await bridge.send(command.device, command.field, command.value)
        except TimeoutError:
            await self._answer(
                command.id, wire.CommandOutcome.EXPIRED, detail="network server broker down until expires_at"
            )
        except (ValueError, LookupError) as exc:
            await self._answer(command.id, wire.CommandOutcome.REFUSED, detail=str(exc))
        except aiomqtt.MqttError as exc:
            await self._answer(command.id, wire.CommandOutcome.FAILED, detail=f"downlink not queued: {exc}")
        else:
            await self._answer(command.id, wire.CommandOutcome.DONE, detail=detail, value=command.value)

    async def _look(
        self, poller: ModbusPoller, unit: int, profile: Profile, looks: list[Look]
    ) -> tuple[list[Verdict], dict[str, wire.FieldValue]]:
        """Read the devices' answer to write-only writes until each is judged or the settle time is over."""
        fields = sorted({field for look in looks for field in look.fields})
        if not looks:
            return [], {}
        if not fields:
            return [judge(look, {}, final=True) or Verdict(wire.CommandOutcome.DONE) for look in looks], {}
        deadline = time.monotonic() + profile.timing.settle
        while True:
            read = await poller.submit_priority(lambda line: line.read_fields(unit, profile, fields))
            final = time.monotonic() >= deadline
            verdicts = [judge(look, read, final=final) for look in looks]
            if all(v is not None for v in verdicts):
                return [v for v in verdicts if v is not None], read
            await asyncio.sleep(max(0.0, min(LOOK_EVERY_S, deadline - time.monotonic())))

    async def _answer(
        self,
        command_id: str,
        outcome: wire.CommandOutcome,
        *,
        detail: str | None = None,
        value: wire.FieldValue | None = None,
        level: int | None = None,
        read: dict[str, wire.FieldValue] | None = None,
    ) -> None:
        result = wire.CommandResult(
            agent=self.agent.config.agent_id,
            id=command_id,
            outcome=outcome,
            ts=now_ms(),
            detail=detail[:512] if detail else None,
            value=value,
            level=level,
            read=read,
        )
        self.log.finished(command_id, wire.encode(result))
        await self._send(result)


def _id_of(payload: bytes) -> str | None:
    import json
    import re

    try:
        data = json.loads(payload)
    except ValueError:
        return None
    command_id = data.get("id") if isinstance(data, dict) else None
    if isinstance(command_id, str) and re.match(wire.COMMAND_ID_PATTERN, command_id):
        return command_id
    return None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(message)"
    return f"{where}: {error['msg']}"
