"""Every command README.md gives a newcomer runs as written: the two make targets exist, and each shell
block of "What to try" succeeds against a running demo (its URLs, registry and CLI pointed at that demo)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"(?ms)^## {re.escape(title)}\n(.*?)(?=^## )", README)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"(?ms)^```sh\n(.*?)^```", text)


TRIES = _shell_blocks(_section("What to try"))


def test_the_two_commands_are_make_targets() -> None:
    [block] = _shell_blocks(_section("Two commands"))
    targets = [line.split()[1] for line in block.splitlines() if line.startswith("make ")]
    assert targets == ["demo", "test"]
    for target in targets:
        subprocess.run(["make", "-n", target], cwd=REPO, check=True, capture_output=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A demo as `make demo` runs it, on a free port and in its own folder; its URL and folder."""
    workdir = tmp_path_factory.mktemp("demo")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "citygw.cli", "demo", "--port", str(port), "--workdir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        wanted = {"meter-depot-1", "water-main-1", "cabinet-rynok", "aq-rynok"}
        seen: set[str] = set()
        while not wanted <= seen:
            assert time.monotonic() < deadline, f"the demo's API knows only {sorted(seen)}"
            time.sleep(0.5)
            with contextlib.suppress(httpx.HTTPError):
                seen = {d["device"] for d in httpx.get(f"{base}/v1/devices", timeout=2).json()}
        time.sleep(3)  # a few readings in the store for the windowed queries
        yield base, workdir
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


@pytest.mark.parametrize("block", TRIES, ids=[f"block{n}" for n in range(len(TRIES))])
def test_each_command_of_what_to_try_runs_against_the_demo(
    demo: tuple[str, Path], block: str, tmp_path: Path
) -> None:
    base, workdir = demo
    script = (
        block.replace("http://127.0.0.1:8000", base)
        .replace("sqlite:///var/demo/", f"sqlite:///{workdir}/")
        .replace(".venv/bin/citygw", f"{sys.executable} -m citygw.cli")
    )
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (
        f"{script}\n--- stdout\n{done.stdout[-2000:]}\n--- stderr\n{done.stderr[-2000:]}"
    )
    assert done.stdout.strip(), script  # every block shows something
