"""The alert rules: each looks at the store or the registry now and names what is wrong, per subject."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from api.air import current_stations
from api.registry.catalogue import RegisteredDevice
from api.registry.models import Agent
from api.series import newest_per_device
from api.settings import ApiSettings
from citygw import air_quality, wire
from collector.store.base import Aggregate, TelemetryReader

LAMP_STATUS = re.compile(r"^(lamp\d+)_status$")
# DALI status byte: b0 ballast (control gear) failure, b1 lamp failure.
BALLAST_FAIL, LAMP_FAIL = 0x01, 0x02
OFFLINE_STATES = frozenset({wire.DeviceState.TIMEOUT.value})


class Rule(StrEnum):
    AQ_BAND = "aq_band"
    LAMP_FAILURE = "lamp_failure"
    WATER_LEAK = "water_leak"
    WATER_NO_FLOW = "water_no_flow"
    DEVICE_OFFLINE = "device_offline"
    AGENT_OFFLINE = "agent_offline"


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a rule finds wrong now; (rule, subject) identifies it across evaluations."""

    rule: Rule
    subject: str
    detail: str
    site: str | None = None
    district: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def aq_band(
    store: TelemetryReader, devices: Mapping[str, RegisteredDevice], settings: ApiSettings, now_ms: int
) -> list[Finding]:
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
        for station in current_stations(
            store, devices, table=table, now_ms=now_ms, max_age_s=settings.aq_max_age_s
        )
        if station.index is not None and station.index.band >= settings.alert_aq_band
    ]


def lamp_failure(store: TelemetryReader) -> list[Finding]:
    """Lamps whose DALI status reports a lamp or ballast failure in their cabinet's newest reading."""
    found = []
    for point in newest_per_device(store.latest(measurement="lighting")):
        for name, value in sorted(point.fields.items()):
            match = LAMP_STATUS.match(name)
            if not match or isinstance(value, bool) or not isinstance(value, int):
                continue
            failures = [what for bit, what in ((LAMP_FAIL, "lamp"), (BALLAST_FAIL, "ballast")) if value & bit]
            if failures:
                lamp = match.group(1)
                found.append(
                    Finding(
                        Rule.LAMP_FAILURE,
                        f"{point.tags['device']}:{lamp}",
                        f"{lamp} of {point.tags['device']}: {' and '.join(failures)} failure ({value})",
                        site=point.tags.get("site"),
                        district=point.tags.get("district"),
                        data={"device": point.tags["device"], "lamp": lamp, "status": value},
                    )
                )
    return found


def _flow_over(store: TelemetryReader, now_ms: int, window_s: int, aggregate: Aggregate) -> dict[str, float]:
    """Per water meter read at least twice, ``aggregate`` of flow_rate over the last ``window_s``."""

    def per_device(how: Aggregate) -> dict[str, list[float]]:
        rows = store.range(
            measurement="water",
            start_ms=now_ms - window_s * 1000,
            end_ms=now_ms + 1,  # a reading taken this very millisecond counts
            fields=["flow_rate"],
            window_s=window_s,  # one window, or two when the range straddles a boundary
            aggregate=how,
        )
        values: dict[str, list[float]] = {}
        for row in rows:
            value = row.values.get("flow_rate")
            if "device" in row.tags and isinstance(value, int | float) and not isinstance(value, bool):
                values.setdefault(row.tags["device"], []).append(float(value))
        return values

    counts = {device: sum(values) for device, values in per_device(Aggregate.COUNT).items()}
    combine = min if aggregate is Aggregate.MIN else max
    return {
        device: combine(values)
        for device, values in per_device(aggregate).items()
        if counts.get(device, 0) >= 2
    }


def water_patterns(store: TelemetryReader, settings: ApiSettings, now_ms: int) -> list[Finding]:
    """Leak: flow never below the threshold in the leak window; no flow: none in the no-flow window."""
    tags = {p.tags["device"]: p.tags for p in newest_per_device(store.latest(measurement="water"))}
    found = []
    for device, lowest in _flow_over(store, now_ms, settings.alert_leak_window_s, Aggregate.MIN).items():
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
    for device, highest in _flow_over(store, now_ms, settings.alert_no_flow_window_s, Aggregate.MAX).items():
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
    return found


def offline(agents: Sequence[Agent]) -> list[Finding]:
    """Agents whose status says offline, and devices their agent's health says do not answer.

    The signal is the device's read state on its agent's health, never the age of its newest reading:
    a device reporting by exception (``heartbeat_s``) is read every poll but publishes rarely.
    """
    found = []
    for agent in agents:
        if agent.state == wire.AgentState.OFFLINE.value:
            found.append(
                Finding(Rule.AGENT_OFFLINE, agent.id, f"agent {agent.id} is offline", site=agent.site or None)
            )
            continue  # its devices' health is as old as its last message
        for device, health in sorted((agent.device_health or {}).items()):
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
