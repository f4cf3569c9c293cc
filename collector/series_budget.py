"""How many series each agent may create: a bound on what one agent can make every reader read.

A series is (measurement, device, tags); the store keeps one per distinct combination for ever, and
every list of devices grows with them. The collector remembers the series each agent wrote since it
started; a reading that would make an agent's ``max_per_agent``-th + 1 series is refused (dead letter
``too_many_series``), readings of its known series still go through. Each collector keeps its own
count (a shared subscription spreads an agent's messages), and starts from nothing after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_SERIES_PER_AGENT = 10_000


class SeriesBudget:
    """The series each agent has written, up to ``max_per_agent`` each (one thread: the converter)."""

    def __init__(self, max_per_agent: int = MAX_SERIES_PER_AGENT) -> None:
        if max_per_agent < 1:
            raise ValueError(f"max_series_per_agent must be at least 1, not {max_per_agent}")
        self.max_per_agent = max_per_agent
        self._series: dict[str, set[tuple[str, str, tuple[tuple[str, str], ...]]]] = {}

    def admit(self, agent: str, measurement: str, device: str, tags: Iterable[tuple[str, str]]) -> bool:
        """True if the series is one of ``agent``'s or it may have one more (then it is remembered)."""
        known = self._series.setdefault(agent, set())
        series = (measurement, device, tuple(sorted(tags)))
        if series in known:
            return True
        if len(known) >= self.max_per_agent:
            return False
        known.add(series)
        return True

    def refusal(self, agent: str) -> str:
        return (
            f"agent {agent} already wrote {self.max_per_agent} series (measurement, device, tags) since "
            "this collector started; a new one is refused. Fix: give devices stable ids and put changing "
            "values in fields, or raise max_series_per_agent"
        )


__all__ = ["MAX_SERIES_PER_AGENT", "SeriesBudget"]
