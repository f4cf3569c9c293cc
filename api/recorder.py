"""What only the API knows, written into the store as time series so that Grafana can show it.

Delays (trip matching), occupancy (validator taps), how right the published arrival predictions
were (``transit_accuracy``, api/transit/accuracy_watch.py) and how lighting commands ended (the
registry) are computed by the API; the dashboards read the store. Each point's time comes from
the data (the vehicle's fix, the command's due time), never from the clock of the replica that
writes it, so every API replica behind a load balancer writes the same points and the store keeps
one of each (a point's identity is measurement, tags and time). Accuracy points are the exception:
each replica scores the predictions it published, at its own round's time; sums over replicas
count each sample once per replica, which leaves the shares as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from google.transit import gtfs_realtime_pb2
from sqlalchemy import select

from api.registry import Registry
from api.registry.models import Command
from api.settings import ApiSettings
from api.transit.accuracy import accuracy_points
from api.transit.accuracy_watch import AccuracyWatch
from api.transit.feeds import TransitService
from api.transit.occupancy import Occupancy
from citygw.contract import wire
from collector.store.base import FieldValue, Point, PointsRejected, PointWriter, TelemetryReader

log = logging.getLogger(__name__)

VEHICLE_MEASUREMENT = "transit_vehicle"
COMMAND_MEASUREMENT = "command"
ENDED = tuple(outcome.value for outcome in wire.CommandOutcome)
# A command's result can reach the API long after it ran (the agent was offline meanwhile):
# ended commands due this long before the command TTL are still looked for.
RESULT_GRACE_MS = 86_400_000
COMMANDS_PER_ROUND = 1000  # after a restart the day's commands are written again, a round at a time
ACCURACY_BACKLOG = 10_000  # accuracy points kept for the next round while the store is down
_OCCUPANCY = gtfs_realtime_pb2.VehiclePosition.OccupancyStatus


@runtime_checkable
class StoreWriter(PointWriter, Protocol):
    """A store the API can write to (``create_app`` is given a reader; the services give a full store)."""


@dataclass(frozen=True, slots=True)
class VehicleState:
    """What the API makes of one vehicle at its newest fix."""

    vehicle: str
    fix_ts_ms: int
    route: str | None = None
    direction: int | None = None
    trip_id: str | None = None
    delay_s: float | None = None
    confidence: float | None = None
    occupancy: Occupancy | None = None


def vehicle_point(state: VehicleState) -> Point | None:
    """The ``transit_vehicle`` point of ``state``; None when the API knows nothing beyond the fix.

    The trip id changes with every run: a field, never a tag (series cardinality).
    """
    fields: dict[str, FieldValue] = {}
    if state.trip_id is not None and state.delay_s is not None and state.confidence is not None:
        # Always floats: InfluxDB keeps a field's first type and refuses the other.
        fields |= {
            "trip_id": state.trip_id,
            "delay_s": float(round(state.delay_s, 1)),
            "confidence": float(round(state.confidence, 3)),
        }
    if state.occupancy is not None:
        fields |= {
            "occupancy_percentage": state.occupancy.percentage,
            "occupancy_status": _OCCUPANCY.Name(state.occupancy.status),
        }
    if not fields:
        return None
    tags = {"vehicle": state.vehicle}
    if state.route:
        tags["route"] = state.route
    if state.direction is not None:
        tags["direction"] = str(state.direction)
    return Point(VEHICLE_MEASUREMENT, tags, state.fix_ts_ms, fields)


def vehicle_states(service: TransitService, store: TelemetryReader, now_ms: int) -> list[VehicleState]:
    """Every vehicle in the transit feeds as of ``now_ms`` (the feeds' snapshot, shared with the routes)."""
    settings = service.settings
    snapshot = service.snapshot(
        store,
        now_ms=now_ms,
        max_age_s=settings.feed_max_vehicle_age_s,
        max_ahead_s=settings.feed_max_clock_ahead_s,
    )
    states = []
    for vehicle, fix in sorted(snapshot.vehicles.items()):
        occupancy = snapshot.occupancies.get(vehicle)
        match = snapshot.matches.get(vehicle)
        if match is None:
            states.append(VehicleState(vehicle, fix.ts_ms, route=fix.route_id, occupancy=occupancy))
            continue
        trip = match.run.trip
        states.append(
            VehicleState(
                vehicle,
                fix.ts_ms,
                route=trip.route_id,
                direction=trip.direction_id,
                trip_id=trip.trip_id,
                delay_s=match.delay_s,
                confidence=match.confidence,
                occupancy=occupancy,
            )
        )
    return states


def scheduled_by(command: Command) -> str:
    """How the command's due time was chosen: ``sun`` (dusk, dawn...), ``at`` a time, or ``now``."""
    if command.schedule is None:
        return "now"
    return "sun" if "event" in command.schedule else "at"


def command_point(command: Command) -> Point:
    """The ``command`` point of an ended command, at its due time.

    The controller is tagged ``cabinet``, not ``device``: a command is no reading of the device, and
    the API lists as a device's readings what carries a ``device`` tag.
    ``lateness_s`` (when it ran minus when it was due) only for commands that ran (done or failed).
    """
    target = command.target.get("kind", "")
    if command.target.get("address") is not None:
        target = f"{target}-{command.target['address']}"
    tags = {
        "agent": command.agent_id,
        "cabinet": command.device_id,
        "target": target,
        "action": command.action,
        "outcome": command.status,
        "scheduled": scheduled_by(command),
    }
    fields: dict[str, FieldValue] = {"command_id": command.id}
    ran = command.status in (
        wire.CommandOutcome.DONE,
        wire.CommandOutcome.DONE_BUT_DARK,
        wire.CommandOutcome.FAILED,
    )
    if ran and command.result_at is not None:
        fields["lateness_s"] = (command.result_at - command.due_at) / 1000
    return Point(COMMAND_MEASUREMENT, tags, command.due_at, fields)


class Recorder:
    """Writes the vehicles' transit state and the commands that ended, once per ``record()``.

    A command is written until the store took it; what the store refused for good is logged
    and not tried again.
    """

    def __init__(
        self,
        writer: PointWriter,
        *,
        reader: TelemetryReader,
        registry: Registry,
        transit: TransitService,
        settings: ApiSettings,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._registry = registry
        self._transit = transit
        self._settings = settings
        self._written: dict[str, int] = {}  # command id → due time, while it is looked for
        self.accuracy = AccuracyWatch()
        self._accuracy_backlog: list[Point] = []  # scored, not yet taken by the store

    def record(self, now_ms: int) -> int:
        """Write what the API knows as of ``now_ms``; how many points the store took."""
        vehicles = [vehicle_point(s) for s in vehicle_states(self._transit, self._reader, now_ms)]
        self._accuracy_backlog = (self._accuracy_backlog + self._accuracy_points(now_ms))[-ACCURACY_BACKLOG:]
        commands = self._ended_commands(now_ms)
        points = (
            [p for p in vehicles if p is not None]
            + self._accuracy_backlog
            + [command_point(c) for c in commands]
        )
        if not points:
            return 0
        taken = self._write(points)
        self._accuracy_backlog = []
        for command in commands:
            self._written[command.id] = command.due_at
        return taken

    def _accuracy_points(self, now_ms: int) -> list[Point]:
        """Predictions the buses' positions settled since the previous round; this round's sampled."""
        settings = self._settings
        snapshot = self._transit.snapshot(
            self._reader,
            now_ms=now_ms,
            max_age_s=settings.feed_max_vehicle_age_s,
            max_ahead_s=settings.feed_max_clock_ahead_s,
        )
        published = self._transit.source.for_realtime(now_ms // 1000)
        timetable = published.timetable if published is not None else None
        return accuracy_points(self.accuracy.round(self._reader, snapshot, timetable, now_ms=now_ms), now_ms)

    def _ended_commands(self, now_ms: int) -> list[Command]:
        """Commands that ended and are not written yet, at most ``COMMANDS_PER_ROUND`` of them."""
        since = now_ms - self._settings.command_ttl_s * 1000 - RESULT_GRACE_MS
        self._written = {id_: due for id_, due in self._written.items() if due >= since}
        ended = select(Command.id).where(Command.status.in_(ENDED), Command.due_at >= since)
        with self._registry.session() as session:
            new = [id_ for id_ in session.scalars(ended) if id_ not in self._written][:COMMANDS_PER_ROUND]
            if not new:
                return []
            commands = list(session.scalars(select(Command).where(Command.id.in_(new))))
            session.expunge_all()
        return commands

    def _write(self, points: Sequence[Point]) -> int:
        """Write ``points``; StoreUnavailable goes up (nothing is marked written, all is retried)."""
        try:
            self._writer.write(points)
        except PointsRejected as exc:
            for point, reason in exc.rejected:
                log.error(
                    "the store refused %s %s at %d: %s",
                    point.measurement,
                    dict(point.tags),
                    point.ts_ms,
                    reason,
                )
            return len(points) - len(exc.rejected)
        return len(points)


__all__ = [
    "COMMAND_MEASUREMENT",
    "VEHICLE_MEASUREMENT",
    "Recorder",
    "StoreWriter",
    "VehicleState",
    "command_point",
    "vehicle_point",
    "vehicle_states",
]
