"""The demo refuses to start, in one line and exit code 2, when it could not run."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from citygw import demo
from tests.services import free_port


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citygw.cli", "demo", "--workdir", str(tmp_path), "--duration", "5", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_busy_api_port_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = _demo(tmp_path, "--port", str(port))
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"citygw demo: port {port} is in use; use --port N\n"
    assert "CityGW demo:" not in done.stdout  # nothing was started


def test_port_0_is_refused(tmp_path: Path) -> None:
    """argparse refuses ports above 65535; 0 (any port) would print the wrong address for the API."""
    done = _demo(tmp_path, "--port", "0")
    assert done.returncode == 2, done.stderr
    assert done.stderr == "citygw demo: --port 0 is no TCP port the demo can serve on (1-65535)\n"


def test_a_second_demo_in_the_same_workdir_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the first demo holds it
        done = _demo(tmp_path, "--port", str(free_port()))
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"citygw demo: another demo uses {tmp_path.resolve()}; use --workdir\n"
    assert "CityGW demo:" not in done.stdout


async def test_a_part_that_stops_makes_the_demo_exit_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_summaries(store: object, every_s: float, *_: object) -> None:
        await asyncio.sleep(3)  # once everything runs
        raise RuntimeError("the summary broke")

    monkeypatch.setattr(demo, "_print_summaries", broken_summaries)
    options = demo.DemoOptions(workdir=tmp_path, api_port=free_port(), duration_s=30)
    async with asyncio.timeout(60):
        assert await demo.run_demo(options) == 1
