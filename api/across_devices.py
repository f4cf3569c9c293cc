"""Windows summarised across the devices of a district, a site or the whole city, from per-device ranges.

The store aggregates per device and window; a group's value is combined from those: a mean from
the devices' sums and counts (not a mean of means), min of mins, max of maxes, sums of sums and
counts, and for ``last`` the mean of each device's last value in the window (the group's level
now). Only numbers are combined. ``rename`` merges the fields of one role, each model naming its
own, under the role's name in its unit (a kW meter and a W meter summed in W).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from api.query import TimeRange
from collector.store.base import Aggregate, FieldValue, Row, TelemetryReader, newest_per_device

CITY = "city"


class GroupBy(StrEnum):
    DISTRICT = "district"
    SITE = "site"
    CITY = "city"


@dataclass(slots=True)
class GroupWindow:
    """One group's window: its devices and a value per field."""

    group: str | None
    ts_ms: int
    devices: set[str] = field(default_factory=set)
    values: dict[str, float] = field(default_factory=dict)


def _number(value: FieldValue | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def group_of_devices(store: TelemetryReader, measurement: str, by: GroupBy) -> Callable[[str], str | None]:
    """Each device's group from the tags of its newest point (a device that moved counts where it is now)."""
    if by is GroupBy.CITY:
        return lambda _device: CITY
    groups = {
        point.tags["device"]: point.tags.get(by.value)
        for point in newest_per_device(store.latest(measurement=measurement))
    }
    return groups.get


def _per_device(
    store: TelemetryReader,
    measurement: str,
    span: TimeRange,
    window_s: int,
    fields: Sequence[str] | None,
    aggregate: Aggregate,
) -> list[Row]:
    return store.range(
        measurement=measurement,
        start_ms=span.start_ms,
        end_ms=span.end_ms,
        fields=fields,
        window_s=window_s,
        aggregate=aggregate,
    )


def combine(
    store: TelemetryReader,
    measurement: str,
    span: TimeRange,
    *,
    window_s: int,
    aggregate: Aggregate,
    fields: Sequence[str] | None,
    group_of: Callable[[str], str | None],
    rename: Mapping[str, tuple[str, float]] | None = None,
) -> list[GroupWindow]:
    """One row per group and window, sorted by group then time; ``rename`` maps a field to the name
    and factor its values are combined under (counts are not scaled)."""
    renamed = rename or {}

    def named(name: str, value: float, how: Aggregate) -> tuple[str, float]:
        target, factor = renamed.get(name, (name, 1.0))
        return target, value if how is Aggregate.COUNT else value * factor

    windows: dict[tuple[str, int], GroupWindow] = {}
    sums: dict[tuple[str, int, str], float] = defaultdict(float)
    counts: dict[tuple[str, int, str], float] = defaultdict(float)

    def window_of(row: Row) -> GroupWindow | None:
        device = row.tags.get("device")
        if device is None:
            return None
        group = group_of(device)
        key = (group or "", row.ts_ms)
        found = windows.get(key)
        if found is None:
            found = windows[key] = GroupWindow(group, row.ts_ms)
        found.devices.add(device)
        return found

    # A mean needs sums and counts; a "last" is averaged over devices, so counts the devices too.
    first = Aggregate.SUM if aggregate is Aggregate.MEAN else aggregate
    for row in _per_device(store, measurement, span, window_s, fields, first):
        target = window_of(row)
        if target is None:
            continue
        for field_name, raw in row.values.items():
            value = _number(raw)
            if value is None:
                continue
            name, value = named(field_name, value, first)
            key = (target.group or "", row.ts_ms, name)
            known = target.values.get(name)
            if aggregate is Aggregate.MIN:
                target.values[name] = value if known is None else min(known, value)
            elif aggregate is Aggregate.MAX:
                target.values[name] = value if known is None else max(known, value)
            elif aggregate in (Aggregate.SUM, Aggregate.COUNT):
                target.values[name] = (known or 0.0) + value
            else:  # MEAN (sums now, counts below) and LAST (mean over devices)
                sums[key] += value
                counts[key] += 1
    if aggregate is Aggregate.MEAN:
        counts.clear()
        for row in _per_device(store, measurement, span, window_s, fields, Aggregate.COUNT):
            device = row.tags.get("device")
            if device is None:
                continue
            for field_name, raw in row.values.items():
                value = _number(raw)
                if value is not None:
                    name, value = named(field_name, value, Aggregate.COUNT)
                    counts[(group_of(device) or "", row.ts_ms, name)] += value
    if aggregate in (Aggregate.MEAN, Aggregate.LAST):
        for (group, ts_ms, name), total in sums.items():
            if counts.get((group, ts_ms, name)):
                windows[(group, ts_ms)].values[name] = total / counts[(group, ts_ms, name)]
    return [windows[key] for key in sorted(windows)]
