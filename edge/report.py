"""Report by exception: which of a device's polls are published (journaled).

The device is polled every ``poll_s`` all the same (its health stays true); a reading is
published when a field moved beyond its deadband against the value last published (OPC UA's
deadband filter), a counter or status changed, a field appears, or ``heartbeat_s`` passed since the
last published reading. A heartbeat is the reading just taken, with its own time: never a
cached value with a new timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from citygw.contract import wire
from citygw.contract.agent_config import Device
from firmware_bridge.profile import DlmsProfile, MbusProfile, Profile, ReportRule, report_rule

ANY_CHANGE = ReportRule("change")


def rules_for(device: Device, profile: Profile | MbusProfile | DlmsProfile) -> dict[str, ReportRule]:
    """Each field's rule: a counter's is any change; else the device config's, the profile's, any change."""
    rules: dict[str, ReportRule] = {}
    for spec in profile.field_specs:
        setting = device.report.get(spec.field)
        if setting is not None and not spec.counter:
            rules[spec.field] = report_rule(setting)
        else:
            rules[spec.field] = spec.report_rule or ANY_CHANGE
    return rules


@dataclass
class ExceptionReport:
    """One device's report-by-exception state: the rules, the values last published and when."""

    rules: Mapping[str, ReportRule]
    heartbeat_s: float
    poll_s: float
    published: dict[str, wire.FieldValue] = field(default_factory=dict)
    published_at: float | None = None  # monotonic seconds

    @classmethod
    def for_device(
        cls, device: Device, profile: Profile | MbusProfile | DlmsProfile
    ) -> ExceptionReport | None:
        """The device's state, or None when it publishes every poll (no ``heartbeat_s``)."""
        if device.heartbeat_s is None:
            return None
        return cls(rules_for(device, profile), device.heartbeat_s, device.poll_s)

    def due(self, fields: Mapping[str, wire.FieldValue], now: float) -> bool:
        """Whether the reading just read (``fields`` at monotonic ``now``) is to be published.

        The heartbeat falls on the poll nearest ``heartbeat_s`` (within half a poll period), so
        that polls jittering around the period do not stretch the heartbeat by a whole poll.
        """
        if self.published_at is None or now - self.published_at + self.poll_s / 2 >= self.heartbeat_s:
            return True
        for name, value in fields.items():
            if name not in self.published:
                return True  # a field not published yet (a slow point's first read, a sensor back)
            if self.rules.get(name, ANY_CHANGE).moved(self.published[name], value):
                return True
        return False

    def sent(self, fields: Mapping[str, wire.FieldValue], now: float) -> None:
        """``fields`` were published at ``now``: the new references of the fields they hold."""
        self.published.update(fields)
        self.published_at = now

    def forget(self) -> None:
        """The device failed: its next good read is published (the data shows it is back)."""
        self.published_at = None
