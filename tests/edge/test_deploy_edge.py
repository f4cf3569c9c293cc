"""deploy/edge: the systemd unit verifies and is hardened; the agent speaks systemd's notify protocol."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.edge.conftest import AGENT

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy/edge/citygw-edge.service"


def unit_settings() -> dict[str, list[str]]:
    """Every key of the [Service] section with all its values (keys may repeat)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]":
            values.setdefault(key, []).append(value)
    return values


def test_unit_is_hardened_as_the_pi_needs() -> None:
    service = unit_settings()
    expected = {
        "Type": "notify",
        "User": "citygw",
        "SupplementaryGroups": "dialout",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/citygw",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
        "StandardOutput": "journal",
    }
    assert {key: service[key][0] for key in expected} == expected
    assert int(service["WatchdogSec"][0]) >= 10
    assert "char-ttyUSB rw" in service["DeviceAllow"], "RS-485 adapters must stay reachable"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    copy = tmp_path / UNIT.name
    copy.write_text(
        UNIT.read_text().replace("/opt/citygw/.venv/bin/citygw", str(Path(sys.executable).parent / "citygw"))
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


def test_install_script_is_valid_shell() -> None:
    script = ROOT / "deploy/edge/install.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)


def test_agent_says_ready_and_feeds_the_watchdog(tmp_path: Path) -> None:
    """The real agent process under a fake systemd: READY=1 once, then WATCHDOG=1 every half period."""
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(10)
    config = {
        "agent_id": AGENT,
        "site": "test-site",
        "broker": {"url": "mqtt://127.0.0.1:9"},  # nothing listens: the agent runs anyway
        "journal": str(tmp_path / "journal.sqlite"),
    }
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    env.pop("CITYGW_BROKER_URL", None)
    agent = subprocess.Popen(
        [sys.executable, "-m", "citygw.cli", "edge", "run", "--config", str(tmp_path / "agent.yaml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        messages = [listener.recv(256).decode() for _ in range(4)]
        started = time.monotonic()
        listener.recv(256)
        gap = time.monotonic() - started
    finally:
        agent.terminate()
        agent.wait(15)
        listener.close()
    assert messages[0] == "READY=1"
    assert messages[1:] == ["WATCHDOG=1"] * 3
    assert 0.1 < gap < 0.6, f"watchdog pings every {gap:.2f} s, expected about 0.2"
