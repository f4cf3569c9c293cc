"""The launcher rolls a release on trial back by itself: a crash, a hang, a power cut, or its own verdict.

Its child here is a stand-in for ``python``: a shell script that does what the release folder it is
given (PYTHONPATH) says, so each way a new version can fail is one line of a file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge.launcher import EXIT_RESTART, EXIT_UNHEALTHY, LAUNCHED_ENV, Launcher
from edge.releases import Releases, Trial

# The stand-in: log which release it runs as, then do what that release's `behaviour` file says.
CHILD = """#!/bin/sh
echo "${PYTHONPATH:-installed} $CITYGW_LAUNCHED" >> "$RUNS"
behaviour=$(cat "${PYTHONPATH:-$INSTALLED}/behaviour")
eval "$behaviour"
"""


@pytest.fixture
def releases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Releases:
    installed = tmp_path / "installed"
    installed.mkdir()
    (installed / "behaviour").write_text("exit 0")
    monkeypatch.setenv("INSTALLED", str(installed))
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    root = tmp_path / "releases"
    root.mkdir()
    return Releases(root)


def _launcher(tmp_path: Path, releases: Releases, **kw: float) -> Launcher:
    child = tmp_path / "python"
    child.write_text(CHILD)
    child.chmod(child.stat().st_mode | stat.S_IXUSR)
    return Launcher(tmp_path / "agent.yaml", releases, python=str(child), **kw)


def _release(releases: Releases, version: str, behaviour: str) -> None:
    folder = releases.folder(version)
    folder.mkdir()
    (folder / "behaviour").write_text(behaviour)


def _runs(tmp_path: Path) -> list[str]:
    return [Path(line.split()[0]).name for line in (tmp_path / "runs").read_text().splitlines()]


def _on_trial(releases: Releases, version: str, previous: str | None, *, launched: bool = False) -> None:
    releases.start_trial(
        Trial(version=version, previous=previous, rollout=7, deadline_s=0.5, launched=launched)
    )
    releases.switch(version)


def test_a_version_that_crashes_goes_back_to_the_one_before(tmp_path: Path, releases: Releases) -> None:
    _release(releases, "0.2.0", "exit 0")
    _release(releases, "0.3.0", "exit 1")
    _on_trial(releases, "0.3.0", "0.2.0")
    assert _launcher(tmp_path, releases).run() == 0
    assert _runs(tmp_path) == ["0.3.0", "0.2.0"]
    assert releases.current() == "0.2.0"
    assert releases.trial() is None
    result = releases.result()
    assert result is not None
    assert (result["rollout"], result["version"], result["state"]) == (7, "0.3.0", "rolled_back")
    assert result["reasons"] == ["version 0.3.0: exited with code 1 before it was healthy"]


def test_a_version_that_hangs_is_killed_at_its_deadline(tmp_path: Path, releases: Releases) -> None:
    _release(releases, "0.3.0", "exec sleep 60")
    _on_trial(releases, "0.3.0", None)
    assert _launcher(tmp_path, releases, start_grace_s=0.5).run() == 0
    assert _runs(tmp_path) == ["0.3.0", "installed"]
    assert releases.current() is None
    result = releases.result()
    assert result is not None
    assert result["reasons"] == ["version 0.3.0 was not healthy within 1 s"]


def test_a_version_that_judges_itself_unhealthy_is_rolled_back_with_its_reason(
    tmp_path: Path, releases: Releases
) -> None:
    _release(
        releases,
        "0.3.0",
        f"echo 'devices silent: meter-1' > $(dirname $PYTHONPATH)/trial-failure; exit {EXIT_UNHEALTHY}",
    )
    _on_trial(releases, "0.3.0", None)
    assert _launcher(tmp_path, releases).run() == 0
    result = releases.result()
    assert result is not None
    assert result["reasons"] == ["version 0.3.0: devices silent: meter-1\n"]


def test_a_healthy_version_ends_its_trial_and_its_exit_code_goes_to_systemd(
    tmp_path: Path, releases: Releases
) -> None:
    _release(releases, "0.3.0", "rm $(dirname $PYTHONPATH)/trial; exit 75")
    _on_trial(releases, "0.3.0", None)
    assert _launcher(tmp_path, releases).run() == 75
    assert _runs(tmp_path) == ["0.3.0"]
    assert releases.current() == "0.3.0"
    assert releases.result() is None


def test_a_trial_cut_short_by_a_power_cut_is_not_tried_again(tmp_path: Path, releases: Releases) -> None:
    _release(releases, "0.3.0", "exit 0")
    _on_trial(releases, "0.3.0", None, launched=True)
    assert _launcher(tmp_path, releases).run() == 0
    assert _runs(tmp_path) == ["installed"]
    result = releases.result()
    assert result is not None
    assert "stopped before it was healthy" in result["reasons"][0]


def test_a_trial_whose_switch_never_happened_is_forgotten(tmp_path: Path, releases: Releases) -> None:
    _release(releases, "0.2.0", "exit 0")
    _release(releases, "0.3.0", "exit 1")
    releases.switch("0.2.0")
    releases.start_trial(Trial(version="0.3.0", previous="0.2.0", rollout=7, deadline_s=5))
    assert _launcher(tmp_path, releases).run() == 0
    assert _runs(tmp_path) == ["0.2.0"]
    assert releases.trial() is None
    assert releases.result() is None


def test_restart_starts_the_new_current_and_the_child_knows_it_was_launched(
    tmp_path: Path, releases: Releases
) -> None:
    _release(releases, "0.2.0", f"ln -sfn 0.3.0 $(dirname $PYTHONPATH)/current; exit {EXIT_RESTART}")
    _release(releases, "0.3.0", "exit 0")
    releases.switch("0.2.0")
    assert _launcher(tmp_path, releases).run() == 0
    assert _runs(tmp_path) == ["0.2.0", "0.3.0"]
    assert all(line.endswith(" 1") for line in (tmp_path / "runs").read_text().splitlines())
    assert os.environ.get(LAUNCHED_ENV) is None  # only the child's environment has it
