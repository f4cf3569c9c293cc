"""How full a bus is, coarsely, from its validator's tap counters.

Validators count boardings, not alightings, so the load is estimated as the taps of the last
``ride_minutes`` (about one ride): good enough to tell "seats free" from "standing room only",
which is all a coarse occupancy_status promises. Percentages are rounded to tens.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from google.transit import gtfs_realtime_pb2

from collector.store.base import Row

VALIDATOR_MEASUREMENT = "validator"
TAP_FIELD_PREFIX = "taps_"
_VP = gtfs_realtime_pb2.VehiclePosition
# (below this share of capacity, status); FULL beyond the last.
_LEVELS = (
    (0.05, _VP.EMPTY),
    (0.40, _VP.MANY_SEATS_AVAILABLE),
    (0.65, _VP.FEW_SEATS_AVAILABLE),
    (0.90, _VP.STANDING_ROOM_ONLY),
    (1.00, _VP.CRUSHED_STANDING_ROOM_ONLY),
)


@dataclass(frozen=True, slots=True)
class Occupancy:
    status: int  # VehiclePosition.OccupancyStatus
    percentage: int


def boardings(rows: Sequence[Row]) -> int | None:
    """Taps counted over ``rows`` of one validator (oldest first); a counter that restarted counts from 0."""
    if len(rows) < 2:
        return None
    total = 0
    for before, after in itertools.pairwise(rows):
        for name, value in after.values.items():
            old = before.values.get(name)
            if not name.startswith(TAP_FIELD_PREFIX) or not isinstance(value, int) or isinstance(value, bool):
                continue
            if isinstance(old, int) and not isinstance(old, bool):
                total += value - old if value >= old else value  # a reboot restarts the counter
    return total


def estimate(rows: Sequence[Row], *, capacity: int) -> Occupancy | None:
    """Coarse occupancy from one bus's validator rows over about one ride, or None without two readings."""
    taps = boardings(rows)
    if taps is None:
        return None
    share = taps / capacity
    status = next((level for limit, level in _LEVELS if share < limit), _VP.FULL)
    return Occupancy(status, min(round(share * 10) * 10, 200))
