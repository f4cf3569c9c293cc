"""What Grafana does to a dashboard's InfluxQL before sending it, done here so tests can run it.

One place for it: Grafana's macros (``$timeFilter``, ``$__timeFilter``, ``$__interval``,
``$interval``, ``$__interval_ms``) and template variables, formatted the way Grafana's InfluxDB
datasource formats a multi-value variable inside a regex (``(a|b)``, regex characters escaped).
Plus the small InfluxQL reading the checks need: the outer SELECT's names and GROUP BY tags.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


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
            raise AssertionError(f"{match.group(0)} in {query!r} is neither a Grafana macro nor a variable")
        return regex_value(variables[name])

    return _VARIABLE.sub(substitute, query)


def _depth_zero(text: str) -> Iterator[tuple[int, str]]:
    """(index, character) of the characters outside parentheses and quotes."""
    depth, quote = 0, ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'/":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0:
            yield i, char


def _outer(text: str) -> str:
    """``text`` with everything inside parentheses and quotes blanked out, same length."""
    kept = dict(_depth_zero(text))
    return "".join(kept.get(i, " ") for i in range(len(text)))


def selected_names(query: str) -> list[str]:
    """The names of the outer SELECT's values; each must be given with ``AS "name"``."""
    outer = _outer(query)
    start, end = outer.index("SELECT ") + len("SELECT "), outer.index(" FROM ")
    selection, blanked = query[start:end], outer[start:end]
    cuts = [i for i, char in enumerate(blanked) if char == ","]
    parts = [selection[a + 1 : b] for a, b in zip([-1, *cuts], [*cuts, len(selection)], strict=True)]
    names = []
    for part in parts:
        match = re.search(r'\sAS "(\w+)"\s*$', part)
        assert match, f"{part.strip()!r} in {query!r} has no AS name"
        names.append(match.group(1))
    return names


def group_by_tags(query: str) -> list[str]:
    """The tags of the outer GROUP BY (time(...) left out)."""
    outer = _outer(query)
    at = outer.rfind("GROUP BY ")
    if at < 0 or at < outer.rfind(" FROM "):
        return []
    clause = outer[at + len("GROUP BY ") :]
    clause = re.split(r"\s(?:fill|ORDER|LIMIT|SLIMIT)\b", clause)[0]
    original = query[at + len("GROUP BY ") : at + len("GROUP BY ") + len(clause)]
    return re.findall(r'"(\w+)"', re.sub(r"time\([^)]*\)", "", original))


def panels(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(board.get("panels", []))


def targets(board: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) of every query of a dashboard."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel, target


def variables(board: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(board.get("templating", {}).get("list", []))
