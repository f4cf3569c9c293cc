"""The current EEA air-quality index of each station and of the city, from the stations' newest points.

Gases are indexed in µg/m³: a station's ``<gas>_ugm3`` field when it reports one, else its
``<gas>`` field converted from ppb when its profile says ppb (the AQT530's no2, so2, o3), else
taken as µg/m³. Values that are not concentrations (negative sensor noise) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from api.registry.catalogue import RegisteredDevice, field_units
from citygw import air_quality
from collector.store.base import Point, TelemetryReader, newest_per_device

MEASUREMENT = "air_quality"


@dataclass(frozen=True, slots=True)
class StationIndex:
    device: str
    site: str | None
    district: str | None
    observed_ms: int
    concentrations: dict[str, float]
    index: air_quality.StationIndex | None
    stale: bool


def concentrations_ugm3(fields: Mapping[str, object], units: Mapping[str, str]) -> dict[str, float]:
    """The pollutants of one point in µg/m³."""
    found: dict[str, float] = {}
    for pollutant in air_quality.POLLUTANTS:
        amount = _number(fields.get(f"{pollutant}_ugm3"))
        if amount is None:
            amount = _number(fields.get(pollutant))
            if amount is not None and units.get(pollutant) == "ppb":
                amount = air_quality.ugm3_from_ppb(pollutant, amount)
        if amount is not None and math.isfinite(amount) and amount >= 0:
            found[pollutant] = round(amount, 3)
    return found


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def station_indices(
    points: Iterable[Point],
    devices: Mapping[str, RegisteredDevice],
    *,
    table: air_quality.IndexTable,
    now_ms: int,
    max_age_s: int,
) -> list[StationIndex]:
    """One entry per station, sorted by device; stale ones (older than ``max_age_s``) carry no index."""
    stations = []
    for point in newest_per_device(points):
        device = point.tags["device"]
        registered = devices.get(device)
        units = field_units(registered.profile) if registered and registered.profile else {}
        found = concentrations_ugm3(point.fields, units)
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
    return stations


def current_stations(
    store: TelemetryReader,
    devices: Mapping[str, RegisteredDevice],
    *,
    table: air_quality.IndexTable,
    now_ms: int,
    max_age_s: int,
) -> list[StationIndex]:
    return station_indices(
        store.latest(measurement=MEASUREMENT), devices, table=table, now_ms=now_ms, max_age_s=max_age_s
    )


def worst(stations: Iterable[StationIndex]) -> StationIndex | None:
    """The station with the worst band (ties: the first by device id), among those with an index."""
    indexed = [s for s in stations if s.index is not None]
    return max(indexed, key=lambda s: s.index.band if s.index else 0, default=None)
