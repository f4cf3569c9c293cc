"""A downlink asked for through the API, end to end on real Mosquitto: POST .../commands (set_field)
-> the dispatcher on ``cmd`` -> a real agent with a LoRaWAN line -> the network server's broker (the
simulator) receives the vendor's example bytes -> the agent's ``done`` is shown by the API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from citygw.contract import wire
from collector.store.sqlite import SqliteStore
from edge.agent import Agent
from tests.api.factories import ENGINEER_SITE, bearer
from tests.edge.conftest import AGENT, watching
from tests.edge.test_agent import running
from tests.edge.test_lorawan_line import BIN_EUI, CHIRPSTACK_APP, lorawan_config, simulator
from tests.edge.test_lorawan_line import network_server as network_server  # a fixture, found by name
from tests.firmware_bridge.test_lorawan import EXAMPLES
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


@pytest.fixture
def api(
    mosquitto: Mosquitto, store: SqliteStore, settings: ApiSettings, registry: Registry, keys: dict[Role, str]
) -> Iterator[TestClient]:
    """The API on the wall clock, linked to CityGW's broker, called by an engineer of ENGINEER_SITE."""
    app = create_app(
        store, settings=settings.model_copy(update={"broker_url": mosquitto.url}), registry=registry
    )
    with TestClient(app, headers=bearer(keys[Role.ENGINEER])) as client:
        assert app.state.context.agent_link.wait_connected(10)
        yield client


def register(api: TestClient, config: Any) -> None:
    """The agent and its LoRaWAN devices in the registry, as the agent itself is configured."""
    line = config.lines[0].model_dump(mode="json", exclude_none=True)
    agent = api.post("/v1/agents", json={"id": AGENT, "site": ENGINEER_SITE, "lines": [line]})
    assert agent.status_code == 201, agent.text
    for device in config.devices:
        spec = {k: device.model_dump(mode="json")[k] for k in ("id", "line", "profile", "dev_eui", "poll_s")}
        added = api.post(f"/v1/agents/{AGENT}/devices", json=spec)
        assert added.status_code == 201, added.text


async def test_a_downlink_asked_through_the_api_reaches_the_device_and_shows_done(
    tmp_path: Path, mosquitto: Mosquitto, network_server: Mosquitto, api: TestClient
) -> None:
    config = lorawan_config(tmp_path, mosquitto.url, network_server.url, "chirpstack")
    register(api, config)
    agent = Agent(config)
    ns = simulator("chirpstack", network_server)
    example = next(d for d in EXAMPLES["dingtek_df703"]["downlinks"] if "uploadInterval" in d["data"])
    async with watching(mosquitto.url) as watcher, running(agent), ns.running():
        await asyncio.wait_for(agent.bridges["lora"].connected.wait(), 10)
        # The agent listens for commands once it is connected (its first health message follows).
        await watcher.wait_for("health", lambda: bool(watcher.on(wire.Channel.HEALTH)))
        sent = await asyncio.to_thread(
            api.post,
            f"/v1/agents/{AGENT}/commands",
            json={"device": "bin-12", "action": "set_field", "field": "upload_interval_h", "value": 4},
        )
        assert sent.status_code == 202, sent.text
        url = f"/v1/agents/{AGENT}/commands/{sent.json()['id']}"

        async def status() -> str:
            response = await asyncio.to_thread(api.get, url)
            return str(response.json()["status"])

        for _ in range(100):
            if await status() not in ("scheduled", "sent"):
                break
            await asyncio.sleep(0.1)
        shown = (await asyncio.to_thread(api.get, url)).json()
        assert (shown["status"], shown["field"], shown["value"]) == ("done", "upload_interval_h", 4)
        assert "queued at the network server on fPort 3" in shown["detail"]
        await watcher.wait_for("the downlink", lambda: bool(ns.downlinks), within=5)
        (downlink,) = ns.downlinks
        assert (downlink.data, downlink.f_port) == (bytes(example["bytes"]), example["f_port"])
        assert downlink.topic == f"application/{CHIRPSTACK_APP}/device/{BIN_EUI}/command/down"
