"""Limits of drinking water's quality a probe in the network measures: pH, turbidity, free chlorine.

Keyed by the fields' role names (``water_ph``, ``turbidity``, ``free_chlorine``), in the roles'
canonical units (pH, NTU, mg/L). The defaults are Ukraine's ДСанПіН 2.2.4-171-10 (the sanitary rules
of drinking water, Ministry of Health order 400 of 12.05.2010), the strictest of the sources in
docs/reference.md (Alerts); the API's alert rule takes others from its settings. Dependency-free, so the
API and the dashboards can both use it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """The range a value must stay in (either bound may be open) and where the range comes from."""

    low: float | None
    high: float | None
    unit: str
    source: str

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise ValueError("a limit needs a lower or an upper bound")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"the lower limit {self.low:g} must be below the upper {self.high:g}")

    def breached(self, value: float) -> str | None:
        """How ``value`` is outside the limit ("below 0.3", "above 1"), or None when inside."""
        if self.low is not None and value < self.low:
            return f"below {self.low:g}"
        if self.high is not None and value > self.high:
            return f"above {self.high:g}"
        return None

    def describe(self) -> str:
        if self.low is None:
            return f"at most {self.high:g} {self.unit}"
        if self.high is None:
            return f"at least {self.low:g} {self.unit}"
        return f"{self.low:g}-{self.high:g} {self.unit}"


DSANPIN = "ДСанПіН 2.2.4-171-10"
LIMITS: dict[str, Limit] = {
    # EU Directive 2020/2184, Annex I Part C allows 6.5-9.5; the Ukrainian rules 6.5-8.5.
    "water_ph": Limit(6.5, 8.5, "pH", DSANPIN),
    # ДСанПіН: at most 1.0 NTU (NOK) in tap water; WHO: below 1 NTU for effective chlorination.
    "turbidity": Limit(None, 1.0, "NTU", DSANPIN),
    # ДСанПіН: 0.3-0.5 mg/dm³ of free residual chlorine (WHO 1984: 0.2-0.5 mg/l after 30 min of contact).
    "free_chlorine": Limit(0.3, 0.5, "mg/L", DSANPIN),
}
