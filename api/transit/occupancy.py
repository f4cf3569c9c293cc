"""How full a bus is, coarsely, from its validator's tap counters.

Validators count boardings, not alightings, so the load is estimated as the taps of the last
``ride_minutes`` (about one ride): good enough to tell "seats free" from "standing room only",
which is all a coarse occupancy_status promises. Percentages are rounded to tens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.transit import gtfs_realtime_pb2

from api.consumption import reset_flag
from collector.store.base import FieldValue, Row

VALIDATOR_MEASUREMENT = "validator"
TAP_FIELD_PREFIX = "taps_"
# occupancy_percentage is unsigned and may pass 100 (more on board than the vehicle is built for).
MAX_PERCENTAGE = 200
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


def _count(value: FieldValue | None) -> int | None:
    """A tap counter's reading: a whole number >= 0 (a bool is an int in Python, but no count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def boardings(rows: Sequence[Row]) -> int | None:
    """Taps counted over one bus's validator ``rows`` (oldest first); None without two readings of a counter.

    Counters are read as meters are (``api.consumption``): a reading flagged ``<field>_reset`` (the
    agent saw the counter restart from 0) counts its own value; a counter lower than before without
    the flag is a new baseline. A value that is not a whole number >= 0 is no reading.
    """
    total = 0
    counted = False
    last: dict[tuple[str, str], int] = {}  # by device (a bus may have a validator at each door) and field
    for row in rows:
        for name, reading in row.values.items():
            value = _count(reading)
            if value is None or not name.startswith(TAP_FIELD_PREFIX):
                continue
            counter = (row.tags.get("device", ""), name)
            before = last.get(counter)
            last[counter] = value
            if before is None:
                continue
            counted = True
            if row.values.get(reset_flag(name)) is True:
                total += value
            elif value >= before:
                total += value - before
    return total if counted else None


def estimate(rows: Sequence[Row], *, capacity: int, since_ms: int) -> Occupancy | None:
    """Coarse occupancy from one bus's validator rows (oldest first) over the ride since ``since_ms``.

    None without two readings of a counter, and None instead of EMPTY when no reading is older than
    ``since_ms``: taps before the first reading are unknown, so few counted says nothing.
    """
    taps = boardings([row for row in rows if row.ts_ms >= since_ms])
    if taps is None:
        return None
    share = taps / capacity
    status = next((level for limit, level in _LEVELS if share < limit), _VP.FULL)
    if status == _VP.EMPTY and not any(row.ts_ms < since_ms for row in rows):
        return None
    return Occupancy(status, min(max(round(share * 10) * 10, 0), MAX_PERCENTAGE))
