"""Feeds the prediction ledger from what the API published and from the buses' positions.

Each round (the API's recorder, every ``CITYGW_RECORD_INTERVAL_S``) first follows every watched
bus through the positions stored since the previous round, projected onto its run's line (scoring
the stops it reached), then samples the arrival predictions of the TripUpdates feed the riders get
now. The recorder writes what was scored as ``transit_accuracy`` points (api/transit/accuracy.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from google.transit import gtfs_realtime_pb2

from api.transit.accuracy import BACK_JITTER_M, MAX_GAP_S, PredictionLedger, Score
from api.transit.feeds import FeedKind, Snapshot
from api.transit.matching import MatchRules, TripMatch
from api.transit.timetable import Timetable
from api.transit.vehicle_positions import MEASUREMENT, fix_of_row
from collector.store.base import TelemetryReader

_SKIPPED = gtfs_realtime_pb2.TripUpdate.StopTimeUpdate.SKIPPED
LATE_POINTS_MS = 10_000  # positions this much older than the previous round may still be arriving


class AccuracyWatch:
    """The ledger of one API process and where in the positions it has read to."""

    def __init__(self, ledger: PredictionLedger | None = None, *, rules: MatchRules | None = None) -> None:
        self.ledger = ledger if ledger is not None else PredictionLedger()
        self.rules = rules or MatchRules()
        self._read_to_ms: int | None = None

    def round(
        self, reader: TelemetryReader, snapshot: Snapshot, timetable: Timetable | None, *, now_ms: int
    ) -> list[Score]:
        """Score what the positions up to ``now_ms`` settle, then sample ``snapshot``'s predictions."""
        scores: list[Score] = []
        if timetable is not None:
            scores = self.follow(reader, timetable, now_ms=now_ms)
            self.sample(snapshot, timetable)
        self.ledger.expire(now_ms / 1000)
        return scores

    def follow(self, reader: TelemetryReader, timetable: Timetable, *, now_ms: int) -> list[Score]:
        """Every watched bus through the positions stored since the previous round (oldest first)."""
        start_ms = now_ms - int(MAX_GAP_S * 1000)
        if self._read_to_ms is not None:
            start_ms = max(start_ms, self._read_to_ms - LATE_POINTS_MS)
        self._read_to_ms = now_ms
        watching = self.ledger.watching()
        if not watching:
            return []
        rows = reader.range(measurement=MEASUREMENT, start_ms=start_ms, end_ms=now_ms + 1)
        scores = []
        for row in sorted(rows, key=lambda r: r.ts_ms):
            fix = fix_of_row(row)
            if fix is None or fix.vehicle_id not in watching:
                continue
            x, y = timetable.plane.to_xy(fix.lat, fix.lon)
            for run_key, trip_id in watching[fix.vehicle_id]:
                if trip_id not in timetable.trips:
                    continue  # a timetable swapped meanwhile: its predictions expire unscored
                path = timetable.path(trip_id)
                found = [on.along_m for on in path.line.project(x, y, within_m=self.rules.off_line_m)]
                last_m = self.ledger.last_along(fix.vehicle_id, run_key)
                ahead = [m for m in found if last_m is None or m >= last_m - BACK_JITTER_M]
                if ahead:
                    scores += self.ledger.observe(fix.vehicle_id, run_key, fix.ts_ms / 1000, min(ahead))
        return scores

    def sample(self, snapshot: Snapshot, timetable: Timetable) -> None:
        """Keep the arrival predictions of the TripUpdates feed in ``snapshot`` (what riders were told)."""
        made_s = snapshot.built_at_ms / 1000
        for vehicle, match, predictions in published_predictions(snapshot):
            fix = snapshot.vehicles[vehicle]
            trip = match.run.trip
            self.ledger.publish(
                vehicle,
                match.run.key,
                route_id=trip.route_id,
                trip_id=trip.trip_id,
                stop_along_m=timetable.path(trip.trip_id).stop_along_m,
                predictions=predictions,
                made_s=made_s,
                seen=(fix.ts_ms / 1000, match.along_m),
            )


def published_predictions(snapshot: Snapshot) -> Iterator[tuple[str, TripMatch, list[tuple[int, int]]]]:
    """(vehicle, its run, [(stop index, predicted arrival s)]) of each TripUpdate in ``snapshot``'s feed."""
    for entity in snapshot.feeds[FeedKind.TRIP_UPDATES].entity:
        update = entity.trip_update
        match = snapshot.matches.get(update.vehicle.id)
        if match is None or update.vehicle.id not in snapshot.vehicles or match.run.key != entity.id:
            continue
        index_of = {stop_time.stop_sequence: i for i, stop_time in enumerate(match.run.trip.stop_times)}
        yield (
            update.vehicle.id,
            match,
            [
                (index_of[stop.stop_sequence], stop.arrival.time)
                for stop in update.stop_time_update
                if stop.stop_sequence in index_of
                and stop.HasField("arrival")
                and stop.arrival.time
                and stop.schedule_relationship != _SKIPPED
            ],
        )
