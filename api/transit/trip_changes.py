"""Trip changes an operator announces: a run canceled, or stops of a run skipped (GTFS-realtime).

A dispatcher posts one for a run (trip, service date and, for a frequency-based trip, start time);
it is checked against the static timetable, kept on a notice board (``api.transit.board``) and
ended, never deleted. In TripUpdates a canceled run is ``CANCELED`` (a bus found on it is published
without it: the operator's word wins over a guess) and a skipped stop is a ``SKIPPED``
stop_time_update, on the run's bus's predictions or, with no bus yet, on an update of its own.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.transit import gtfs_realtime_pb2
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.transit.board import Notice, NoticeBoard
from api.transit.timetable import Timetable, TripRun, gtfs_time
from api.transit.trip_updates import run_descriptor

PUBLISH_AHEAD_S = 24 * 3600  # a change is in the feed from a day before its run starts until it ends
_STU = gtfs_realtime_pb2.TripUpdate.StopTimeUpdate
_TRIP = gtfs_realtime_pb2.TripDescriptor


class TripChangeCreate(BaseModel):
    """A dispatcher's change to one run, as posted: ``canceled``, or ``skipped_stop_sequences``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trip_id: str = Field(min_length=1, max_length=200, description="a trip_id of the GTFS in use")
    start_date: str = Field(pattern=r"^[0-9]{8}$", description="service date, YYYYMMDD")
    start_time: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,3}:[0-5][0-9]:[0-5][0-9]$",
        description="HH:MM:SS the run starts; needed for a frequency-based trip",
    )
    canceled: bool = Field(default=False, description="the whole run does not operate")
    skipped_stop_sequences: list[int] = Field(
        default_factory=list, max_length=500, description="stop_sequence of each stop the run will not serve"
    )
    note: str = Field(default="", max_length=500, description="why, for the record (not published)")

    @model_validator(mode="after")
    def _one_change(self) -> TripChangeCreate:
        if self.canceled == bool(self.skipped_stop_sequences):
            raise ValueError("give either canceled: true or skipped_stop_sequences, not both nor neither")
        if len(set(self.skipped_stop_sequences)) != len(self.skipped_stop_sequences):
            raise ValueError("skipped_stop_sequences names a stop twice")
        return self


class TripChangePublic(TripChangeCreate):
    id: str
    created_by: str
    created_at: int
    ended_at: int | None = None


def _date(start_date: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(start_date, "%Y%m%d").date()
    except ValueError:
        return None


def _seconds(start_time: str) -> int:
    hours, minutes, seconds = (int(part) for part in start_time.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def run_of_change(change: TripChangeCreate, timetable: Timetable) -> TripRun | list[str]:
    """The run ``change`` names in ``timetable``, or the problems (``field: reason``) why there is none."""
    trip = timetable.trips.get(change.trip_id)
    if trip is None:
        return [f"trip_id: {change.trip_id!r} is not in the GTFS in use"]
    service_date = _date(change.start_date)
    if service_date is None:
        return [f"start_date: {change.start_date!r} is no date"]
    if not timetable.service_runs(trip.service_id, service_date):
        return [f"start_date: trip {trip.trip_id!r} does not run on {service_date.isoformat()}"]
    shift = 0
    if trip.frequencies:
        if change.start_time is None:
            return ["start_time: a frequency-based trip needs the start time of its run"]
        start = _seconds(change.start_time)
        if not any(start in range(f.start_s, f.end_s, f.headway_s) for f in trip.frequencies):
            return [f"start_time: no run of trip {trip.trip_id!r} starts at {change.start_time}"]
        shift = start - trip.first_s
    elif change.start_time is not None and _seconds(change.start_time) != trip.first_s:
        return [f"start_time: trip {trip.trip_id!r} starts at {gtfs_time(trip.first_s)}"]
    run = TripRun(trip, service_date, timetable.day_start(service_date), shift)
    problems = []
    sequences = {stop_time.stop_sequence for stop_time in trip.stop_times}
    for i, sequence in enumerate(change.skipped_stop_sequences):
        if sequence not in sequences:
            problems.append(
                f"skipped_stop_sequences[{i}]: trip {trip.trip_id!r} has no stop_sequence {sequence}"
            )
    frequency = run.frequency
    if change.skipped_stop_sequences and frequency is not None and not frequency.exact_times:
        # Every stop of an UNSCHEDULED run is UNSCHEDULED (gtfs-realtime.proto): none can be SKIPPED.
        problems.append("skipped_stop_sequences: a headway run has no schedule to skip stops of; cancel it")
    return problems or run


@dataclass
class RunChange:
    """What operators (or detection) changed on one run: canceled, and which stop_sequences are skipped."""

    run: TripRun
    canceled: bool = False
    skipped: set[int] = field(default_factory=set)
    since_s: int = 0  # when the newest change was posted


class TripChangeBoard:
    """Operator trip changes on a notice board (SQLite file ``path``, or memory)."""

    def __init__(self, path: Path | None) -> None:
        self._board = NoticeBoard(path, table="trip_change", prefix="tc")

    def create(self, change: TripChangeCreate, *, actor: str, now_s: int) -> TripChangePublic:
        return _public(self._board.post(change.model_dump_json(), actor=actor, now_s=now_s))

    def end(self, change_id: str, *, now_s: int) -> TripChangePublic | None:
        """End the change now (the run is back as planned; the change stays on record)."""
        ended = self._board.end(change_id, now_s=now_s)
        return _public(ended) if ended else None

    def not_ended(self) -> list[TripChangePublic]:
        return [_public(notice) for notice in self._board.not_ended()]

    def by_run(self, timetable: Timetable, now_s: int) -> dict[str, RunChange]:
        """The changes not ended of runs not over, merged per run key (a cancellation wins over skips)."""
        merged: dict[str, RunChange] = {}
        for change in self.not_ended():
            run = run_of_change(change, timetable)
            if isinstance(run, list) or run.arrival(len(run.trip.stop_times) - 1) < now_s:
                continue  # the timetable changed under it, or the run is over
            known = merged.setdefault(run.key, RunChange(run))
            known.canceled |= change.canceled
            known.skipped |= set(change.skipped_stop_sequences)
            known.since_s = max(known.since_s, change.created_at)
        return merged

    def close(self) -> None:
        self._board.close()


def _public(notice: Notice) -> TripChangePublic:
    return TripChangePublic(
        **json.loads(notice.body),
        id=notice.id,
        created_by=notice.created_by,
        created_at=notice.created_at,
        ended_at=notice.ended_at,
    )


def add_changed_runs(
    feed: gtfs_realtime_pb2.FeedMessage, changes: Iterable[RunChange], *, now_s: int
) -> None:
    """A TripUpdate for each changed run that has no bus: CANCELED, or its SKIPPED stops.

    Only runs starting within ``PUBLISH_AHEAD_S``; entity id ``<run key>`` as for a run with a bus.
    """
    for change in sorted(changes, key=lambda c: c.run.key):
        run = change.run
        if run.departure(0) > now_s + PUBLISH_AHEAD_S:
            continue
        entity = feed.entity.add()
        entity.id = run.key
        update = entity.trip_update
        run_descriptor(run, update.trip)
        update.timestamp = change.since_s
        if change.canceled:
            update.trip.schedule_relationship = _TRIP.CANCELED
            continue
        for stop_time in run.trip.stop_times:
            if stop_time.stop_sequence in change.skipped:
                skipped = update.stop_time_update.add()
                skipped.stop_sequence = stop_time.stop_sequence
                skipped.stop_id = stop_time.stop_id
                skipped.schedule_relationship = _STU.SKIPPED
