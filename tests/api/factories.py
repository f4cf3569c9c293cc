"""Test objects for the API: points as the collector stores them, and a clock tests can move."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import pytest
from sqlalchemy.orm import Session

from api.security import Role, format_api_key, hash_secret
from collector.store.base import FieldValue, Point

NOW_MS = 1_800_000_000_000  # 2027-01-15T08:00:00.000Z
NOW_ISO = "2027-01-15T08:00:00.000Z"

on_every_registry = pytest.mark.parametrize(
    "registry", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)], indirect=True
)
"""Run the test once on a SQLite registry and once on a fresh PostgreSQL database (the contract suite)."""


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def reading(
    measurement: str,
    device: str,
    ts_ms: int,
    fields: dict[str, FieldValue],
    *,
    agent: str = "edge-a",
    **tags: str,
) -> Point:
    """A stored point: the reading's tags plus the identity tags the collector adds."""
    return Point(measurement, {**tags, "device": device, "agent": agent}, ts_ms, fields)


def bus_fix(
    vehicle: str,
    age_s: float,
    *,
    lat: float,
    lon: float,
    speed_mps: float = 0.0,
    course_deg: float | None = None,
    now_ms: int = NOW_MS,
    **tags: str,
) -> Point:
    """A ``vehicle_position`` point of the GPS unit on ``vehicle``, ``age_s`` seconds before now."""
    fields: dict[str, FieldValue] = {
        "lat": lat,
        "lon": lon,
        "speed_mps": speed_mps,
        "fix_quality": 1,
        "satellites": 9,
        "hdop": 0.9,
    }
    if course_deg is not None:
        fields["course_deg"] = course_deg
    return reading(
        "vehicle_position",
        f"gps-{vehicle}",
        now_ms - round(age_s * 1000),
        fields,
        agent="depot-1",
        vehicle=vehicle,
        **tags,
    )


MINUTE_MS = 60_000


def city() -> list[Point]:
    """A small city: two air-quality stations, a meter, a ticket validator and three buses."""
    return [
        reading(
            "air_quality",
            "aq-harbour",
            NOW_MS - 120 * MINUTE_MS,
            {"pm25": 99.0, "no2": 99, "ok": True},
            site="harbour",
            district="north",
        ),
        reading(
            "air_quality",
            "aq-harbour",
            NOW_MS - 50 * MINUTE_MS,
            {"pm25": 10.0, "no2": 20, "ok": True},
            site="harbour",
            district="north",
        ),
        reading(
            "air_quality",
            "aq-harbour",
            NOW_MS - 20 * MINUTE_MS,
            {"pm25": 14.0, "no2": 24, "ok": True},
            site="harbour",
            district="north",
        ),
        reading(
            "air_quality",
            "aq-harbour",
            NOW_MS - 10 * MINUTE_MS,
            {"pm25": 12.5, "no2": 30, "ok": False},
            site="harbour",
            district="north",
        ),
        reading(
            "air_quality", "aq-park", NOW_MS - 5 * MINUTE_MS, {"pm25": 3.0, "no2": 5, "ok": True}, site="park"
        ),
        reading(
            "electricity",
            "meter-7",
            NOW_MS - 30_000,
            {"kwh": 1234.5, "voltage": 231, "status": "normal"},
            agent="edge-b",
            site="depot",
        ),
        reading("validator", "stop/12", NOW_MS - 60_000, {"taps": 17}, agent="edge-b"),
        bus_fix("1204", 5, lat=52.520008, lon=13.404954, speed_mps=8.5, course_deg=271.5, route="M41"),
        bus_fix("0877", 40, lat=52.516275, lon=13.377704, vehicle_label="Line 100 #877"),
        bus_fix("0999", 120, lat=52.5, lon=13.4, speed_mps=3.0, course_deg=90.0, route="M41"),
    ]


ENGINEER_SITE = "lviv-depot"
_HASHED: dict[str, tuple[str, str]] = {}


def insert_key(session: Session, role: Role, *, name: str | None = None, sites: Sequence[str] = ()) -> str:
    """Add an API key row and return its bearer token; its hash is computed once per session."""
    from api.registry.models import ApiKey

    if role.value not in _HASHED:
        secret = secrets.token_urlsafe(32)
        _HASHED[role.value] = (secret, hash_secret(secret))
    secret, secret_hash = _HASHED[role.value]
    key_id = secrets.token_hex(6)
    session.add(
        ApiKey(
            id=key_id,
            name=name or f"test {role.value}",
            role=role.value,
            sites=list(sites),
            secret_hash=secret_hash,
            created_at=NOW_MS - 86_400_000,
            created_by="tests",
            expires_at=None,
            revoked_at=None,
        )
    )
    return format_api_key(key_id, secret)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register_device(
    session: Session,
    device: str,
    profile: str,
    *,
    agent: str = "edge-a",
    site: str = ENGINEER_SITE,
    lat: float = 49.8397,
    lon: float = 24.0297,
) -> None:
    """An agent (added once) and an active device of ``profile`` on it, standing at (lat, lon)."""
    from api.registry.models import Agent, Device

    if session.get(Agent, agent) is None:
        session.add(Agent(id=agent, site=site, lat=lat, lon=lon, lines=[], created_at=0))
    spec = {"id": device, "line": "rs485-1", "profile": profile, "unit": 1, "poll_s": 60}
    spec["location"] = {"lat": lat, "lon": lon}
    session.add(Device(agent_id=agent, device_id=device, spec=spec, created_at=0, updated_at=0))
