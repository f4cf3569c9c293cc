"""The small InfluxQL reading the dashboards' checks need: the outer SELECT's names and GROUP BY tags.

What Grafana does to a query before sending it (macros, variables) is ``dashboards.macros``,
re-exported here for the tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from dashboards.macros import TimeRange, UnknownVariable, panels, regex_value, render, targets, variables

__all__ = [
    "TimeRange",
    "UnknownVariable",
    "group_by_tags",
    "panels",
    "regex_value",
    "render",
    "selected_names",
    "targets",
    "variables",
]


def _depth_zero(text: str) -> Iterator[tuple[int, str]]:
    """(index, character) of the characters outside parentheses, quotes and regexes (``=~ /.../``);
    a ``/`` elsewhere divides."""
    depth, quote = 0, ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'" or (char == "/" and text[:i].rstrip().endswith("~")):
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
