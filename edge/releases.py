"""The agent's release folder: one unpacked wheel per version, ``current``, the ``trial`` marker, results.

Layout under ``update.staging_dir`` (default /var/lib/citygw/releases)::

    0.2.0/            an unpacked pure-Python wheel, run with PYTHONPATH=<it>
    current -> 0.2.0  the version the launcher starts; absent: the installed package
    trial             JSON: a version on trial (switched to, not yet healthy) and the one before it
    result            JSON: how the last rollout ended (written by the agent or by the launcher)
    handled           JSON: the newest rollout handled, so a retained order is taken once
    downloads/        partial downloads, resumed after a dropped link

Standard library only: the launcher reads this with the installed code, never a release's, so a
release that cannot even be imported is still rolled back.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CURRENT, TRIAL, RESULT, HANDLED, FAILURE = "current", "trial", "result", "handled", "trial-failure"
DOWNLOADS = "downloads"


def write_json_atomically(path: Path, data: Any) -> None:
    """A power cut leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None when it is missing or unreadable (a torn write cannot happen)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class Trial:
    """A version switched to and not yet healthy; ``previous`` None is the installed package."""

    version: str
    previous: str | None
    rollout: int
    deadline_s: float
    answering: list[str] = field(default_factory=list)
    launched: bool = False


class Releases:
    """The release folder ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, version: str) -> Path:
        return self.root / version

    def current(self) -> str | None:
        """The version ``current`` points at, if it is there; None: the installed package."""
        try:
            target = os.readlink(self.root / CURRENT)
        except OSError:
            return None
        version = Path(target).name
        return version if self.folder(version).is_dir() else None

    def switch(self, version: str | None) -> None:
        """Point ``current`` at ``version`` (None: the installed package) in one rename."""
        link = self.root / CURRENT
        if version is None:
            link.unlink(missing_ok=True)
            return
        tmp = self.root / f".{CURRENT}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(version, tmp)
        os.replace(tmp, link)
        _sync_folder(self.root)

    def trial(self) -> Trial | None:
        data = read_json(self.root / TRIAL)
        if not isinstance(data, dict):
            return None
        try:
            return Trial(**data)
        except TypeError:
            return None

    def start_trial(self, trial: Trial) -> None:
        write_json_atomically(self.root / TRIAL, asdict(trial))

    def end_trial(self) -> None:
        (self.root / TRIAL).unlink(missing_ok=True)
        (self.root / FAILURE).unlink(missing_ok=True)

    def fail_trial(self, reason: str) -> None:
        """Why a version on trial gives up (the launcher puts it in the result)."""
        (self.root / FAILURE).write_text(reason[:1000], encoding="utf-8")

    def trial_failure(self) -> str | None:
        try:
            return (self.root / FAILURE).read_text(encoding="utf-8") or None
        except OSError:
            return None

    def result(self) -> dict[str, Any] | None:
        data = read_json(self.root / RESULT)
        return data if isinstance(data, dict) else None

    def write_result(self, result: dict[str, Any]) -> None:
        write_json_atomically(self.root / RESULT, result)

    def handled(self) -> int:
        data = read_json(self.root / HANDLED)
        return data if isinstance(data, int) else 0

    def set_handled(self, rollout: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.root / HANDLED, rollout)

    def roll_back(self, trial: Trial, reason: str) -> None:
        """Back to the version before the trial, and say why in ``result``: the launcher's job."""
        self.switch(trial.previous)
        self.write_result(
            {"rollout": trial.rollout, "version": trial.version, "state": "rolled_back", "reasons": [reason]}
        )
        self.end_trial()

    def prune(self) -> list[str]:
        """Remove the versions neither current nor on trial's previous side; returns them."""
        keep = {self.current()}
        trial = self.trial()
        if trial is not None:
            keep |= {trial.version, trial.previous}
        removed = []
        for entry in self.root.iterdir() if self.root.is_dir() else ():
            kept = entry.name in keep or entry.name == DOWNLOADS
            if entry.is_dir() and not entry.is_symlink() and not kept:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed


def _sync_folder(path: Path) -> None:
    """fsync a folder, so a rename in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
