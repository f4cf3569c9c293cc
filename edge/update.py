"""Signed releases on the agent: take an ``update`` order, fetch, stage, restart into it, judge it.

An order (``wire.UpdateOrder``, retained on the agent's own ``update`` topic) is taken once per
rollout. Refused before anything changes, each with its reason on ``update/state``: a signature no
pinned key made, a version not newer than the running one (no downgrade, no reinstall), a running
agent older than the release's ``min_agent_version``, a wheel whose size or sha256 is not the
manifest's, an agent not started by ``citygw edge launch``. The wheel comes from the API over
HTTP(S) with Range requests, so a cellular link that drops resumes where it stopped; it is unpacked
into its own folder, the ``trial`` marker is written, ``current`` swapped, and the agent exits with
``EXIT_RESTART`` for the launcher to start the new version.

The new version, finding itself on trial, must within the deadline be connected to the broker,
able to write next to its journal, and hear every device that answered before the switch; then it
ends the trial and reports ``applied``. If not, it says why and exits ``EXIT_UNHEALTHY``; the
launcher (the installed code, edge/launcher.py) rolls back, and the old version reports
``rolled_back`` with the reason when it is up again.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import ssl
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, cast

import httpx
from pydantic import ValidationError

from citygw.contract import release, wire
from citygw.contract.agent_config import UpdateSettings
from edge.launcher import EXIT_RESTART, EXIT_UNHEALTHY, LAUNCHED_ENV
from edge.publisher import Backoff
from edge.releases import DOWNLOADS, Releases, Trial

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.2
HTTP_TIMEOUT_S = 30.0

Report = Callable[[wire.UpdateState], Awaitable[None]]
Problems = Callable[[int, list[str]], list[str]]
"""What keeps the agent from being healthy now: (trial start in ms, devices to hear) → reasons."""


class Refused(Exception):
    """An order the agent will not take; the message is the reason reported."""


class DownloadFailed(Refused):
    """The wheel did not arrive in time, or the API answered that it will not send it."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Updater:
    """The agent's side of rollouts; ``receive`` is the ``update`` topic's handler."""

    def __init__(
        self,
        agent_id: str,
        settings: UpdateSettings,
        *,
        running: str,
        report: Report,
        exit: Callable[[int], Awaitable[None]],
        answering: Callable[[], list[str]],
    ) -> None:
        self.agent_id = agent_id
        self.settings = settings
        self.running = running
        self.releases = Releases(settings.staging_dir)
        self.keys = [release.parse_public_key(key) for key in settings.public_keys]
        self._report = report
        self._exit = exit
        self._answering = answering
        self._lock = asyncio.Lock()

    async def receive(self, payload: bytes) -> None:
        async with self._lock:
            try:
                order = wire.UpdateOrder.model_validate_json(payload)
            except ValidationError as exc:
                log.warning("update order refused, it does not validate: %s", exc.errors()[:3])
                return
            if order.rollout <= self.releases.handled() or order.agent != self.agent_id:
                return  # a retained order already handled, or not ours
            try:
                manifest = self._check(order)
                data = await self._download(order, manifest)
                release.check_artefact(manifest, data)
                release.check_pure_wheel(data, manifest.wheel)
                await asyncio.to_thread(self._unpack, manifest.version, data)
            except (Refused, release.ReleaseError, OSError, zipfile.BadZipFile) as exc:
                failed = isinstance(exc, DownloadFailed | OSError | zipfile.BadZipFile)  # disk full...
                state = wire.UpdateOutcome.FAILED if failed else wire.UpdateOutcome.REFUSED
                log.warning("release %s (rollout %d) %s: %s", order.version, order.rollout, state.value, exc)
                self.releases.set_handled(order.rollout)
                self._keep_result(order.rollout, order.version, state, [str(exc)])
                await self._say(order.rollout, order.version, state, [str(exc)])
                return
            await self._stage(order, manifest)

    def _check(self, order: wire.UpdateOrder) -> release.Manifest:
        if os.environ.get(LAUNCHED_ENV) != "1":
            raise Refused(
                "this agent was not started by citygw edge launch, which alone can start and roll back a "
                "release; fix: use deploy/edge/citygw-edge.service"
            )
        manifest = release.verify(order.manifest.encode(), order.signature, self.keys)
        if manifest.version != order.version:
            raise Refused(f"the order says version {order.version}, the signed manifest {manifest.version}")
        if not release.is_newer(manifest.version, self.running):
            raise Refused(
                f"version {manifest.version} is not newer than the running {self.running}: no downgrade"
            )
        if not release.at_least(self.running, manifest.min_agent_version):
            raise Refused(
                f"version {manifest.version} needs an agent of at least {manifest.min_agent_version} to "
                f"install it; this one runs {self.running}"
            )
        return manifest

    async def _download(self, order: wire.UpdateOrder, manifest: release.Manifest) -> bytes:
        """The wheel, resumed with Range after every failure until ``download_timeout_s``."""
        folder = self.settings.staging_dir / DOWNLOADS
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{manifest.sha256}.part"
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=self.settings.ca_file) if self.settings.ca_file else True
        )
        backoff = Backoff(1.0, 60.0)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.settings.download_timeout_s
        last_error = "no attempt"
        async with httpx.AsyncClient(
            base_url=self.settings.api_url, verify=verify, timeout=HTTP_TIMEOUT_S
        ) as client:
            while loop.time() < give_up:
                try:
                    if await _fetch(client, order.path, part, manifest.size):
                        data = part.read_bytes()
                        part.unlink()
                        return data
                except (httpx.HTTPError, OSError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                    log.info("release %s download interrupted (%s); resuming", manifest.version, last_error)
                except DownloadFailed:
                    part.unlink(missing_ok=True)
                    raise
                await asyncio.sleep(min(backoff.next(), max(0.0, give_up - loop.time())))
        part.unlink(missing_ok=True)
        raise DownloadFailed(
            f"the release could not be downloaded within {self.settings.download_timeout_s:g} s: {last_error}"
        )

    async def _stage(self, order: wire.UpdateOrder, manifest: release.Manifest) -> None:
        """Mark the trial, switch ``current`` to the unpacked release, have the launcher start it."""
        previous = self.releases.current()
        self.releases.start_trial(
            Trial(
                version=manifest.version,
                previous=previous,
                rollout=order.rollout,
                deadline_s=self.settings.health_deadline_s,
                answering=sorted(self._answering()),
            )
        )
        self.releases.set_handled(order.rollout)
        self.releases.switch(manifest.version)
        self.releases.prune()
        log.info("release %s staged (rollout %d); restarting into it", manifest.version, order.rollout)
        self._keep_result(order.rollout, manifest.version, wire.UpdateOutcome.STAGED, [])
        await self._say(order.rollout, manifest.version, wire.UpdateOutcome.STAGED, [])
        await self._exit(EXIT_RESTART)

    def _unpack(self, version: str, data: bytes) -> None:
        target = self.releases.folder(version)
        tmp = target.with_name(f".{version}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            wheel.extractall(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)

    async def report_last(self) -> None:
        """Say how the last rollout ended (retained): the launcher may have written it while we were down."""
        result = self.releases.result()
        if result is None:
            return
        try:
            state = wire.UpdateOutcome(str(result.get("state")))
            rollout, version = int(result["rollout"]), str(result["version"])
        except (KeyError, TypeError, ValueError):
            return
        if state is wire.UpdateOutcome.STAGED and self.releases.trial() is None:
            return  # staged, then the trial ended without a word: nothing true to add
        reasons = [str(r) for r in result.get("reasons", [])]
        await self._say(rollout, version, state, reasons)

    async def judge_trial(self, problems: Problems) -> None:
        """On trial: end it once healthy (``applied``); else say why and exit: the launcher rolls back."""
        trial = self.releases.trial()
        if trial is None or trial.version != self.running:
            return
        since = now_ms()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + trial.deadline_s
        while True:
            found = problems(since, trial.answering)
            if not found:
                break
            if loop.time() >= deadline:
                reason = f"not healthy within {trial.deadline_s:g} s: " + "; ".join(found)
                log.error("version %s on trial: %s; exiting, the launcher rolls back", self.running, reason)
                self.releases.fail_trial(reason)
                await self._exit(EXIT_UNHEALTHY)
                return
            await asyncio.sleep(CHECK_EVERY_S)
        self._keep_result(trial.rollout, trial.version, wire.UpdateOutcome.APPLIED, [])
        self.releases.end_trial()
        log.info("version %s healthy: trial over (rollout %d)", self.running, trial.rollout)
        await self._say(trial.rollout, trial.version, wire.UpdateOutcome.APPLIED, [])

    def _keep_result(self, rollout: int, version: str, state: wire.UpdateOutcome, reasons: list[str]) -> None:
        self.releases.root.mkdir(parents=True, exist_ok=True)
        self.releases.write_result(
            {"rollout": rollout, "version": version, "state": state.value, "reasons": reasons}
        )

    async def _say(self, rollout: int, version: str, state: wire.UpdateOutcome, reasons: list[str]) -> None:
        await self._report(
            wire.UpdateState(
                agent=self.agent_id,
                rollout=rollout,
                version=version,
                state=state,
                ts=now_ms(),
                running=self.running[:64],
                reasons=[r[:512] for r in reasons][: wire.MAX_REASONS],
            )
        )


async def _fetch(client: httpx.AsyncClient, path: str, part: Path, size: int) -> bool:
    """Append what is missing of the wheel to ``part``; True when it has ``size`` bytes."""
    have = _size(part)
    if have >= size:
        if have == size:
            return True
        _discard(part)
        return False
    headers = {"Range": f"bytes={have}-"} if have else {}
    async with client.stream("GET", path, headers=headers) as response:
        if response.status_code in (401, 403, 404, 410):
            raise DownloadFailed(f"the API answered {response.status_code} for the release")
        if response.status_code == 416:
            _discard(part)
            return False
        response.raise_for_status()
        resumed = response.status_code == 206 and have > 0
        with _open(part, "ab" if resumed else "wb") as out:
            written = have if resumed else 0
            async for chunk in response.aiter_bytes():  # as it arrives: a cut keeps what came
                written += len(chunk)
                if written > size:
                    raise DownloadFailed(f"the API sent more than the manifest's {size} bytes")
                out.write(chunk)
    return _size(part) == size


# A few small local-disk operations per chunk of a download: not worth a thread each.
def _size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)


def _open(part: Path, mode: str) -> BinaryIO:
    return cast(BinaryIO, open(part, mode))  # closed by the caller's with
