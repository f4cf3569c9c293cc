"""The current EEA air-quality index of each station and of the city, from the stations' recent readings.

Pollutants are found by role (``pm2_5``, ``no2``...) in every measurement a profile gives such a
role, and converted to µg/m³ from the unit the profile gives the field (a gas in ppb by its molar
mass), whether or not the station is registered. The index takes the averages the EEA defines
(``citygw.contract.air_quality.AVERAGING_S``): the gases' mean over the past hour, PM's over the past 24
hours. Values that are not concentrations (negative sensor noise) are left out.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from citygw.contract import air_quality
from collector.store.base import Aggregate, TelemetryReader, newest_per_device
from firmware_bridge.catalogue import RoleCatalogue
from firmware_bridge.roles import Role

POLLUTANTS: tuple[Role, ...] = tuple(Role(p) for p in air_quality.POLLUTANTS)


@dataclass(frozen=True, slots=True)
class StationIndex:
    device: str
    site: str | None
    district: str | None
    observed_ms: int
    concentrations: dict[str, float]
    index: air_quality.StationIndex | None
    stale: bool


def concentrations_ugm3(
    roles: RoleCatalogue, measurement: str, fields: Mapping[str, object]
) -> dict[str, float]:
    """The pollutants of one point (or of one device's means) in µg/m³, by role name."""
    found: dict[str, float] = {}
    for pollutant in POLLUTANTS:
        amount = roles.value(pollutant, measurement, fields)
        if amount is not None and math.isfinite(amount) and amount >= 0:
            found[pollutant.value] = round(amount, 3)
    return found


def means(
    store: TelemetryReader, measurement: str, fields: Sequence[str], start_ms: int, end_ms: int
) -> dict[str, dict[str, float]]:
    """Per device, each field's mean over [start_ms, end_ms): sums over counts of at most two
    epoch-aligned windows (the store's windows cannot start at ``start_ms``)."""
    if not fields:
        return {}
    window_s = max(1, -(-(end_ms - start_ms) // 1000))
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for slot, how in enumerate((Aggregate.SUM, Aggregate.COUNT)):
        rows = store.range(
            measurement=measurement,
            start_ms=start_ms,
            end_ms=end_ms,
            fields=list(fields),
            window_s=window_s,
            aggregate=how,
        )
        for row in rows:
            device = row.tags.get("device")
            for name, value in row.values.items():
                if device is not None and isinstance(value, int | float) and not isinstance(value, bool):
                    totals[(device, name)][slot] += float(value)
    found: dict[str, dict[str, float]] = {}
    for (device, name), (total, count) in totals.items():
        if count:
            found.setdefault(device, {})[name] = total / count
    return found


def station_indices(
    store: TelemetryReader,
    roles: RoleCatalogue,
    *,
    table: air_quality.IndexTable,
    now_ms: int,
    max_age_s: int,
) -> list[StationIndex]:
    """One entry per station, sorted by device; stale ones (newest reading older than ``max_age_s``)
    carry no index."""
    stations = []
    for measurement in roles.measurements(*POLLUTANTS):
        averaged: dict[str, dict[str, float]] = defaultdict(dict)
        for seconds in sorted(set(air_quality.AVERAGING_S.values())):
            fields = [
                f.field
                for pollutant in POLLUTANTS
                if air_quality.AVERAGING_S[pollutant.value] == seconds
                for f in roles.of(pollutant, measurement)
            ]
            for device, values in means(
                store, measurement, fields, now_ms - seconds * 1000, now_ms + 1
            ).items():
                averaged[device] |= values
        for point in newest_per_device(store.latest(measurement=measurement)):
            device = point.tags["device"]
            found = concentrations_ugm3(roles, measurement, averaged.get(device, {}))
            stale = now_ms - point.ts_ms > max_age_s * 1000
            indexed = {p: c for p, c in found.items() if p in table.upper_bounds}
            stations.append(
                StationIndex(
                    device=device,
                    site=point.tags.get("site"),
                    district=point.tags.get("district"),
                    observed_ms=point.ts_ms,
                    concentrations=found,
                    index=air_quality.index(indexed, table) if indexed and not stale else None,
                    stale=stale,
                )
            )
    return sorted(stations, key=lambda s: s.device)


class RecentIndices:
    """The stations' indices per table, reused for ``max_age_ms`` (a minute) after they were computed.

    The index is defined hourly; averaging a day of every station's readings for each public request
    would let a burst of requests keep the store busy (bench/aq_index.py: 0.7 s on SQLite for 50
    stations reading every minute).
    """

    def __init__(self, max_age_ms: int = 60_000) -> None:
        self.max_age_ms = max_age_ms
        self._lock = threading.Lock()
        self._known: dict[str, tuple[int, list[StationIndex]]] = {}

    def get(self, table: str, now_ms: int, compute: Callable[[], list[StationIndex]]) -> list[StationIndex]:
        with self._lock:
            known = self._known.get(table)
        if known is not None and 0 <= now_ms - known[0] < self.max_age_ms:
            return known[1]
        found = compute()
        with self._lock:
            self._known[table] = (now_ms, found)
        return found


def worst(stations: Iterable[StationIndex]) -> StationIndex | None:
    """The station with the worst band (ties: the first by device id), among those with an index."""
    indexed = [s for s in stations if s.index is not None]
    return max(indexed, key=lambda s: s.index.band if s.index else 0, default=None)
