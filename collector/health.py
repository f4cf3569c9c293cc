"""Agents' ``health`` and ``status`` messages as ``agent_health`` points.

One measurement, two kinds of series (tags are identity only, every value is a field):

- per agent, tags ``agent`` (and ``site`` once the agent's telemetry told it): fields
  ``journal_backlog``, ``journal_dropped``, ``devices_total``, ``devices_ok``,
  ``devices_failing``, ``devices_quarantined`` at the health message's ``ts``; and ``online``
  (1/0) from each ``status`` message, at the time the collector received it (a status carries
  no time of its own; the retained one comes again whenever the collector subscribes);
- per device, tags ``agent``, ``device`` (and ``site``): fields ``state`` (the text),
  ``state_code`` (``STATE_CODES``, for graphs and thresholds), ``ok`` and ``quarantined``
  (1/0), ``reads``, ``failures``, ``fields_left_out`` (how many fields its readings leave out now:
  no measurement; the names and reasons are on the message), and when known ``last_ok_age_s``
  (seconds between the last good read and the message), ``last_published_age_s`` (the same for the
  newest reading journaled), ``suppressed`` (good reads a device reporting by exception did not
  publish), ``exception_code``, ``counter_resets``. A silent device has an old ``last_ok_age_s``; a
  steady one a fresh ``last_ok_age_s`` and an older ``last_published_age_s``. Written when
  the device's state, quarantine or fields left out changed, else at most every
  ``DEVICE_HEALTH_EVERY_S`` (``DeviceHealthGate``):
  a city's 200 000 meters behind concentrators would otherwise cost 20 000 points a second.
"""

from __future__ import annotations

from citygw.contract import wire
from collector.store.base import FieldValue, Point

AGENT_HEALTH = "agent_health"
DEVICE_HEALTH_EVERY_S = 900.0
# Stable codes for the device states: new states get new numbers, none is ever reused.
STATE_CODES: dict[wire.DeviceState, int] = {
    wire.DeviceState.OK: 0,
    wire.DeviceState.TIMEOUT: 1,
    wire.DeviceState.EXCEPTION: 2,
    wire.DeviceState.CRC_ERROR: 3,
    wire.DeviceState.DECODE_ERROR: 4,
    wire.DeviceState.NO_FIX: 5,
    wire.DeviceState.UNKNOWN: 6,
}


def _tags(agent: str, site: str | None, device: str | None = None) -> dict[str, str]:
    tags = {"agent": agent}
    if site is not None:
        tags["site"] = site
    if device is not None:
        tags["device"] = device
    return tags


class DeviceHealthGate:
    """Decides which devices of a health message get a point: changed ones, and the others every ``every_s``.

    Time is the messages' ``ts``; one gate per collector (with a shared subscription each collector
    sees part of an agent's messages and writes a little more often, never less).
    """

    def __init__(self, every_s: float = DEVICE_HEALTH_EVERY_S) -> None:
        self.every_ms = every_s * 1000
        self._last: dict[tuple[str, str], tuple[tuple[object, ...], int]] = {}

    def due(self, agent: str, device: str, health: wire.DeviceHealth, ts: int) -> bool:
        key = (agent, device)
        now = (health.state, bool(health.quarantined), sorted(health.fields_left_out or ()))
        last = self._last.get(key)
        if last is not None and last[0] == now and ts - last[1] < self.every_ms:
            return False
        self._last[key] = (now, ts)
        return True


def health_points(
    health: wire.Health, site: str | None = None, gate: DeviceHealthGate | None = None
) -> list[Point]:
    """The agent's point, then one point per device (those ``gate`` lets through), all at ``health.ts``."""
    devices = health.devices.values()
    ok = sum(1 for device in devices if device.state is wire.DeviceState.OK)
    agent: dict[str, FieldValue] = {
        "journal_backlog": health.journal.backlog,
        "journal_dropped": health.journal.dropped,
        "devices_total": len(health.devices),
        "devices_ok": ok,
        "devices_failing": len(health.devices) - ok,
        "devices_quarantined": sum(1 for device in devices if device.quarantined),
    }
    points = [Point(AGENT_HEALTH, _tags(health.agent, site), health.ts, agent)]
    for device_id, device in health.devices.items():
        if gate is not None and not gate.due(health.agent, device_id, device, health.ts):
            continue
        fields: dict[str, FieldValue] = {
            "state": device.state.value,
            "state_code": STATE_CODES[device.state],
            "ok": int(device.state is wire.DeviceState.OK),
            "quarantined": int(bool(device.quarantined)),
            "reads": device.reads,
            "failures": device.failures,
            "fields_left_out": len(device.fields_left_out or ()),  # 0 once they decode again
        }
        if device.last_ok is not None:
            fields["last_ok_age_s"] = max(0, health.ts - device.last_ok) / 1000
        if device.last_published is not None:
            fields["last_published_age_s"] = max(0, health.ts - device.last_published) / 1000
        if device.suppressed is not None:
            fields["suppressed"] = device.suppressed
        if device.exception_code is not None:
            fields["exception_code"] = device.exception_code
        if device.counter_resets is not None:
            fields["counter_resets"] = device.counter_resets
        points.append(Point(AGENT_HEALTH, _tags(health.agent, site, device_id), health.ts, fields))
    return points


def status_point(status: wire.Status, received_ms: int, site: str | None = None) -> Point:
    """``online`` 1 or 0 for the agent, at the time the status was received."""
    online = int(status.state is wire.AgentState.ONLINE)
    return Point(AGENT_HEALTH, _tags(status.agent, site), received_ms, {"online": online})
