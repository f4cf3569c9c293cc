"""What a reading of a device in a vehicle says of it: which vehicle, and the route and trip it is on.

The vehicle and route are tags; the trip is the string field ``trip_id``, never a tag (a bus
makes some 30 trips a day: a series each). The route and trip come from the vehicle's on-board
console (``vehicle.console``) while a driver is logged in there, else the route comes from the
config and there is no trip. A console that stops answering keeps its last log-in for
``vehicle.console_expiry_s`` only: a bus that drove on without it must not be published for
ever on a trip it has left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from citygw.contract import wire
from citygw.contract.agent_config import CONSOLE_FIELDS, Device, Vehicle

_FIELD_VALUE: TypeAdapter[wire.FieldValue] = TypeAdapter(wire.FieldValue)
TRIP_FIELD = "trip_id"  # the field of a reading that names the trip its vehicle is on


def _fits_a_field(text: str) -> bool:
    """Whether the wire carries ``text`` as a field's value (``wire.FieldValue``: a string not too long)."""
    try:
        _FIELD_VALUE.validate_python(text)
    except ValidationError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Console:
    vehicle_id: str
    expiry_s: float


@dataclass(frozen=True, slots=True)
class Assignment:
    """What a driver logged in to on a console: GTFS ids, each None when not given."""

    console: str
    route: str | None
    trip: str | None
    expires_at: float  # on the Vehicles' clock: the console's last answer plus its vehicle's expiry


class Vehicles:
    """What the consoles of an agent's vehicles last said; one per agent, shared by all its pollers."""

    def __init__(
        self, devices: Iterable[Device] = (), *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._consoles: dict[str, _Console] = {}
        self._assignments: dict[str, Assignment] = {}  # by vehicle id
        self.configure(devices)

    def configure(self, devices: Iterable[Device]) -> None:
        """Take the consoles the devices' vehicles name; a vehicle that kept its console keeps its log-in."""
        self._consoles = {
            d.vehicle.console: _Console(d.vehicle.id, d.vehicle.console_expiry_s)
            for d in devices
            if d.vehicle is not None and d.vehicle.console is not None
        }
        self._assignments = {
            vehicle_id: known
            for vehicle_id, known in self._assignments.items()
            if known.console in self._consoles and self._consoles[known.console].vehicle_id == vehicle_id
        }

    def heard(self, device_id: str, fields: Mapping[str, wire.FieldValue]) -> str | None:
        """Take a reading of ``device_id``; when it is a console, its log-in. Returns what was wrong with it.

        A ``route_id`` that cannot be a tag (``wire.LABEL_PATTERN``) or a ``trip_id`` that cannot
        be a field's value counts as not given.
        """
        console = self._consoles.get(device_id)
        if console is None or not any(name in fields for name in CONSOLE_FIELDS):
            return None
        route_id, trip_id = (fields.get(name) for name in CONSOLE_FIELDS)
        route = route_id.strip() if isinstance(route_id, str) else ""
        trip = trip_id.strip() if isinstance(trip_id, str) else ""
        problems = []
        if route and not wire.is_label(route):
            problems.append(f"route_id {route!r} cannot be a tag (it must match {wire.LABEL_PATTERN})")
            route = ""
        if trip and not _fits_a_field(trip):
            problems.append(f"trip_id of {len(trip)} characters is too long for a field of a reading")
            trip = ""
        if not route and not trip:
            self._assignments.pop(console.vehicle_id, None)  # nobody logged in
        else:
            expires_at = self._clock() + console.expiry_s
            self._assignments[console.vehicle_id] = Assignment(
                device_id, route or None, trip or None, expires_at
            )
        return "; ".join(problems) or None

    def assignment(self, vehicle_id: str) -> Assignment | None:
        """The log-in on the vehicle's console, unless the console has been silent past its expiry."""
        known = self._assignments.get(vehicle_id)
        return known if known is not None and self._clock() <= known.expires_at else None

    def tags(self, vehicle: Vehicle) -> dict[str, str]:
        """Tags ``vehicle``, ``vehicle_label`` and ``route`` (console's, else config's); never the trip."""
        tags = {"vehicle": vehicle.id, "vehicle_label": vehicle.label}
        assignment = self.assignment(vehicle.id)
        route = (assignment.route if assignment else None) or vehicle.route
        if route is not None:
            tags["route"] = route
        return tags

    def trip(self, vehicle: Vehicle) -> str | None:
        """The trip the driver logged in to on the vehicle's console (field ``TRIP_FIELD``), else None."""
        assignment = self.assignment(vehicle.id)
        return assignment.trip if assignment is not None else None
