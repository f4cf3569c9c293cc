"""What Grafana does to a dashboard's InfluxQL before sending it: macros and template variables.

One place for it, used by the previews and the tests that run every panel on InfluxDB: Grafana's
macros (``$timeFilter``, ``$__timeFilter``, ``$__interval``, ``$interval``, ``$__interval_ms``) and
template variables, formatted the way Grafana's InfluxDB datasource formats a multi-value variable
inside a regex (``(a|b)``, regex characters escaped).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


class UnknownVariable(ValueError):
    """A ``$name`` in a query that is neither a Grafana macro nor a variable of the dashboard."""


@dataclass(frozen=True)
class TimeRange:
    start_ms: int
    end_ms: int
    interval_ms: int


def regex_value(values: Sequence[str]) -> str:
    """A variable's value inside ``/^...$/``: Grafana escapes regex characters, several become (a|b)."""
    escaped = [_REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def render(query: str, variables: Mapping[str, Sequence[str]], window: TimeRange | None = None) -> str:
    """``query`` as Grafana sends it; a ``$name`` that is neither a macro nor a variable is an error."""
    if window is not None:
        time_filter = f"time >= {window.start_ms}ms and time <= {window.end_ms}ms"
        macros = {
            "$__timeFilter": time_filter,
            "$timeFilter": time_filter,
            "$__interval_ms": str(window.interval_ms),
            "$__interval": f"{window.interval_ms}ms",
            "$interval": f"{window.interval_ms}ms",
        }
        for name in sorted(macros, key=len, reverse=True):
            query = query.replace(name, macros[name])

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise UnknownVariable(f"{match.group(0)} in {query!r} is neither a Grafana macro nor a variable")
        return regex_value(variables[name])

    return _VARIABLE.sub(substitute, query)


def panels(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(board.get("panels", []))


def targets(board: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) of every query of a dashboard."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel, target


def variables(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(board.get("templating", {}).get("list", []))


def fixed_value(variable: Mapping[str, Any]) -> list[str] | None:
    """The value a custom variable (a list of choices, no query) has when the dashboard opens; None for a
    variable whose values a query gives."""
    if variable.get("type") != "custom":
        return None
    return [str(variable["current"]["value"])]
