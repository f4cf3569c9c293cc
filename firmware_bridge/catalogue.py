"""Which stored fields have which role: a catalogue built from the shipped and a site's own profiles.

Readings carry a measurement and field names, not their profile. The catalogue maps each
(measurement, field) that some profile gives a role to that role, its unit, channel and flags,
so that the API and the dashboards select "the flow rate" or "each lamp's status" by role, never by
a model's field name. Two profiles writing one field of one measurement must mean the same by it
(InfluxDB holds one field, whoever wrote it): a catalogue that finds otherwise refuses to load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from firmware_bridge.profile import (
    PROFILES_DIR,
    DlmsProfile,
    LorawanProfile,
    MbusProfile,
    NmeaProfile,
    OpcUaProfile,
    Profile,
    ProfileError,
    RegisterSpec,
    load_any_profile,
)
from firmware_bridge.roles import LAMP_FAULTS, ROLES, LampBit, Role, canonical, lamp_faults


@dataclass(frozen=True)
class RoleField:
    """One stored field with a role: where it is (measurement, field) and what it means."""

    measurement: str
    field: str
    role: Role
    unit: str | None
    channel: str | None = None
    flags: tuple[tuple[int, LampBit], ...] = ()
    full_scale: float | None = None

    @property
    def native(self) -> bool:
        """True when the field is in its role's canonical unit."""
        return self.unit == ROLES[self.role].unit

    def value(self, raw: object) -> float | None:
        """A stored value in the role's canonical unit; None when it is no number."""
        if isinstance(raw, bool):
            return float(raw)
        if not isinstance(raw, int | float):
            return None
        return canonical(self.role, self.unit, float(raw))

    def bits(self, meaning: LampBit) -> int:
        """The mask of the bits that mean ``meaning`` (0: none)."""
        return sum(1 << bit for bit, what in self.flags if what == meaning)

    def faults(self, status: int) -> list[str]:
        """The failures a status word reports, in words ("lamp", "ballast")."""
        return lamp_faults(dict(self.flags), status)

    @property
    def fault_mask(self) -> int:
        return sum(1 << bit for bit, what in self.flags if what in LAMP_FAULTS)


@dataclass(frozen=True)
class RoleCatalogue:
    """Every field some profile gives a role, by (measurement, field), and the profiles' field sets."""

    fields: tuple[RoleField, ...]
    preferred: frozenset[tuple[str, str]] = frozenset()  # (measurement, field) some profile reads a role from

    def of(self, role: Role, measurement: str | None = None) -> list[RoleField]:
        """The fields with ``role`` (in ``measurement``), in catalogue order."""
        return [f for f in self.fields if f.role == role and measurement in (None, f.measurement)]

    def read(self, role: Role, measurement: str, channel: str | None = None) -> list[RoleField]:
        """The fields of ``role`` and ``channel`` in ``measurement`` that a profile reads the role from:
        of two on one channel (a gas in ppb and in µg/m³) only the one in the canonical unit.
        For queries that cannot choose per point (InfluxQL); a device has one of them."""
        return [
            f
            for f in self.of(role, measurement)
            if f.channel == channel and (f.measurement, f.field) in self.preferred
        ]

    def channels(self, role: Role, measurement: str) -> list[str]:
        """The channels ``role`` has in ``measurement`` (l1, l2, lamp0...), sorted."""
        return sorted({f.channel for f in self.of(role, measurement) if f.channel is not None})

    def measurements(self, *roles: Role) -> list[str]:
        """The measurements holding a field of any of ``roles``, sorted."""
        return sorted({f.measurement for f in self.fields if f.role in roles})

    def meaning(self, measurement: str, field: str) -> RoleField | None:
        return next((f for f in self.fields if (f.measurement, f.field) == (measurement, field)), None)

    def chosen(
        self, role: Role, measurement: str, fields: Mapping[str, object]
    ) -> dict[str | None, tuple[RoleField, float]]:
        """Per channel, the field of ``role`` a point carries and its value in the canonical unit.

        Where a point has two fields of one role and channel (a gas in ppb and in µg/m³), the one
        already in the canonical unit wins, then the first in catalogue order.
        """
        found: dict[str | None, tuple[RoleField, float]] = {}
        for spec in sorted(self.of(role, measurement), key=lambda f: not f.native):
            if spec.channel in found or spec.field not in fields:
                continue
            value = spec.value(fields[spec.field])
            if value is not None:
                found[spec.channel] = (spec, value)
        return found

    def value(self, role: Role, measurement: str, fields: Mapping[str, object]) -> float | None:
        """The point's value of ``role`` without a channel (a meter's total power), canonical unit."""
        chosen = self.chosen(role, measurement, fields).get(None)
        return None if chosen is None else chosen[1]


