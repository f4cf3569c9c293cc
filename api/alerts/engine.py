"""One evaluation of every rule: new findings become active alerts, vanished ones end; both are audited."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.alerts.delivery import AlertEvent
from api.alerts.rules import (
    Finding,
    Rule,
    aq_band,
    bin_full,
    lamp_failure,
    offline,
    parking_silent,
    water_patterns,
    water_quality,
)
from api.registry import Registry, audit
from api.registry.models import Agent, Alert, Device
from api.settings import ApiSettings
from collector.store.base import TelemetryReader

log = logging.getLogger(__name__)
ACTOR = "system:alert-rules"
ACTIVE, ENDED = "active", "ended"


def evaluate(
    registry: Registry, store: TelemetryReader, settings: ApiSettings, now_ms: int
) -> list[AlertEvent]:
    """Run the rules once; the alerts raised and ended, committed, for delivery.

    A rule that cannot run (store down) ends none of its alerts: nothing is known about them. Replicas
    running this at once raise and end each alert once: only the one whose write wins returns its event.
    """
    with registry.session() as session:
        agents = list(session.scalars(select(Agent)))
        active_devices = list(
            session.execute(
                select(Device.agent_id, Device.device_id, Device.spec).where(Device.retired_at.is_(None))
            )
        )
    on_agents = {(agent, device) for agent, device, _spec in active_devices}
    registered = {device for _agent, device in on_agents}
    intervals = {device: interval for _agent, device, spec in active_devices if (interval := _interval(spec))}
    # Each check gives its findings and the (rule, subject) pairs it could not judge this time.
    checks: list[tuple[tuple[Rule, ...], Callable[[], tuple[list[Finding], set[tuple[Rule, str]]]]]] = [
        ((Rule.AQ_BAND,), lambda: (aq_band(store, settings, now_ms), set())),
        ((Rule.LAMP_FAILURE,), lambda: (lamp_failure(store, settings.roles), set())),
        ((Rule.WATER_LEAK, Rule.WATER_NO_FLOW), lambda: water_patterns(store, settings, now_ms)),
        ((Rule.DEVICE_OFFLINE, Rule.AGENT_OFFLINE), lambda: (offline(agents, on_agents), set())),
        ((Rule.BIN_FULL,), lambda: bin_full(store, settings, now_ms, registered)),
        ((Rule.WATER_QUALITY,), lambda: (water_quality(store, settings, registered), set())),
        ((Rule.PARKING_SILENT,), lambda: (parking_silent(store, settings, now_ms, intervals), set())),
    ]
    found: dict[tuple[str, str], Finding] = {}
    evaluated: set[str] = set()
    undecided: set[tuple[str, str]] = set()
    for rules, check in checks:
        try:
            findings, unjudged = check()
        except Exception:
            log.exception("alert rules %s could not run", ", ".join(rules))
            continue
        evaluated.update(rules)
        found.update(((f.rule.value, f.subject), f) for f in findings)
        undecided.update((rule.value, subject) for rule, subject in unjudged)

    with registry.session() as session:
        active = {
            (a.rule, a.subject): a for a in session.scalars(select(Alert).where(Alert.ended_at.is_(None)))
        }
        for key, alert in active.items():
            if key in found:
                alert.detail, alert.data = found[key].detail, found[key].data
        session.commit()
    # Each raise and end is a transaction of its own: another replica may win any of them.
    changes = [_raise(registry, finding, now_ms) for key, finding in found.items() if key not in active]
    changes += [
        _end(registry, alert, now_ms)
        for key, alert in active.items()
        if key not in found and key not in undecided and alert.rule in evaluated
    ]
    return [event for event in changes if event is not None]


def _interval(spec: dict[str, object]) -> float | None:
    """Seconds between a registered device's published readings: its heartbeat when it reports by
    exception, else its poll interval; None when its spec gives neither."""
    for key in ("heartbeat_s", "poll_s"):
        value = spec.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _raise(registry: Registry, finding: Finding, now_ms: int) -> AlertEvent | None:
    """The event of ``finding`` raised, or None when another replica raised it first (uq_alerts_active)."""
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
    with registry.session() as session:
        session.add(alert)
        _audit(session, "alert.raise", alert, now_ms)
        try:
            session.commit()
        except IntegrityError:
            log.debug("alert %s:%s was raised by another replica", alert.rule, alert.subject)
            return None
    return AlertEvent.of(alert)


def _end(registry: Registry, alert: Alert, now_ms: int) -> AlertEvent | None:
    """The event of ``alert`` ended, or None when another replica ended it first."""
    with registry.session() as session:
        ending = update(Alert).where(Alert.id == alert.id, Alert.ended_at.is_(None))
        if session.connection().execute(ending.values(state=ENDED, ended_at=now_ms)).rowcount == 0:
            log.debug("alert %s was ended by another replica", alert.id)
            return None
        alert.state, alert.ended_at = ENDED, now_ms
        _audit(session, "alert.end", alert, now_ms)
        session.commit()
    return AlertEvent.of(alert)


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
