"""Service alerts: written by operators through the API, and automatic ones the feed notices itself.

Operator alerts are kept on a notice board (``api.transit.board``): ended, never deleted, so the
board is also a record. An automatic alert says a route has runs scheduled now but no
bus reporting: riders learn that the map is blind there, not that the service stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from google.transit import gtfs_realtime_pb2
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from api.transit.board import Notice, NoticeBoard
from api.transit.timetable import Timetable

_ALERT = gtfs_realtime_pb2.Alert
CAUSES = tuple(_ALERT.Cause.keys())
EFFECTS = tuple(_ALERT.Effect.keys())
SEVERITIES = tuple(_ALERT.SeverityLevel.keys())


def _one_of(names: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in names:
            raise ValueError(f"{value!r} is not one of {', '.join(names)}")
        return value

    return AfterValidator(check)


Cause = Annotated[str, _one_of(CAUSES), Field(json_schema_extra={"enum": list(CAUSES)})]
Effect = Annotated[str, _one_of(EFFECTS), Field(json_schema_extra={"enum": list(EFFECTS)})]
Severity = Annotated[str, _one_of(SEVERITIES), Field(json_schema_extra={"enum": list(SEVERITIES)})]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActivePeriod(_Model):
    start: int | None = Field(default=None, ge=0, description="POSIX seconds; open if missing")
    end: int | None = Field(default=None, ge=0, description="POSIX seconds; open if missing")

    @model_validator(mode="after")
    def _ordered(self) -> ActivePeriod:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end is before start")
        return self


class InformedEntity(_Model):
    """What the alert is about; at least one field (GTFS ids of the static timetable in use)."""

    agency_id: str | None = None
    route_id: str | None = None
    route_type: int | None = Field(default=None, ge=0, le=1702)
    direction_id: int | None = Field(default=None, ge=0, le=1)
    stop_id: str | None = None
    trip_id: str | None = None

    @model_validator(mode="after")
    def _names_something(self) -> InformedEntity:
        if not any(value is not None for value in self.model_dump().values()):
            raise ValueError(
                "an informed entity needs at least one of agency_id, route_id, route_type, stop_id, trip_id"
            )
        if self.direction_id is not None and self.route_id is None:
            raise ValueError("direction_id needs route_id")
        return self


class AlertCreate(_Model):
    """An operator's alert, as posted."""

    header_text: str = Field(min_length=1, max_length=200, description="short headline, Ukrainian")
    description_text: str = Field(default="", max_length=4000)
    header_text_en: str | None = Field(default=None, max_length=200)
    description_text_en: str | None = Field(default=None, max_length=4000)
    url: str | None = Field(default=None, max_length=500, pattern=r"^https?://")
    cause: Cause = "UNKNOWN_CAUSE"
    effect: Effect = "UNKNOWN_EFFECT"
    severity: Severity = "UNKNOWN_SEVERITY"
    active_periods: list[ActivePeriod] = Field(default_factory=list, max_length=50)
    informed_entities: list[InformedEntity] = Field(min_length=1, max_length=200)


class AlertPublic(AlertCreate):
    id: str
    created_by: str
    created_at: int
    ended_at: int | None = None


def unknown_ids(alert: AlertCreate, timetable: Timetable) -> list[str]:
    """Problems with ids the static timetable does not know, as ``informed_entities[i].field: reason``."""
    problems = []
    for i, entity in enumerate(alert.informed_entities):
        checks = (
            ("agency_id", entity.agency_id, timetable.agency_ids),
            ("route_id", entity.route_id, timetable.routes),
            ("stop_id", entity.stop_id, timetable.stops),
            ("trip_id", entity.trip_id, timetable.trips),
        )
        for name, value, known in checks:
            if value is not None and value not in known:
                problems.append(f"informed_entities[{i}].{name}: {value!r} is not in the GTFS in use")
        trip = timetable.trips.get(entity.trip_id or "")
        if trip is not None and entity.route_id is not None and trip.route_id != entity.route_id:
            problems.append(
                f"informed_entities[{i}].trip_id: {entity.trip_id!r} is not a trip of {entity.route_id!r}"
            )
    return problems


