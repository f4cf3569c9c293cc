"""Configs pushed by the API on the retained ``config`` topic: validated, applied, verified, reported.

A ``DesiredConfig`` carries the site, lines and devices, and may carry publish, journal (all
but its path) and health settings; the rest (broker, journal path, remote, update) stays as the
local file says, and so does a settings section the config leaves out. It is validated by the
same code as the file (the contract's ``validate_agent_config``), applied without touching lines
whose settings and devices did not change, and reported on ``config/state`` (retained). Versions
only go up: a redelivery of a version already handled (applied, refused or rolled back) is a no-op.

After applying, every device on a changed line that was answering before (or is new) must
answer within ``remote.grace_s``, and when the settings changed the agent must still be
connected, able to write its journal and get its readings acknowledged (``settings_check``); if
not, the version is reported ``rolled_back`` with what failed, and the last healthy config comes
back: the last applied one whose devices all answered (a config without devices proves nothing
and is never the target), or the one running before when none was. Devices on a LoRaWAN line
are not awaited: they transmit on their own schedule, which may be once a day.

The last applied config is kept in ``remote-config.json`` next to the journal, so an agent
that reboots without a broker runs it rather than the file; the file is the fallback when
nothing was ever applied or the kept config no longer validates against the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig, AgentConfigError, Device, Problem, ProfileCheck
from citygw.contract.agent_config_check import validate_agent_config
from edge.poller import HealthBoard, now_ms

log = logging.getLogger(__name__)

DEVICE_SECTIONS = ("site", "lines", "devices")
SETTINGS_SECTIONS = ("publish", "journal", "health")
REMOTE_SECTIONS = DEVICE_SECTIONS + SETTINGS_SECTIONS
SettingsCheck = Callable[[int], Awaitable[list[str]]]
"""What the agent cannot do now, or has not done since (ms): reach the broker, write, publish."""
CHECK_EVERY_S = 0.1


class RemoteConfig:
    """Applies pushed configs to a running agent; ``receive`` is the ``config`` topic's handler."""

    def __init__(
        self,
        base: AgentConfig,
        *,
        apply: Callable[[AgentConfig], set[str]],
        current: Callable[[], AgentConfig],
        board: HealthBoard,
        report: Callable[[wire.ConfigState], Awaitable[None]],
        profiles: ProfileCheck | None = None,
        settings_check: SettingsCheck | None = None,
    ) -> None:
        self.base = base
        self._settings_check = settings_check
        self.path = base.journal.path.with_name("remote-config.json")
        self._apply = apply
        self._current = current
        self._board = board
        self._report = report
        self._profiles = profiles
        self._lock = asyncio.Lock()
        kept = self._read()
        self.handled_version = int(kept.get("handled", 0))
        self.applied_version = int(kept.get("applied", 0))
        self._applied_body: dict[str, Any] | None = kept.get("body")
        # The last applied config whose devices all answered: where a rollback goes.
        self.healthy_version = int(kept.get("healthy", 0))
        self._healthy_body: dict[str, Any] | None = kept.get("healthy_body")

    def startup_config(self) -> AgentConfig:
        """The kept remote config merged into the file's, or the file's alone."""
        if self._applied_body is None:
            return self.base
        try:
            return self._merge(self._applied_body, f"{self.path} (config v{self.applied_version})")
        except AgentConfigError as exc:
            log.warning(
                "kept remote config v%d no longer valid, using the file: %s", self.applied_version, exc
            )
            self.applied_version, self._applied_body = 0, None
            return self.base

    async def receive(self, payload: bytes) -> None:
        """Handle one ``config`` message."""
        async with self._lock:
            try:
                desired = wire.DesiredConfig.model_validate_json(payload)
            except ValidationError as exc:
                version = _version_of(payload)
                if version is not None and version <= self.handled_version:
                    return
                reasons = [
                    f"config: {'.'.join(map(str, e['loc'])) or '(message)'}: {e['msg']}" for e in exc.errors()
                ]
                await self._state(version or 0, wire.ConfigOutcome.REFUSED, reasons)
                return
            if desired.version <= self.handled_version:
                return  # redelivered (retained) or older: already handled
            if desired.agent != self.base.agent_id:
                await self._state(
                    desired.version, wire.ConfigOutcome.REFUSED, [f"config is for {desired.agent}"]
                )
                return
            await self._take(desired)

    async def _take(self, desired: wire.DesiredConfig) -> None:
        version = desired.version
        body = desired.model_dump(mode="json", include=set(REMOTE_SECTIONS), exclude_none=True)
        try:
            if "path" in body.get("journal", {}):
                raise AgentConfigError(
                    Path(f"config v{version}"),
                    [Problem("journal.path", "the journal's path is the agent's own", "leave path out")],
                )
            config = self._merge(body, f"config v{version}")
        except AgentConfigError as exc:
            self._handled(version)
            await self._state(version, wire.ConfigOutcome.REFUSED, [str(p) for p in exc.problems], exc.file)
            return
        previous = self._current()
        answering_before = {d for d, r in self._board.devices.items() if r.state is wire.DeviceState.OK}
        since = now_ms()
        changed = self._apply(config)
        watched = [
            d.id
            for line_id in changed
            for d in config.devices_on(line_id)
            if (d.id in answering_before or d.id not in {p.id for p in previous.devices})
            and _polled(config, d)
        ]
        grace_s = self.base.remote.grace_s
        silent = await self._silent_after(watched, since, grace_s)
        reasons = [
            f"config v{version}: devices[{d}]: no answer within {grace_s:g} s "
            "with the new settings; fix: check the line and unit settings of this device"
            for d in silent
        ]
        if not silent and _settings_of(config) != _settings_of(previous):
            reasons = [
                f"config v{version}: {problem} within {grace_s:g} s of the new settings; fix: check the "
                "publish, journal and health settings"
                for problem in await self._settings_fail(since, grace_s)
            ]
        if reasons:
            back_to = self._rollback_target(previous)
            self._apply(back_to)
            self._handled(version)
            log.warning(
                "config v%d rolled back to v%d: %s", version, self.applied_version, "; ".join(reasons)
            )
            await self._state(version, wire.ConfigOutcome.ROLLED_BACK, reasons)
            return
        self.applied_version, self._applied_body = version, body
        if config.devices and all(
            (record := self._board.devices.get(d.id)) is not None and record.state is wire.DeviceState.OK
            for d in config.devices
            if _polled(config, d)
        ):
            self.healthy_version, self._healthy_body = version, body
        self._handled(version)
        log.info("config v%d applied; lines restarted: %s", version, ", ".join(sorted(changed)) or "none")
        await self._state(version, wire.ConfigOutcome.APPLIED, [])

    def _rollback_target(self, running: AgentConfig) -> AgentConfig:
        """The last healthy config (now the applied one again), else ``running``."""
        if self._healthy_body is None or self.healthy_version == self.applied_version:
            return running
        try:
            healthy = self._merge(self._healthy_body, f"{self.path} (config v{self.healthy_version})")
        except AgentConfigError as exc:
            log.warning(
                "healthy config v%d no longer valid, keeping the running one: %s", self.healthy_version, exc
            )
            return running
        self.applied_version, self._applied_body = self.healthy_version, self._healthy_body
        return healthy

    async def _silent_after(self, devices: list[str], since_ms: int, grace_s: float) -> list[str]:
        """Devices that gave no good read after ``since_ms`` within ``grace_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while True:
            silent = [d for d in devices if (self._board.record(d).last_ok or 0) < since_ms]
            if not silent or loop.time() >= deadline:
                return silent
            await asyncio.sleep(CHECK_EVERY_S)

    async def _settings_fail(self, since_ms: int, grace_s: float) -> list[str]:
        """What the agent still cannot do ``grace_s`` after the settings changed (none: all is well).

        Judged in the second half of the grace period, against what happened in it: the first batch
        after a change may still leave on the old settings' schedule and proves nothing.
        """
        if self._settings_check is None:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        await asyncio.sleep(grace_s / 2)
        judged_from = since_ms + int(grace_s * 500)
        while True:
            problems = await self._settings_check(judged_from)
            if not problems or loop.time() >= deadline:
                return problems
            await asyncio.sleep(CHECK_EVERY_S)

    def _merge(self, body: dict[str, Any], source: str) -> AgentConfig:
        raw = self.base.model_dump(mode="json", exclude_none=True)
        journal_path = raw["journal"]["path"]
        raw.update({key: body[key] for key in REMOTE_SECTIONS if key in body})
        if "journal" in body:
            raw["journal"] = {**body["journal"], "path": journal_path}
        return validate_agent_config(raw, Path(source), profiles=self._profiles)

    def _handled(self, version: int) -> None:
        self.handled_version = version
        self._write(
            {
                "handled": version,
                "applied": self.applied_version,
                "body": self._applied_body,
                "healthy": self.healthy_version,
                "healthy_body": self._healthy_body,
            }
        )

    async def _state(
        self, version: int, outcome: wire.ConfigOutcome, reasons: list[str], source: Path | None = None
    ) -> None:
        prefix = f"{source}: " if source is not None else ""
        await self._report(
            wire.ConfigState(
                agent=self.base.agent_id,
                version=version,
                state=outcome,
                ts=now_ms(),
                reasons=[(prefix + r)[:512] for r in reasons][: wire.MAX_REASONS],
                applied_version=self.applied_version,
            )
        )

    def _read(self) -> dict[str, Any]:
        try:
            kept = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s, starting from the file's config: %s", self.path, exc)
            return {}
        return kept if isinstance(kept, dict) else {}

    def _write(self, kept: dict[str, Any]) -> None:
        """Atomically: a power cut leaves the old file or the new one, never half of one."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(kept, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)


def _version_of(payload: bytes) -> int | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return version if isinstance(version, int) and version >= 0 else None


def _settings_of(config: AgentConfig) -> str:
    return "|".join(getattr(config, section).model_dump_json() for section in SETTINGS_SECTIONS)


def _polled(config: AgentConfig, device: Device) -> bool:
    """Whether the agent asks the device (and so can see it answer within the grace period): not a
    LoRaWAN sensor, which transmits on its own schedule (once a day, maybe)."""
    return config.line(device.line).kind != "lorawan"
