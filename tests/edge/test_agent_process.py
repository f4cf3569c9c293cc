"""The agent as a real process: the broker's last will covers a crash, SIGTERM says goodbye itself."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from citygw.contract import wire
from tests.edge.conftest import AGENT, watching
from tests.services import Mosquitto


def start_agent(tmp_path: Path, url: str) -> subprocess.Popen[bytes]:
    config = {
        "agent_id": AGENT,
        "site": "test-site",
        "broker": {"url": url, "keepalive": 5},
        "journal": str(tmp_path / "journal.sqlite"),
        "health": {"interval": 0.2},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "CITYGW_BROKER_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "citygw.cli", "edge", "run", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )


def states(statuses: list[tuple[wire.Status, bool]]) -> list[str]:
    return [status.state.value for status, _ in statuses]


async def test_crash_leaves_the_last_will_retained(tmp_path: Path, mosquitto: Mosquitto) -> None:
    agent = start_agent(tmp_path, mosquitto.url)
    try:
        async with watching(mosquitto.url) as watcher:
            await watcher.wait_for("online", lambda: states(watcher.statuses()) == ["online"])
            online, _ = watcher.statuses()[0]
            assert online.version
            assert online.started_at
            await watcher.wait_for("health", lambda: bool(watcher.on(wire.Channel.HEALTH)))
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            await watcher.wait_for("last will", lambda: states(watcher.statuses()) == ["online", "offline"])
        async with watching(mosquitto.url, client_id="late") as late:
            await late.wait_for("retained status", lambda: bool(late.statuses()))
            status, retained = late.statuses()[0]
            assert (status.state, retained) == (wire.AgentState.OFFLINE, True)
    finally:
        agent.kill()
        agent.wait(10)


async def test_sigterm_says_offline_and_closes_the_journal(tmp_path: Path, mosquitto: Mosquitto) -> None:
    agent = start_agent(tmp_path, mosquitto.url)
    try:
        async with watching(mosquitto.url) as watcher:
            await watcher.wait_for("online", lambda: states(watcher.statuses()) == ["online"])
            agent.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(agent.wait, 15)
            output = agent.stdout.read().decode() if agent.stdout else ""
            assert code == 0, output
            await watcher.wait_for("offline", lambda: states(watcher.statuses()) == ["online", "offline"])
            health_after_stop = len(watcher.on(wire.Channel.HEALTH))
            await asyncio.sleep(0.5)
            assert len(watcher.on(wire.Channel.HEALTH)) == health_after_stop
    finally:
        agent.kill()
        agent.wait(10)
    # SQLite removes the WAL file when the last connection closes cleanly.
    assert (tmp_path / "journal.sqlite").exists()
    assert not (tmp_path / "journal.sqlite-wal").exists(), "the journal was not closed"


def test_config_error_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "agent_id: pi-1\nsite: s\nbroker: {url: 'mqtt://h:1'}\njournal: j.sqlite\n"
        "devices: [{id: d1, line: nowhere, poll_s: 1}]\n"
    )
    command = [sys.executable, "-m", "citygw.cli", "edge", "run", "--config", str(path)]
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"{path}: devices[0].line: unknown line 'nowhere'; defined lines: none" in done.stderr.decode()
