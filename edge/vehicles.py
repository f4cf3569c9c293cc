"""The tags of a reading of a device in a vehicle: which vehicle, and the route and trip it is on.

The route and trip come from the vehicle's on-board console (``vehicle.console``) while a
driver is logged in there, else the route comes from the config and there is no trip. A
console that stops answering keeps its last log-in for ``vehicle.console_expiry_s`` only: a
bus that drove on without it must not be published for ever on a trip it has left.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from citygw import wire
from edge.config import CONSOLE_FIELDS, Device, Vehicle

_TAG_VALUE = re.compile(wire.LABEL_PATTERN)


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

        An id that cannot be a tag (``wire.LABEL_PATTERN``) counts as not given.
        """
        console = self._consoles.get(device_id)
        if console is None or not any(name in fields for name in CONSOLE_FIELDS):
            return None
        ids: list[str | None] = []
        problems = []
        for name in CONSOLE_FIELDS:
            value = fields.get(name)
            text = value.strip() if isinstance(value, str) else ""
            if text and not _TAG_VALUE.fullmatch(text):
                problems.append(f"{name} {text!r} cannot be a tag (it must match {wire.LABEL_PATTERN})")
                text = ""
            ids.append(text or None)
        route, trip = ids
        if route is None and trip is None:
            self._assignments.pop(console.vehicle_id, None)  # nobody logged in
        else:
            expires_at = self._clock() + console.expiry_s
            self._assignments[console.vehicle_id] = Assignment(device_id, route, trip, expires_at)
        return "; ".join(problems) or None

    def assignment(self, vehicle_id: str) -> Assignment | None:
        """The log-in on the vehicle's console, unless the console has been silent past its expiry."""
        known = self._assignments.get(vehicle_id)
        return known if known is not None and self._clock() <= known.expires_at else None

    def tags(self, vehicle: Vehicle) -> dict[str, str]:
        """Tags ``vehicle``, ``vehicle_label``, ``route`` (console, else config) and ``trip`` (console)."""
        tags = {"vehicle": vehicle.id, "vehicle_label": vehicle.label}
        assignment = self.assignment(vehicle.id)
        route = (assignment.route if assignment else None) or vehicle.route
        if route is not None:
            tags["route"] = route
        if assignment is not None and assignment.trip is not None:
            tags["trip"] = assignment.trip
        return tags
