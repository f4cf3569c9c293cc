"""A field engineer's flow against the running demo: registered agents, a key made as README says."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.services import free_port

pytestmark = pytest.mark.integration


def _line_with(process: subprocess.Popen[bytes], text: str, timeout_s: float) -> str:
    """The first line of the demo's output that contains ``text``."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline().decode(errors="replace")
            if not line:
                break
            seen.append(line)
            if text in line:
                return line
    raise AssertionError(f"no {text!r} in the demo's output:\n{''.join(seen[-40:])}")


def test_an_engineer_key_made_as_readme_says_dims_the_demos_lamps(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "citygw.cli", "demo", "--port", str(port), "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        admin = {"Authorization": f"Bearer {_line_with(process, 'admin key:', 60).split()[-1]}"}
        registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
        made = subprocess.run(
            [
                *(sys.executable, "-m", "citygw.cli", "keys", "create", "--registry", registry),
                *("--name", "night shift", "--role", "engineer", "--site", "lighting-rynok"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        engineer = {"Authorization": f"Bearer {made.stdout.split()[-1]}"}
        agents = httpx.get(f"{base}/v1/agents", headers=admin, timeout=5).raise_for_status().json()
        sites = {agent["id"]: agent["site"] for agent in agents}
        assert sites["lviv-lighting"] == "lighting-rynok"
        assert sites["lviv-water"] == "pumping-station-1"
        assert sum(site == "lviv-transit" for site in sites.values()) >= 10
        # The engineer sees only the site granted, and may dim its lamps.
        mine = httpx.get(f"{base}/v1/agents", headers=engineer, timeout=5).raise_for_status().json()
        assert [agent["id"] for agent in mine] == ["lviv-lighting"]
        command = {
            "device": "cabinet-rynok",
            "target": {"kind": "group", "address": 0},
            "action": "dim",
            "level": 50,
        }
        sent = httpx.post(
            f"{base}/v1/agents/lviv-lighting/commands", json=command, headers=engineer, timeout=5
        )
        assert sent.status_code == 202, sent.text
        command_id = sent.json()["id"]
        deadline = time.monotonic() + 30
        status = "sent"
        while time.monotonic() < deadline and status in ("scheduled", "sent"):
            time.sleep(0.5)
            answer = httpx.get(f"{base}/v1/agents/lviv-lighting/commands/{command_id}", headers=engineer)
            status = answer.raise_for_status().json()["status"]
        assert status == "done", answer.text
        refused = httpx.post(
            f"{base}/v1/agents/lviv-water/commands", json=command, headers=engineer, timeout=5
        )
        assert refused.status_code == 403, refused.text
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]
