"""A config that fails its devices rolls back to the last healthy config, not to whatever ran before it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig
from edge.poller import HealthBoard, now_ms
from edge.remote_config import RemoteConfig

LINE = {"id": "rs485-1", "kind": "rtu", "port": "/dev/ttyUSB0", "baudrate": 9600}


def _meter(unit: int) -> dict[str, Any]:
    return {"id": "meter-1", "profile": "eastron_sdm630", "line": "rs485-1", "unit": unit, "poll_s": 1}


def _desired(version: int, *devices: dict[str, Any]) -> bytes:
    desired = wire.DesiredConfig(
        agent="depot", version=version, issued_at=0, site="depot", lines=[LINE], devices=list(devices)
    )
    return wire.encode(desired)


class FieldOfDevices:
    """The agent's lines as far as a config push sees them: the meter answers on unit 1 only."""

    def __init__(self, base: AgentConfig, board: HealthBoard) -> None:
        self.running = base
        self.board = board

    def apply(self, config: AgentConfig) -> set[str]:
        self.running = config
        for device in config.devices:
            if device.unit == 1:
                self.board.ok(device.id, now_ms() + 1)
            else:
                self.board.failed(device.id, wire.DeviceState.TIMEOUT, "no answer")
        return {line.id for line in config.lines}


async def test_a_failed_push_after_an_empty_one_goes_back_to_the_last_healthy_config(tmp_path: Path) -> None:
    base = AgentConfig.model_validate(
        {
            "agent_id": "depot",
            "site": "depot",
            "broker": {"url": "mqtt://127.0.0.1:1"},
            "journal": str(tmp_path / "journal.sqlite"),
            "remote": {"grace_s": 0.3},
            "lines": [LINE],
            "devices": [],
        }
    )
    board = HealthBoard()
    field = FieldOfDevices(base, board)
    said: list[wire.ConfigState] = []

    async def report(state: wire.ConfigState) -> None:
        said.append(state)

    remote = RemoteConfig(base, apply=field.apply, current=lambda: field.running, board=board, report=report)
    await remote.receive(_desired(1, _meter(1)))  # the meter: answers, healthy
    await remote.receive(_desired(2))  # no devices: applied, but proves nothing
    await remote.receive(_desired(3, _meter(7)))  # the meter on a unit nobody answers: rolled back
    assert [s.state for s in said] == [
        wire.ConfigOutcome.APPLIED,
        wire.ConfigOutcome.APPLIED,
        wire.ConfigOutcome.ROLLED_BACK,
    ]
    assert said[-1].applied_version == 1
    assert [(d.id, d.unit) for d in field.running.devices] == [("meter-1", 1)]
    # Kept across a restart: the agent starts with the healthy config it rolled back to.
    again = RemoteConfig(base, apply=field.apply, current=lambda: field.running, board=board, report=report)
    assert [(d.id, d.unit) for d in again.startup_config().devices] == [("meter-1", 1)]
    await asyncio.sleep(0)
