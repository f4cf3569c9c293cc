"""Each demo agent keeps its files (journal, commands, remote config) in its own folder."""

from __future__ import annotations

import json
from pathlib import Path

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig
from citygw.demo import simulated_city
from edge.poller import HealthBoard
from edge.remote_config import RemoteConfig

BROKER = "mqtt://citygw@127.0.0.1:1"


def _remote(config: AgentConfig) -> RemoteConfig:
    async def report(_state: wire.ConfigState) -> None:
        return None

    return RemoteConfig(
        config, apply=lambda c: set(), current=lambda: config, board=HealthBoard(), report=report
    )


async def test_a_second_run_starts_every_agent_with_its_own_config(tmp_path: Path) -> None:
    async with simulated_city(tmp_path, BROKER) as configs:
        paths = {_remote(c).path for c in configs}
        assert len(paths) == len(configs)  # the kept remote configs don't collide
        depot = next(c for c in configs if c.agent_id == "lviv-depot")
        # A config pushed to the depot through the API, kept beside its journal.
        body = depot.model_dump(mode="json", exclude_none=True)
        body = {key: body[key] for key in ("site", "lines", "devices")}
        body["lines"][0]["port"] = "/dev/pts/999"  # this run's simulated serial line: gone next run
        _remote(depot).path.write_text(json.dumps({"handled": 3, "applied": 3, "body": body}))
    async with simulated_city(tmp_path, BROKER) as configs:
        for config in configs:
            remote = _remote(config)
            assert remote.applied_version == 0, config.agent_id  # no kept config from an earlier run
            started = remote.startup_config()
            assert [d.id for d in started.devices] == [d.id for d in config.devices], config.agent_id
            assert started.lines == config.lines, config.agent_id
