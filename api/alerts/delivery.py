"""Alerts leave the API two ways: a JSON POST to the city's webhook (retried) and MQTT (alert_topic)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

from api.mqtt_link import AgentLink, LinkUnavailable
from api.registry.models import Alert
from api.settings import ApiSettings, redact_url
from citygw.contract import wire

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_S = 5.0
FIRST_RETRY_S = 0.5
SIGNATURE_HEADER = "X-CityGW-Signature"


class AlertEvent(BaseModel):
    """An alert raised or ended: the webhook's body and the MQTT payload."""

    schema_version: Literal[1] = Field(default=1, alias="schema")
    event: Literal["raised", "ended"]
    id: int
    rule: str
    subject: str = Field(description="device, device:lamp, or agent id")
    site: str | None
    district: str | None
    detail: str
    data: dict[str, Any]
    started_at: int = Field(description="ms since epoch")
    ended_at: int | None

    @classmethod
    def of(cls, alert: Alert) -> AlertEvent:
        return cls(
            event="ended" if alert.ended_at is not None else "raised",
            id=alert.id,
            rule=alert.rule,
            subject=alert.subject,
            site=alert.site,
            district=alert.district,
            detail=alert.detail,
            data=alert.data,
            started_at=alert.started_at,
            ended_at=alert.ended_at,
        )


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class AlertDelivery:
    """Sends each event to the webhook (if configured) and the broker (if linked); counts what failed."""

    def __init__(
        self, settings: ApiSettings, link: AgentLink | None, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._settings = settings
        self._link = link
        self._sleep = sleep
        self.failed = 0

    def deliver(self, event: AlertEvent) -> None:
        body = event.model_dump_json(by_alias=True).encode()
        if self._settings.alert_webhook_url:
            self._post(self._settings.alert_webhook_url, body)
        if self._link is not None:
            try:
                self._link.publish_alert(wire.alert_topic(event.rule), body)
            except LinkUnavailable as exc:
                self.failed += 1
                log.warning("alert %s not published on MQTT: %s", event.id, exc)

    def _post(self, url: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        if self._settings.alert_webhook_secret:
            headers[SIGNATURE_HEADER] = signature(self._settings.alert_webhook_secret, body)
        attempts = self._settings.alert_webhook_attempts
        with httpx.Client(timeout=WEBHOOK_TIMEOUT_S) as client:
            for attempt in range(attempts):
                try:
                    response = client.post(url, content=body, headers=headers)
                    if response.is_success:
                        return
                    problem = f"HTTP {response.status_code}"
                    # Only the receiver's trouble is worth retrying; anything else would fail again.
                    if response.status_code < 500 and response.status_code != 429:
                        break
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                if attempt + 1 < attempts:
                    self._sleep(FIRST_RETRY_S * 2**attempt)
        self.failed += 1
        log.warning("alert webhook gave up after %s: %s", problem, redact_url(url, keep_path=False))
