"""Helpers for edge tests: agent configs pointing at the test broker, and a real MQTT subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import pytest

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig
from edge.publisher import MqttClient
from tests.services import Mosquitto

AGENT = "pi-test"


def agent_config(tmp_path: Path, broker_url: str, **overrides: Any) -> AgentConfig:
    """A config with tight timings, so fault tests run in seconds."""
    data: dict[str, Any] = {
        "agent_id": AGENT,
        "site": "test-site",
        "broker": {
            "url": broker_url,
            "keepalive": 5,
            "publish_timeout": 3,
            "reconnect_min": 0.1,
            "reconnect_max": 0.5,
        },
        "journal": {"path": str(tmp_path / "journal.sqlite")},
        "publish": {"batch_max_readings": 50, "interval": 0.1},
        "health": {"interval": 0.5},
    }
    data.update(overrides)
    return AgentConfig.model_validate(data)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Watcher:
    """A real MQTT subscriber (persistent session, QoS 1) that rides out broker restarts."""

    def __init__(self, url: str, topic_filter: str, client_id: str = "test-watcher") -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1883
        self.topic_filter = topic_filter
        self.client_id = client_id
        self.messages: list[Received] = []
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with MqttClient(
                    self.host, self.port, identifier=self.client_id, clean_session=False, keepalive=5
                ) as client:
                    await client.subscribe(self.topic_filter, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        self.messages.append(Received(str(message.topic), payload, message.retain))
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.1)

    def on(self, channel: wire.Channel) -> list[Received]:
        return [m for m in self.messages if m.topic == wire.topic(AGENT, channel)]

    def batches(self) -> list[wire.TelemetryBatch]:
        return [wire.TelemetryBatch.model_validate_json(m.payload) for m in self.on(wire.Channel.TELEMETRY)]

    def statuses(self) -> list[tuple[wire.Status, bool]]:
        return [(wire.Status.model_validate_json(m.payload), m.retain) for m in self.on(wire.Channel.STATUS)]

    async def wait_for(self, what: str, check: Callable[[], bool], within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {len(self.messages)} messages")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def watching(url: str, topic_filter: str = f"citygw/v1/{AGENT}/#", **kw: Any) -> AsyncIterator[Watcher]:
    watcher = Watcher(url, topic_filter, **kw)
    task = asyncio.create_task(watcher.run(), name="test-watcher")
    try:
        await asyncio.wait_for(watcher.subscribed.wait(), 10)
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def save_sessions(mosquitto: Mosquitto) -> None:
    """Make Mosquitto write its persistence file now (SIGUSR1) and wait until it did."""
    db = mosquitto.workdir / "mosquitto.db"
    before = db.stat().st_mtime_ns if db.exists() else 0
    assert mosquitto.proc is not None
    os.kill(mosquitto.proc.pid, signal.SIGUSR1)
    for _ in range(250):
        if db.exists() and db.stat().st_mtime_ns != before:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("Mosquitto did not save its persistence file")
    await asyncio.sleep(0.1)  # written via a temporary file and a rename; let the rename land


@pytest.fixture
def broker_url(mosquitto: Mosquitto) -> str:
    return mosquitto.url
