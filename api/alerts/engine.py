"""One evaluation of every rule: new findings become active alerts, vanished ones end; both are audited."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.alerts.delivery import AlertEvent
from api.alerts.rules import Finding, Rule, aq_band, lamp_failure, offline, water_patterns
from api.registry import Registry, audit
from api.registry.catalogue import registered_devices
from api.registry.models import Agent, Alert
from api.settings import ApiSettings
from collector.store.base import TelemetryReader

log = logging.getLogger(__name__)
ACTOR = "system:alert-rules"
ACTIVE, ENDED = "active", "ended"


def evaluate(
    registry: Registry, store: TelemetryReader, settings: ApiSettings, now_ms: int
) -> list[AlertEvent]:
    """Run the rules once; the alerts raised and ended, committed, for delivery.

    A rule that cannot run (store down) ends none of its alerts: nothing is known about them.
    """
    with registry.session() as session:
        agents = list(session.scalars(select(Agent)))
        devices = registered_devices(session)
    checks: list[tuple[tuple[Rule, ...], Callable[[], list[Finding]]]] = [
        ((Rule.AQ_BAND,), lambda: aq_band(store, devices, settings, now_ms)),
        ((Rule.LAMP_FAILURE,), lambda: lamp_failure(store)),
        ((Rule.WATER_LEAK, Rule.WATER_NO_FLOW), lambda: water_patterns(store, settings, now_ms)),
        ((Rule.DEVICE_OFFLINE, Rule.AGENT_OFFLINE), lambda: offline(agents)),
    ]
    found: dict[tuple[str, str], Finding] = {}
    evaluated: set[str] = set()
    for rules, check in checks:
        try:
            findings = check()
        except Exception:
            log.exception("alert rules %s could not run", ", ".join(rules))
            continue
        evaluated.update(rules)
        found.update(((f.rule.value, f.subject), f) for f in findings)

    changed: list[Alert] = []
    with registry.session() as session:
        active = {(a.rule, a.subject): a for a in session.scalars(select(Alert).where(Alert.state == ACTIVE))}
        for key, finding in found.items():
            alert = active.get(key)
            if alert is not None:
                alert.detail, alert.data = finding.detail, finding.data
                continue
            alert = Alert(
                rule=finding.rule.value,
                subject=finding.subject,
                state=ACTIVE,
                site=finding.site,
                district=finding.district,
                detail=finding.detail,
                data=finding.data,
                started_at=now_ms,
            )
            session.add(alert)
            changed.append(alert)
            _audit(session, "alert.raise", alert, now_ms)
        for key, alert in active.items():
            if key not in found and alert.rule in evaluated:
                alert.state, alert.ended_at = ENDED, now_ms
                changed.append(alert)
                _audit(session, "alert.end", alert, now_ms)
        session.commit()
        return [AlertEvent.of(alert) for alert in changed]


def _audit(session: Session, action: str, alert: Alert, now_ms: int) -> None:
    audit.record(
        session,
        ts_ms=now_ms,
        actor=ACTOR,
        role="system",
        action=action,
        target=f"{alert.rule}:{alert.subject}",
        after={"state": alert.state, "detail": alert.detail},
    )
