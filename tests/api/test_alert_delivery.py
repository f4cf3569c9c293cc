"""Alerts raised by the app's timer reach a real webhook on loopback (retried, signed) and real Mosquitto."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from api import create_app
from api.alerts.delivery import SIGNATURE_HEADER, AlertDelivery, AlertEvent, signature
from api.registry import Registry
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import MINUTE_MS, NOW_MS, FakeClock, reading
from tests.services import Mosquitto

pytestmark = pytest.mark.integration
SECRET = "webhook-secret-for-tests"


class Webhook:
    """A city's alert receiver on loopback: answers 503 to the first ``fail_first`` posts, then 204."""

    def __init__(self, fail_first: int) -> None:
        self.received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        self.attempts = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.attempts += 1
                if hook.attempts <= fail_first:
                    self.send_response(503)
                else:
                    hook.received.put((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/citygw-alerts?site=lviv"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(fail_first=2)
    yield hook
    hook.close()


def test_raised_and_ended_alerts_are_posted_and_published(
    mosquitto: Mosquitto,
    webhook: Webhook,
    store: SqliteStore,
    registry: Registry,
    settings: ApiSettings,
    clock: FakeClock,
) -> None:
    heard: queue.Queue[tuple[str, bytes]] = queue.Queue()
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="city-dispatch")
    listener.on_message = lambda _c, _u, m: heard.put((m.topic, bytes(m.payload)))
    listener.connect("127.0.0.1", mosquitto.port)
    listener.subscribe("citygw/v1/_alerts/#", qos=1)
    listener.loop_start()
    store.write(
        [reading("air_quality", "aq-rynok", clock.now_ms - MINUTE_MS, {"pm25": 150.0}, district="halytskyi")]
    )
    linked = settings.model_copy(
        update={
            "broker_url": mosquitto.url,
            "alert_interval_s": 0.2,
            "alert_webhook_url": webhook.url,
            "alert_webhook_secret": SECRET,
        }
    )
    try:
        with TestClient(create_app(store, settings=linked, clock=clock, registry=registry)):
            headers, body = webhook.received.get(timeout=15)
            assert webhook.attempts == 3  # two 503s, retried
            assert headers[SIGNATURE_HEADER] == signature(SECRET, body)
            raised = json.loads(body)
            assert raised["event"] == "raised"
            assert raised["rule"] == "aq_band"
            assert raised["subject"] == "aq-rynok"
            assert raised["data"]["level"] == "Extremely poor"
            topic, payload = heard.get(timeout=10)
            assert topic == "citygw/v1/_alerts/aq_band"
            assert json.loads(payload) == raised

            clock.now_ms += MINUTE_MS
            # PM is indexed on its 24-hour running mean (EEA): (150 + 3 * 4) / 4 = 40.5, Moderate.
            store.write(
                [
                    reading("air_quality", "aq-rynok", clock.now_ms - ms, {"pm25": 4.0}, district="halytskyi")
                    for ms in (0, 1, 2)
                ]
            )
            _, body = webhook.received.get(timeout=15)
            ended = json.loads(body)
            assert (ended["event"], ended["id"], ended["ended_at"]) == ("ended", raised["id"], clock.now_ms)
            topic, payload = heard.get(timeout=10)
            assert json.loads(payload)["event"] == "ended"
            assert webhook.received.empty()
    finally:
        listener.loop_stop()
        listener.disconnect()


def test_a_webhook_given_up_on_is_logged_without_its_credentials_or_query(
    settings: ApiSettings, caplog: pytest.LogCaptureFixture
) -> None:
    hook = Webhook(fail_first=1)
    port = hook.server.server_port
    url = f"http://scada-user:s3cret@127.0.0.1:{port}/citygw-alerts?site=lviv&token=t0ken"
    delivery = AlertDelivery(
        settings.model_copy(update={"alert_webhook_url": url, "alert_webhook_attempts": 1}), None
    )
    event = AlertEvent(
        event="raised",
        id=1,
        rule="aq_band",
        subject="aq-rynok",
        site=None,
        district=None,
        detail="Poor",
        data={},
        started_at=NOW_MS,
        ended_at=None,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="api.alerts.delivery"):
            delivery.deliver(event)
    finally:
        hook.close()
    assert (hook.attempts, delivery.failed) == (1, 1)
    assert f"gave up after HTTP 503: http://127.0.0.1:{port}/…" in caplog.text
    assert "citygw-alerts" not in caplog.text  # a webhook's path may be its secret (Slack, Teams)
    assert "s3cret" not in caplog.text
    assert "scada-user" not in caplog.text
    assert "t0ken" not in caplog.text
