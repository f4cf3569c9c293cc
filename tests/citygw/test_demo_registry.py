"""Each demo start registers what it runs: lines and devices anew, gone devices retired, a fresh key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from api.registry import open_registry
from api.registry.keys import list_keys
from api.registry.models import Agent, Device
from api.security import parse_api_key
from citygw.contract.agent_config import AgentConfig
from citygw.demo_registry import DEMO_KEY_NAME, register_city


def _config(port: str, *devices: str) -> AgentConfig:
    body: dict[str, Any] = {
        "agent_id": "lviv-water",
        "site": "pumping-station-1",
        "broker": {"url": "mqtt://127.0.0.1:1"},
        "journal": "journal.sqlite",
        "lines": [{"id": "rs485-1", "kind": "rtu", "port": port}],
        "devices": [
            {
                "id": device,
                "profile": "tuf_2000m",
                "line": "rs485-1",
                "unit": unit,
                "poll_s": 5,
                "location": {"lat": 49.8, "lon": 24.0},
            }
            for unit, device in enumerate(devices, start=1)
        ],
    }
    return AgentConfig.model_validate(body)


def test_a_second_start_updates_lines_retires_gone_devices_and_replaces_the_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    first = register_city(url, [_config("/dev/pts/7", "water-main-1", "water-main-2")], now_ms=1_000)
    second = register_city(url, [_config("/dev/pts/9", "water-main-1")], now_ms=2_000)
    registry = open_registry(url)
    try:
        with registry.session() as session:
            agent = session.get(Agent, "lviv-water")
            assert agent is not None
            assert (agent.site, agent.lines[0]["port"], agent.lat) == (
                "pumping-station-1",
                "/dev/pts/9",
                49.8,
            )
            rows = session.scalars(select(Device).order_by(Device.device_id)).all()
            assert [(d.device_id, d.retired_at) for d in rows] == [
                ("water-main-1", None),
                ("water-main-2", 2_000),
            ]
            keys = {k.id: k for k in list_keys(session, include_revoked=True) if k.name == DEMO_KEY_NAME}
            first_id, second_id = (parse_api_key(token)[0] for token in (first, second))  # type: ignore[index]
            assert (keys[first_id].revoked_at, keys[second_id].revoked_at) == (2_000, None)
            assert keys[second_id].role == "admin"
    finally:
        registry.close()
