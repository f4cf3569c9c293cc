"""One type per (measurement, field): a reading that disagrees is its own agent's dead letter.

InfluxDB fixes a field's type in each shard with the first point written there: one agent's string
``pm25`` made every other agent's float ``pm25`` of that shard unwritable, dead-lettered as theirs
(issue 22.2). The collector knows each field's type, from the store at start (``SHOW FIELD KEYS``)
and then from what it accepts, and refuses the reading whose value disagrees before writing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from collector.store.base import FieldValue

log = logging.getLogger(__name__)

# Python's type of a JSON value -> InfluxDB's name of the field type.
KINDS: dict[type, str] = {float: "float", int: "integer", bool: "boolean", str: "string"}
_TYPES = {kind: python for python, kind in KINDS.items()}


class FieldTypes:
    """The type of each (measurement, field) known so far; the first one known stays.

    Used by the converter thread only. At most ``max_fields`` are remembered: past that a new
    field is accepted unchecked (the store then decides) and the fast path leaves it to the exact
    path, so an agent inventing names cannot grow the collector without bound.
    """

    def __init__(self, max_fields: int = 100_000) -> None:
        self.max_fields = max_fields
        self._types: dict[tuple[str, str], type] = {}
        self._full_logged = False

    def __len__(self) -> int:
        return len(self._types)

    def learn_stored(self, stored: Mapping[str, Mapping[str, str]]) -> None:
        """Take ``{measurement: {field: type}}`` as the store reports it (InfluxDB's type names)."""
        for measurement, fields in stored.items():
            for name, kind in fields.items():
                python = _TYPES.get(kind)
                if python is not None:
                    self._remember(measurement, name, python)

    def check(self, measurement: str, fields: Mapping[str, FieldValue]) -> str | None:
        """Why ``fields`` disagree with the known types (None if they agree); new fields are learned
        only from a reading that agrees."""
        types = self._types
        new = []
        for name, value in fields.items():
            known = types.get((measurement, name))
            if known is None:
                new.append((name, type(value)))
            elif type(value) is not known:
                return (
                    f"field {name!r} of {measurement!r} is {KINDS[type(value)]} here, but the measurement "
                    f"holds it as {KINDS[known]} (InfluxDB keeps one type per field: this value would make "
                    f"other readings of it unwritable); send a {KINDS[known]} or name the field otherwise"
                )
        for name, python in new:
            self._remember(measurement, name, python)
        return None

    def expected(self, measurement: str, names: tuple[str, ...]) -> tuple[type, ...] | None:
        """The type of each of ``names``, or None if one is not known yet."""
        types = self._types
        try:
            return tuple(types[measurement, name] for name in names)
        except KeyError:
            return None

    def _remember(self, measurement: str, name: str, python: type) -> None:
        if len(self._types) >= self.max_fields:
            if not self._full_logged:
                log.warning(
                    "field types: %d fields known, no more remembered; new fields are left to the store",
                    self.max_fields,
                )
                self._full_logged = True
            return
        self._types.setdefault((measurement, name), python)


__all__ = ["KINDS", "FieldTypes"]
