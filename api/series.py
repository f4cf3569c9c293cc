"""How the API groups stored series into devices: one entry per (agent, device, measurement)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from collector.store.base import Point

IDENTITY_TAGS = frozenset({"device", "agent"})


def newest_per_device(points: Iterable[Point]) -> list[Point]:
    """The newest point per (agent, device, measurement), sorted; points without a device are skipped.

    A device can have several series of one measurement when a descriptive tag changed (a bus
    changing route); the newest describes it now.
    """
    newest: dict[tuple[str, str, str], Point] = {}
    for point in points:
        device = point.tags.get("device")
        if not device:
            continue
        key = (point.tags.get("agent", ""), device, point.measurement)
        known = newest.get(key)
        if known is None or point.ts_ms > known.ts_ms:
            newest[key] = point
    return [newest[key] for key in sorted(newest)]


def descriptive_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags other than the identity ones (device, agent), which the API shows as their own fields."""
    return {name: value for name, value in sorted(tags.items()) if name not in IDENTITY_TAGS}
