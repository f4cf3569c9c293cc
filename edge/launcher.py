"""``citygw edge launch``: starts the agent of the current release, and rolls a failed trial back itself.

systemd runs the launcher, always from the installed package; the launcher runs the agent as a
child process, of the release ``current`` points at (PYTHONPATH=<release>, ``python -P`` so no working
directory shadows it), or of the installed package. The agent exits with ``EXIT_RESTART`` once it has
staged a release and started its trial: the launcher starts the new one. While a ``trial`` marker
names the version running, the launcher rolls back to the version before when the child exits for any
other reason (a crash at import included: no line of the new code is needed), when it is not healthy
within the trial's deadline (the launcher kills it), or when a trial was already launched once before
(a power cut mid-trial). The new version ends its trial itself once healthy (edge/update.py).
Otherwise the launcher exits with the child's code, and systemd restarts per the unit's policy.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import yaml

from edge.releases import Releases

log = logging.getLogger(__name__)

EXIT_RESTART = 3
"""The agent staged a release and asks to be started again (into it)."""
EXIT_UNHEALTHY = 4
"""A version on trial was not healthy within its deadline."""
LAUNCHED_ENV = "CITYGW_LAUNCHED"
"""Set for the child: it may stage releases, as someone will start them."""
START_GRACE_S = 30.0
"""Beyond the trial's deadline, time the launcher gives the child to start and decide for itself."""
DEFAULT_RELEASES = Path("/var/lib/citygw/releases")
POLL_S = 0.1


def releases_of(config_path: Path) -> Path:
    """``update.staging_dir`` of the config file, read without validating it (the child does that)."""
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return DEFAULT_RELEASES
    update = raw.get("update") if isinstance(raw, dict) else None
    folder = update.get("staging_dir") if isinstance(update, dict) else None
    return Path(folder) if isinstance(folder, str) else DEFAULT_RELEASES


class Launcher:
    """Runs the agent's child process in a loop; ``run()`` returns the exit code for systemd."""

    def __init__(
        self,
        config_path: Path,
        releases: Releases,
        *,
        python: str = sys.executable,
        start_grace_s: float = START_GRACE_S,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.env = dict(env or {})
        self.releases = releases
        self.python = python
        self.start_grace_s = start_grace_s
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def command(self) -> tuple[list[str], dict[str, str], str | None]:
        """The child's command line, environment and release (None: the installed package)."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WATCHDOG_PID")}
        env.update(self.env)
        env[LAUNCHED_ENV] = "1"
        version = self.releases.current()
        if version is not None:
            env["PYTHONPATH"] = str(self.releases.folder(version).resolve())
        argv = [self.python, "-P", "-m", "citygw.cli", "edge", "run", "--config", str(self.config_path)]
        return argv, env, version

    def stop(self, signum: int, _frame: FrameType | None = None) -> None:
        """SIGTERM / SIGINT: pass it on to the agent, which says goodbye and exits."""
        self._stopping = True
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signum)

    def run(self) -> int:
        while not self._stopping:
            trial = self.releases.trial()
            current = self.releases.current()
            if trial is not None and trial.version != current:
                self.releases.end_trial()  # the switch never happened (a power cut between the two)
                trial = None
            if trial is not None and trial.launched:
                self._roll_back(
                    f"version {trial.version} stopped before it was healthy (restart or power cut)"
                )
                continue
            if trial is not None:
                trial.launched = True
                self.releases.start_trial(trial)
            argv, env, version = self.command()
            log.info("starting the agent, version %s", version or "installed")
            self._child = subprocess.Popen(argv, env=env)
            deadline = time.monotonic() + trial.deadline_s + self.start_grace_s if trial is not None else None
            code = self._wait(deadline)
            if self._stopping:
                if trial is not None and self.releases.trial() is not None:
                    trial.launched = False  # a stop is not the new version's fault: try it again next start
                    self.releases.start_trial(trial)
                return code if code is not None else 0
            if code is None:
                assert trial is not None
                allowed = trial.deadline_s + self.start_grace_s
                self._roll_back(f"version {trial.version} was not healthy within {allowed:g} s")
                continue
            if code == EXIT_RESTART:
                continue
            unfinished = self.releases.trial()
            if unfinished is not None and unfinished.version == version:
                why = self.releases.trial_failure() or f"exited with code {code} before it was healthy"
                self._roll_back(f"version {unfinished.version}: {why}")
                continue
            return code
        return 0  # stopped between two children

    def _wait(self, deadline: float | None) -> int | None:
        """The child's exit code; None after killing it at ``deadline`` while still on trial."""
        assert self._child is not None
        while True:
            code = self._child.poll()
            if code is not None:
                return code
            if (
                deadline is not None
                and time.monotonic() > deadline
                and not self._stopping
                and self.releases.trial() is not None
            ):
                self._child.kill()
                self._child.wait()
                return None
            time.sleep(POLL_S)

    def _roll_back(self, reason: str) -> None:
        trial = self.releases.trial()
        assert trial is not None
        log.warning("rolling back to version %s: %s", trial.previous or "installed", reason)
        self.releases.roll_back(trial, reason)


def launch(config_path: str | Path, env: Mapping[str, str] | None = None) -> int:
    """``citygw edge launch --config FILE``: run the agent under the launcher until SIGTERM; ``env``:
    settings for the agent (edge/settings.py EdgeSettings.child_env)."""
    path = Path(config_path)
    launcher = Launcher(path, Releases(releases_of(path)), env=env)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, launcher.stop)
    return launcher.run()
