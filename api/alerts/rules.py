"""The alert rules: each looks at the store or the registry now and names what is wrong, per subject."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from api.air import station_indices
from api.registry.models import Agent
from api.settings import ApiSettings
from citygw.contract import air_quality, wire
from collector.store.base import Aggregate, Point, TelemetryReader, newest_per_device
from firmware_bridge.catalogue import RoleCatalogue
from firmware_bridge.roles import Role

OFFLINE_STATES = frozenset({wire.DeviceState.TIMEOUT.value})


class Rule(StrEnum):
    AQ_BAND = "aq_band"
    LAMP_FAILURE = "lamp_failure"
    WATER_LEAK = "water_leak"
    WATER_NO_FLOW = "water_no_flow"
    DEVICE_OFFLINE = "device_offline"
    AGENT_OFFLINE = "agent_offline"
    BIN_FULL = "bin_full"
    WATER_QUALITY = "water_quality"
    PARKING_SILENT = "parking_sensor_silent"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a rule finds wrong now; (rule, subject) identifies it across evaluations."""

    rule: Rule
    subject: str
    detail: str
    site: str | None = None
    district: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def aq_band(store: TelemetryReader, settings: ApiSettings, now_ms: int) -> list[Finding]:
    """Stations whose current index reached the configured band."""
    table = air_quality.TABLES[settings.aq_table]
    return [
        Finding(
            Rule.AQ_BAND,
            station.device,
            f"air quality {station.index.level} (band {station.index.band}, {station.index.pollutant})",
            site=station.site,
            district=station.district,
            data={
                "band": station.index.band,
                "level": station.index.level,
                "pollutant": station.index.pollutant,
            },
        )
        for station in station_indices(
            store, settings.roles, table=table, now_ms=now_ms, max_age_s=settings.aq_max_age_s
        )
        if station.index is not None and station.index.band >= settings.alert_aq_band
    ]


def lamp_failure(store: TelemetryReader, roles: RoleCatalogue) -> list[Finding]:
    """Lamps whose status word reports a failure (bits named by their profile) in their controller's
    newest reading; the lamp is the field's channel."""
    found = []
    for measurement in roles.measurements(Role.LAMP_STATUS):
        for point in newest_per_device(store.latest(measurement=measurement)):
            device = point.tags["device"]
            statuses = roles.chosen(Role.LAMP_STATUS, measurement, point.fields)
            for lamp, (spec, value) in sorted(statuses.items(), key=lambda item: item[0] or ""):
                status = int(value)
                failures = spec.faults(status)
                if failures:
                    name = lamp or spec.field
                    found.append(
                        Finding(
                            Rule.LAMP_FAILURE,
                            f"{device}:{name}",
                            f"{name} of {device}: {' and '.join(failures)} failure ({status})",
                            site=point.tags.get("site"),
                            district=point.tags.get("district"),
                            data={"device": device, "lamp": name, "status": status},
                        )
                    )
    return found


COVERAGE_PARTS = 12
"""A water rule judges a meter whose readings reach into the first and the last twelfth of its window."""


@dataclass(frozen=True, slots=True)
class FlowWindow:
    """Per device, ``aggregate`` of a role's value over a window: judged (readings span it) or not."""

    spanning: dict[str, float]
    partial: frozenset[str]


def _flow_over(
    store: TelemetryReader, roles: RoleCatalogue, now_ms: int, window_s: int, aggregate: Aggregate
) -> FlowWindow:
    """``aggregate`` of the flow rate (m³/h) over the last ``window_s`` per meter (``_over``)."""
    return _over(store, roles, Role.FLOW_RATE, now_ms, window_s, aggregate)