def _role_fields(
    profile: Profile | MbusProfile | OpcUaProfile | LorawanProfile | DlmsProfile,
) -> Iterable[RoleField]:
    for spec in profile.field_specs:
        if spec.role is not None:
            registers = spec if isinstance(spec, RegisterSpec) else None
            yield RoleField(
                profile.measurement,
                spec.field,
                spec.role,
                spec.unit,
                spec.channel,
                tuple(sorted((registers.flags or {}).items())) if registers else (),
                registers.max if registers else None,
            )


def profile_paths(extra_dirs: Sequence[Path] = ()) -> list[Path]:
    """The shipped profiles, then each extra folder's ``*.yaml``, each folder sorted."""
    paths = sorted(PROFILES_DIR.glob("*.yaml"))
    for folder in extra_dirs:
        if not folder.is_dir():
            raise ProfileError(f"{folder}: no such folder of profiles; check the profile folders setting")
        paths += sorted(folder.glob("*.yaml"))
    return paths


def build(paths: Iterable[Path]) -> RoleCatalogue:
    """The catalogue of the profiles at ``paths``; ProfileError when two give one field different meanings."""
    known: dict[tuple[str, str], tuple[RoleField, Path]] = {}
    preferred: set[tuple[str, str]] = set()
    for path in paths:
        profile = load_any_profile(path)
        if isinstance(profile, NmeaProfile):
            continue  # a GPS fix's fields are the wire contract's lat/lon
        fields = list(_role_fields(profile))
        chosen: dict[tuple[Role, str | None], RoleField] = {}
        for spec in sorted(fields, key=lambda f: not f.native):
            chosen.setdefault((spec.role, spec.channel), spec)
        preferred.update((f.measurement, f.field) for f in chosen.values())
        for spec in fields:
            key = (spec.measurement, spec.field)
            before = known.get(key)
            if before is None:
                known[key] = (spec, path)
            elif before[0] != spec:
                raise ProfileError(
                    f"{path}: field {spec.field} of measurement {spec.measurement} is {_describe(spec)} here "
                    f"but {_describe(before[0])} in {before[1]}: one stored field has one meaning; rename "
                    "the field in one of the profiles"
                )
    return RoleCatalogue(tuple(spec for spec, _path in known.values()), frozenset(preferred))


def _describe(spec: RoleField) -> str:
    parts = [f"role {spec.role.value}", f"unit {spec.unit or 'none'}"]
    if spec.channel:
        parts.append(f"channel {spec.channel}")
    if spec.flags:
        parts.append("flags " + ", ".join(f"{bit}: {what.value}" for bit, what in spec.flags))
    if spec.full_scale is not None:
        parts.append(f"max {spec.full_scale:g}")
    return " ".join(parts)


def catalogue(extra_dirs: tuple[Path, ...] = ()) -> RoleCatalogue:
    """The catalogue of the shipped profiles and those in ``extra_dirs``; built again only when a
    profile file was added, removed or changed."""
    return _built(tuple((path, path.stat().st_mtime_ns) for path in profile_paths(extra_dirs)))


@cache
def _built(files: tuple[tuple[Path, int], ...]) -> RoleCatalogue:
    return build(path for path, _changed in files)
