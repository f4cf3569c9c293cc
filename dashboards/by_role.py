"""InfluxQL sources that read fields by role: each model's field renamed to the role and converted.

A panel never names a model's field: ``sources`` makes one subquery per stored field some profile
reads a role from (``RoleCatalogue.read``), selecting it under the panel's name in the role's
canonical unit (a kW field times 1000.0 for watts), tags kept (``GROUP BY *``). The outer query reads
the union of them, so a second meter or lamp controller with other field names fills the same
panel. A device has one field of each role and channel, so the union never counts it twice.
"""

from __future__ import annotations

from collections.abc import Mapping

from firmware_bridge.catalogue import RoleCatalogue, RoleField
from firmware_bridge.roles import ROLES, Role

Wanted = Role | tuple[Role, str | None] | str
"""A role (its channel-less fields), a role and channel, or a field the wire contract names (lat)."""


# Roles stored as booleans: selected as they are, InfluxQL does no arithmetic on a boolean.
BOOLEAN_ROLES = frozenset({Role.OCCUPIED})


def converted(field: RoleField) -> str:
    """The field in its role's canonical unit, as an InfluxQL expression; always a float: InfluxDB 1.6
    answers null for an integer column read with another from a union of subqueries. A boolean role's
    field as it is."""
    if field.role in BOOLEAN_ROLES:
        return f'"{field.field}"'
    return f'"{field.field}" * {float(ROLES[field.role].units[field.unit])!r}'


def sources(roles: RoleCatalogue, measurement: str, wanted: Mapping[str, Wanted], where: str) -> str:
    """FROM sources for ``wanted`` (name -> what): subqueries of ``measurement`` under ``where``.

    ValueError when no profile gives the measurement any of them: the panel would stay empty.
    """
    parts = []
    for name, what in wanted.items():
        if isinstance(what, str) and not isinstance(what, Role):
            selections = [f'"{what}"']
        else:
            role, channel = what if isinstance(what, tuple) else (what, None)
            selections = [converted(f) for f in roles.read(role, measurement, channel)]
        parts += [
            f'(SELECT {selection} AS "{name}" FROM "{measurement}" WHERE {where} GROUP BY *)'
            for selection in selections
        ]
    if not parts:
        raise ValueError(f"no profile gives {measurement} a field of {', '.join(map(str, wanted.values()))}")
    return ", ".join(parts)