def _over(
    store: TelemetryReader, roles: RoleCatalogue, role: Role, now_ms: int, window_s: int, aggregate: Aggregate
) -> FlowWindow:
    """``aggregate`` of ``role`` (canonical unit) over the last ``window_s`` per device, for the devices
    whose readings span it (one in the window's first and one in its last ``1/COVERAGE_PARTS``); the others
    with readings in it are ``partial``: two readings 30 s apart say nothing about four hours."""
    start_ms, end_ms = now_ms - window_s * 1000, now_ms + 1  # a reading taken this very millisecond counts

    def per_device(how: Aggregate, first_ms: int, last_ms: int) -> dict[str, list[float]]:
        values: dict[str, list[float]] = {}
        for measurement in roles.measurements(role):
            rows = store.range(
                measurement=measurement,
                start_ms=first_ms,
                end_ms=last_ms,
                fields=[f.field for f in roles.of(role, measurement)],
                window_s=window_s,  # one window, or two when the range straddles a boundary
                aggregate=how,
            )
            for row in rows:
                # A count stays a count; a min or max is converted to the role's unit like any reading.
                value = (
                    _count(row.values)
                    if how is Aggregate.COUNT
                    else roles.value(role, measurement, row.values)
                )
                if "device" in row.tags and value is not None:
                    values.setdefault(row.tags["device"], []).append(value)
        return values

    edge_ms = max(1, window_s * 1000 // COVERAGE_PARTS)
    head = per_device(Aggregate.COUNT, start_ms, start_ms + edge_ms)
    tail = per_device(Aggregate.COUNT, now_ms - edge_ms, end_ms)
    combine = min if aggregate is Aggregate.MIN else max
    spanning: dict[str, float] = {}
    partial: set[str] = set()
    for device, values in per_device(aggregate, start_ms, end_ms).items():
        if sum(head.get(device, [])) >= 1 and sum(tail.get(device, [])) >= 1:
            spanning[device] = combine(values)
        else:
            partial.add(device)
    return FlowWindow(spanning, frozenset(partial))


def _count(values: Mapping[str, object]) -> float | None:
    counts = [float(v) for v in values.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(counts) if counts else None


def water_patterns(
    store: TelemetryReader, settings: ApiSettings, now_ms: int
) -> tuple[list[Finding], set[tuple[Rule, str]]]:
    """Leak: flow never below the threshold in the leak window; no flow: none in the no-flow window.

    Also the (rule, meter) pairs it cannot judge: readings in the window that do not span it. Such
    a meter raises nothing, and an alert it has stays as it is (a pause in its data cures nothing).
    """
    roles = settings.roles
    tags = {
        p.tags["device"]: p.tags
        for measurement in roles.measurements(Role.FLOW_RATE)
        for p in newest_per_device(store.latest(measurement=measurement))
    }
    found = []
    leak = _flow_over(store, roles, now_ms, settings.alert_leak_window_s, Aggregate.MIN)
    for device, lowest in leak.spanning.items():
        if lowest >= settings.alert_leak_min_flow:
            found.append(
                Finding(
                    Rule.WATER_LEAK,
                    device,
                    f"water flowing without a pause for {settings.alert_leak_window_s} s (≥ {lowest} m³/h)",
                    site=tags.get(device, {}).get("site"),
                    district=tags.get(device, {}).get("district"),
                    data={"min_flow": lowest, "window_s": settings.alert_leak_window_s},
                )
            )
    no_flow = _flow_over(store, roles, now_ms, settings.alert_no_flow_window_s, Aggregate.MAX)
    for device, highest in no_flow.spanning.items():
        if highest <= 0:
            found.append(
                Finding(
                    Rule.WATER_NO_FLOW,
                    device,
                    f"no water flow for {settings.alert_no_flow_window_s} s",
                    site=tags.get(device, {}).get("site"),
                    district=tags.get(device, {}).get("district"),
                    data={"window_s": settings.alert_no_flow_window_s},
                )
            )
    undecided = {(Rule.WATER_LEAK, device) for device in leak.partial}
    undecided |= {(Rule.WATER_NO_FLOW, device) for device in no_flow.partial}
    return found, undecided


def offline(agents: Sequence[Agent], registered: Set[tuple[str, str]]) -> list[Finding]:
    """Agents whose status says offline, and devices their agent's health says do not answer.

    Only devices ``registered`` (active, as (agent id, device id)) on that agent: a health message
    naming thousands of devices nobody registered raises nothing. The signal is the device's read
    state on its agent's health, never the age of its newest reading: a device reporting by
    exception (``heartbeat_s``) is read every poll but publishes rarely.
    """
    found = []
    for agent in agents:
        if agent.state == wire.AgentState.OFFLINE.value:
            found.append(
                Finding(Rule.AGENT_OFFLINE, agent.id, f"agent {agent.id} is offline", site=agent.site or None)
            )
            continue  # its devices' health is as old as its last message
        for device, health in sorted((agent.device_health or {}).items()):
            if (agent.id, device) not in registered:
                continue
            if health.get("state") in OFFLINE_STATES or health.get("quarantined") is True:
                found.append(
                    Finding(
                        Rule.DEVICE_OFFLINE,
                        device,
                        f"device {device} on agent {agent.id} does not answer ({health.get('state')})",
                        site=agent.site or None,
                        data={
                            "agent": agent.id,
                            "state": health.get("state"),
                            "last_ok": health.get("last_ok"),
                        },
                    )
                )
    return found


def _newest(store: TelemetryReader, roles: RoleCatalogue, *with_roles: Role) -> list[Point]:
    """The newest point of each device in every measurement holding a field of ``with_roles``."""
    return [
        point
        for measurement in roles.measurements(*with_roles)
        for point in newest_per_device(store.latest(measurement=measurement))
    ]


def bin_full(
    store: TelemetryReader, settings: ApiSettings, now_ms: int, registered: Set[str]
) -> tuple[list[Finding], set[tuple[Rule, str]]]:
    """Registered bins whose fill level stayed at or above the threshold for the whole window (a bag
    dropped on the sensor for a minute is no full bin), and the bins it cannot judge (readings in the
    window that do not span it: such a bin's alert stays as it is)."""
    roles, window_s, full = settings.roles, settings.alert_bin_full_window_s, settings.alert_bin_full_percent
    tags = {p.tags["device"]: p.tags for p in _newest(store, roles, Role.FILL_LEVEL)}
    lowest = _over(store, roles, Role.FILL_LEVEL, now_ms, window_s, Aggregate.MIN)
    found = [
        Finding(
            Rule.BIN_FULL,
            device,
            f"bin {device} at least {level:g} % full for {window_s} s (threshold {full:g} %)",
            site=tags.get(device, {}).get("site"),
            district=tags.get(device, {}).get("district"),
            data={"fill_level": level, "threshold": full, "window_s": window_s},
        )
        for device, level in sorted(lowest.spanning.items())
        if device in registered and level >= full
    ]
    return found, {(Rule.BIN_FULL, device) for device in lowest.partial}


def water_quality(store: TelemetryReader, settings: ApiSettings, registered: Set[str]) -> list[Finding]:
    """Registered probes whose newest reading has pH, turbidity or free chlorine outside its limit
    (``ApiSettings.water_limits``); one alert per probe and parameter (``wq-1:turbidity``)."""
    roles, limits = settings.roles, settings.water_limits
    found = []
    for point in _newest(store, roles, *limits):
        device = point.tags["device"]
        if device not in registered:
            continue
        for role, limit in limits.items():
            value = roles.value(role, point.measurement, point.fields)
            breach = None if value is None else limit.breached(value)
            if value is None or breach is None:
                continue
            found.append(
                Finding(
                    Rule.WATER_QUALITY,
                    f"{device}:{role.value}",
                    f"{role.value} of {device} is {value:g} {limit.unit}, {breach} ({limit.describe()})",
                    site=point.tags.get("site"),
                    district=point.tags.get("district"),
                    data={
                        "device": device,
                        "parameter": role.value,
                        "value": value,
                        "low": limit.low,
                        "high": limit.high,
                    },
                )
            )
    return found


def parking_silent(
    store: TelemetryReader, settings: ApiSettings, now_ms: int, intervals: Mapping[str, float]
) -> list[Finding]:
    """Registered parking-bay sensors (role occupied) whose newest reading is older than
    ``alert_silent_intervals`` times the interval they report at (``intervals``: the registered device's
    heartbeat_s when it reports by exception, else its poll_s). A bay's state changes rarely: its sensor
    dying looks like a bay nobody parks in, unless its silence is noticed."""
    found = []
    for point in _newest(store, settings.roles, Role.OCCUPIED):
        device = point.tags["device"]
        interval = intervals.get(device)
        if interval is None:
            continue
        silent_s = (now_ms - point.ts_ms) / 1000
        limit_s = settings.alert_silent_intervals * interval
        if silent_s > limit_s:
            found.append(
                Finding(
                    Rule.PARKING_SILENT,
                    device,
                    f"parking sensor {device} silent for {silent_s:.0f} s (expected every {interval:g} s)",
                    site=point.tags.get("site"),
                    district=point.tags.get("district"),
                    data={"last_reading": point.ts_ms, "silent_s": silent_s, "interval_s": interval},
                )
            )
    return found
