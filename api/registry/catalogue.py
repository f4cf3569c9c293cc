"""What the registry knows about devices that readings do not carry: their profile and where they stand."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.registry.models import Agent, Device
from firmware_bridge.overlay import OverlayError, ProfileOverlay, apply_overlay, overlaid
from firmware_bridge.profile import (
    Profile,
    ProfileError,
    Verified,
    load_any_profile,
    load_profile,
)


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    device: str
    agent: str
    profile: str | None
    lat: float | None
    lon: float | None


def registered_devices(session: Session) -> dict[str, RegisteredDevice]:
    """Active devices by id: profile name and position (the device's own, else its agent's)."""
    query = select(Device, Agent).join(Agent, Device.agent_id == Agent.id).where(Device.retired_at.is_(None))
    found: dict[str, RegisteredDevice] = {}
    for device, agent in session.execute(query):
        location = device.spec.get("location") or {}
        lat, lon = location.get("lat", agent.lat), location.get("lon", agent.lon)
        profile = device.spec.get("profile")
        found[device.device_id] = RegisteredDevice(
            device.device_id,
            agent.id,
            profile if isinstance(profile, str) else None,
            lat if isinstance(lat, int | float) else None,
            lon if isinstance(lon, int | float) else None,
        )
    return found


@dataclass(frozen=True, slots=True)
class ProfileProvenance:
    verified: Verified
    source: str


@cache
def profile_provenance(profile: str) -> ProfileProvenance | None:
    """Whether a shipped profile's map was checked against its vendor's document (None: no such profile)."""
    try:
        loaded = load_any_profile(profile)
    except ProfileError:
        return None
    return ProfileProvenance(loaded.verified, loaded.source)


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """A Modbus device's profile as it runs: its overlay applied, and which values that overlay changes."""

    profile: Profile
    overlaid: dict[str, dict[str, object]]


def device_profile(spec: dict[str, object]) -> DeviceProfile | None:
    """The effective profile of a stored device spec (None: no Modbus profile, or it no longer applies)."""
    name = spec.get("profile")
    if not isinstance(name, str):
        return None
    try:
        profile = load_profile(name)
        overlay = ProfileOverlay.model_validate(spec["overlay"]) if spec.get("overlay") else None
        return DeviceProfile(apply_overlay(profile, overlay), overlaid(profile, overlay))
    except (ProfileError, OverlayError, ValueError):  # a pydantic ValidationError is a ValueError
        return None