class AlertBoard:
    """Operator alerts in SQLite (``path``) or in memory (None); thread-safe."""

    def __init__(self, path: Path | None) -> None:
        self._board = NoticeBoard(path, table="alert", prefix="op")

    def create(self, alert: AlertCreate, *, actor: str, now_s: int) -> AlertPublic:
        return _public(self._board.post(alert.model_dump_json(), actor=actor, now_s=now_s))

    def end(self, alert_id: str, *, now_s: int) -> AlertPublic | None:
        """End the alert now (it stays on record); None if there is no such alert."""
        ended = self._board.end(alert_id, now_s=now_s)
        return _public(ended) if ended else None

    def get(self, alert_id: str) -> AlertPublic | None:
        notice = self._board.get(alert_id)
        return _public(notice) if notice else None

    def in_force(self, now_s: int) -> list[AlertPublic]:
        """Alerts not ended whose active periods have not all passed."""
        alerts = [_public(notice) for notice in self._board.not_ended()]
        return [
            a
            for a in alerts
            if not a.active_periods or any(p.end is None or p.end > now_s for p in a.active_periods)
        ]

    def close(self) -> None:
        self._board.close()


def _public(notice: Notice) -> AlertPublic:
    return AlertPublic(
        **json.loads(notice.body),
        id=notice.id,
        created_by=notice.created_by,
        created_at=notice.created_at,
        ended_at=notice.ended_at,
    )


def _text(target: gtfs_realtime_pb2.TranslatedString, uk: str, en: str | None) -> None:
    translation = target.translation.add()
    translation.text, translation.language = uk, "uk"
    if en:
        translation = target.translation.add()
        translation.text, translation.language = en, "en"


def add_operator_alerts(feed: gtfs_realtime_pb2.FeedMessage, alerts: Iterable[AlertPublic]) -> None:
    for alert in alerts:
        entity = feed.entity.add()
        entity.id = alert.id
        message = entity.alert
        for period in alert.active_periods:
            active = message.active_period.add()
            if period.start is not None:
                active.start = period.start
            if period.end is not None:
                active.end = period.end
        for informed in alert.informed_entities:
            selector = message.informed_entity.add()
            if informed.agency_id is not None:
                selector.agency_id = informed.agency_id
            if informed.route_id is not None:
                selector.route_id = informed.route_id
            if informed.route_type is not None:
                selector.route_type = informed.route_type
            if informed.direction_id is not None:
                selector.direction_id = informed.direction_id
            if informed.stop_id is not None:
                selector.stop_id = informed.stop_id
            if informed.trip_id is not None:
                selector.trip.trip_id = informed.trip_id
        message.cause = _ALERT.Cause.Value(alert.cause)  # type: ignore[assignment]
        message.effect = _ALERT.Effect.Value(alert.effect)  # type: ignore[assignment]
        message.severity_level = _ALERT.SeverityLevel.Value(alert.severity)  # type: ignore[assignment]
        _text(message.header_text, alert.header_text, alert.header_text_en)
        if alert.description_text:
            _text(message.description_text, alert.description_text, alert.description_text_en)
        if alert.url:
            _text(message.url, alert.url, None)


def add_silent_route_alerts(
    feed: gtfs_realtime_pb2.FeedMessage, timetable: Timetable, route_ids: Iterable[str]
) -> None:
    """An automatic alert per route that should be running but has no bus reporting."""
    for route_id in sorted(route_ids):
        route = timetable.routes[route_id]
        name = route.short_name or route.long_name
        entity = feed.entity.add()
        entity.id = f"auto-no-vehicles-{route_id}"
        message = entity.alert
        message.informed_entity.add().route_id = route_id
        message.cause = _ALERT.TECHNICAL_PROBLEM
        message.effect = _ALERT.UNKNOWN_EFFECT
        message.severity_level = _ALERT.INFO
        _text(
            message.header_text,
            f"Маршрут {name}: немає даних про рух у реальному часі",  # noqa: RUF001 - Ukrainian text
            f"Route {name}: no real-time vehicle data",
        )
