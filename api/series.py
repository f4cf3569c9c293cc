"""How the API shows a stored series' tags: identity (device, agent) apart from descriptive ones.

Grouping series into devices is the store's (``collector.store.base.newest_per_device``)."""

from __future__ import annotations

from collections.abc import Mapping

IDENTITY_TAGS = frozenset({"device", "agent"})


def descriptive_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags other than the identity ones (device, agent), which the API shows as their own fields."""
    return {name: value for name, value in sorted(tags.items()) if name not in IDENTITY_TAGS}
