"""The API's MQTT link on a real Mosquitto: agents' traffic never holds up the API's own publishes, and
one health message writes no more devices than the agent has."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from api import create_app
from api.mqtt_link import _Inbox
from api.registry import Registry
from api.registry.live import UNKNOWN_DEVICES_KEPT
from api.registry.models import Agent
from api.security import Role
from api.settings import ApiSettings
from citygw.contract import wire
from collector.store.sqlite import SqliteStore
from tests.api.factories import ENGINEER_SITE, NOW_MS, FakeClock, bearer
from tests.api.routes.test_agents import AGENT, LINES, LVIV, METER, eventually
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

FLOOD_DEVICES = 2_000


def health(
    devices: int,
    *,
    backlog: int = 0,
    names: str = "ghost-{n}",
    also: dict[str, wire.DeviceHealth] | None = None,
) -> bytes:
    """A health message naming ``devices`` devices, each with a full set of counters (2 000: ~167 KB)."""
    buckets = {"le_50": 900, "le_100": 80, "le_250": 15, "le_500": 4, "le_1000": 1, "gt_1000": 0}
    return wire.encode(
        wire.Health(
            agent=AGENT,
            ts=NOW_MS,
            journal=wire.JournalHealth(backlog=backlog, dropped=0),
            devices={
                names.format(n=n): wire.DeviceHealth(
                    state=wire.DeviceState.TIMEOUT,
                    failures=n,
                    last_ok=NOW_MS - 60_000,
                    last_error_at=NOW_MS - 1_000,
                    response_ms_buckets=buckets,
                    counter_resets=0,
                    skipped_polls=0,
                    suppressed=0,
                )
                for n in range(devices)
            }
            | (also or {}),
        )
    )


class Flood:
    """A misbehaving agent publishing big health messages back to back, as fast as the broker takes them."""

    def __init__(self, url: str, payload: bytes) -> None:
        self.sent = 0
        self._payload = payload
        self._stop = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flooding-agent")
        self._client.max_inflight_messages_set(100)
        self._client.connect("127.0.0.1", int(url.rsplit(":", 1)[1]))
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def _run(self) -> None:
        topic = wire.topic(AGENT, wire.Channel.HEALTH)
        while not self._stop.is_set():
            self._client.publish(topic, self._payload, qos=1).wait_for_publish(10)
            self.sent += 1

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def fleet(
    mosquitto: Mosquitto, store: SqliteStore, settings: ApiSettings, registry: Registry, keys: dict[Role, str]
) -> Iterator[TestClient]:
    linked = settings.model_copy(update={"broker_url": mosquitto.url, "broker_publish_timeout_s": 2.0})
    app = create_app(store, settings=linked, clock=FakeClock(), registry=registry)
    with TestClient(app, headers=bearer(keys[Role.ENGINEER])) as client:
        assert app.state.context.agent_link.wait_connected(10)
        agent = {"id": AGENT, "site": ENGINEER_SITE, "location": LVIV, "lines": LINES}
        assert client.post("/v1/agents", json=agent).status_code == 201
        assert client.post(f"/v1/agents/{AGENT}/devices", json=METER).status_code == 201
        yield client


def test_config_pushes_are_answered_while_an_agent_floods_big_health_messages(
    fleet: TestClient, mosquitto: Mosquitto
) -> None:
    payload = health(FLOOD_DEVICES)
    assert len(payload) > 160_000
    # The push names the flood's devices as stopped, else it is refused (409) for the health they are in.
    ghosts = {"remove": [f"ghost-{n}" for n in range(FLOOD_DEVICES)]}
    with Flood(mosquitto.url, payload) as flood:
        eventually(lambda: flood.sent >= 20, timeout=30)
        answers = []
        for _ in range(5):
            started = time.monotonic()
            answers.append(
                (
                    fleet.post(f"/v1/agents/{AGENT}/config", json=ghosts).status_code,
                    time.monotonic() - started,
                )
            )
        sent_meanwhile = flood.sent
    assert [status for status, _ in answers] == [201] * 5, answers
    assert sent_meanwhile > 20


def test_one_health_message_writes_the_agents_devices_and_a_bounded_number_of_others(
    fleet: TestClient, mosquitto: Mosquitto, registry: Registry
) -> None:
    meter = {"meter-1": wire.DeviceHealth(state=wire.DeviceState.OK)}
    both = health(FLOOD_DEVICES, backlog=7, names="a-{n:04d}", also=meter)  # ids sorting before meter-1
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="big-health")
    publisher.connect("127.0.0.1", int(mosquitto.url.rsplit(":", 1)[1]))
    publisher.loop_start()
    try:
        publisher.publish(wire.topic(AGENT, wire.Channel.HEALTH), both, qos=1).wait_for_publish(10)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
    eventually(lambda: fleet.get(f"/v1/agents/{AGENT}").json()["journal_backlog"] == 7)
    with registry.session() as session:
        agent = session.get(Agent, AGENT)
        assert agent is not None
        written = set(agent.device_health or {})
    assert "meter-1" in written
    assert written - {"meter-1"} == {f"a-{n:04d}" for n in range(UNKNOWN_DEVICES_KEPT)}


def test_the_inbox_keeps_an_agents_newest_health_only_and_refuses_beyond_its_bytes() -> None:
    inbox = _Inbox(max_bytes=10)
    health_topic = wire.topic(AGENT, wire.Channel.HEALTH)
    state_topic = wire.topic(AGENT, wire.Channel.CONFIG_STATE)
    assert inbox.put(AGENT, wire.Channel.HEALTH, health_topic, b"old")
    assert inbox.put(AGENT, wire.Channel.CONFIG_STATE, state_topic, b"s1")
    assert inbox.put(AGENT, wire.Channel.HEALTH, health_topic, b"newer")  # replaces "old" in its place
    assert not inbox.put(AGENT, wire.Channel.CONFIG_STATE, state_topic, b"s2-long")  # 7 + 7 > 10
    assert inbox.put(AGENT, wire.Channel.CONFIG_STATE, state_topic, b"s2")
    assert [inbox.take(), inbox.take(), inbox.take()] == [
        (health_topic, b"newer"),
        (state_topic, b"s1"),
        (state_topic, b"s2"),
    ]
    inbox.close()
    assert inbox.take() is None
