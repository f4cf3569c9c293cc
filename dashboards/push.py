"""``citygw dashboards push [--dry-run]``: put the built dashboards into a running Grafana, by uid.

Idempotent: a dashboard Grafana already has with the same content is left alone; the others
are created or overwritten (their uid is stable, so Grafana keeps one dashboard per uid and
its version history). ``--dry-run`` prints what would change as a unified diff.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError

from citygw.contract.errors import ConfigError
from collector.store import redact
from dashboards.build import build_all, text
from firmware_bridge.catalogue import catalogue

URL_ENV = "CITYGW_GRAFANA_URL"
TOKEN_ENV = "CITYGW_GRAFANA_TOKEN"
# Grafana sets these itself on every save; they are not part of what we build.
_SERVER_KEYS = ("id", "version")


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Change:
    uid: str
    title: str
    action: Action
    diff: str


def grafana_from_environment() -> GrafanaApi:
    """A client for $CITYGW_GRAFANA_URL with the service account token in $CITYGW_GRAFANA_TOKEN."""
    url, token = os.environ.get(URL_ENV, ""), os.environ.get(TOKEN_ENV, "")
    missing = [name for name, value in ((URL_ENV, url), (TOKEN_ENV, token)) if not value]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not set: export the Grafana URL (e.g. https://grafana.city.example) "
            "and a service account token with the Editor role"
        )
    if not (url.startswith(("http://", "https://")) and urlsplit(url).hostname):
        raise ConfigError(
            f"{URL_ENV}={redact(url)!r} is not an http(s) URL: "
            "give the scheme and host, e.g. https://grafana.city.example"
        )
    api: GrafanaApi = GrafanaApi.from_url(url, credential=token)
    return api


def _comparable(board: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in board.items() if key not in _SERVER_KEYS}


def _current(api: GrafanaApi, uid: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = api.dashboard.get_dashboard(uid)  # type: ignore[no-untyped-call]
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise
    board: dict[str, Any] = found["dashboard"]
    return board


def plan(api: GrafanaApi, boards: Mapping[str, dict[str, Any]]) -> list[Change]:
    """What pushing ``boards`` would do, dashboard by dashboard."""
    changes = []
    for uid, board in boards.items():
        current = _current(api, uid)
        wanted = text(_comparable(board)).splitlines(keepends=True)
        if current is None:
            diff = "".join(difflib.unified_diff([], wanted, "/dev/null", f"{uid} (built)"))
            changes.append(Change(uid, board["title"], Action.CREATE, diff))
            continue
        have = text(_comparable(current)).splitlines(keepends=True)
        diff = "".join(difflib.unified_diff(have, wanted, f"{uid} (in Grafana)", f"{uid} (built)"))
        changes.append(Change(uid, board["title"], Action.UPDATE if diff else Action.UNCHANGED, diff))
    return changes


def push(api: GrafanaApi, boards: Mapping[str, dict[str, Any]], *, dry_run: bool = False) -> list[Change]:
    """Create or overwrite the dashboards that differ from what Grafana has; nothing when ``dry_run``."""
    changes = plan(api, boards)
    if not dry_run:
        for change in changes:
            if change.action is not Action.UNCHANGED:
                payload = {
                    "dashboard": _comparable(boards[change.uid]),
                    "overwrite": True,
                    "message": "citygw dashboards push",
                }
                api.dashboard.update_dashboard(payload)  # type: ignore[no-untyped-call]
    return changes


def main(*, dry_run: bool, profiles: tuple[Path, ...] = ()) -> int:
    """The CLI command: prints one line per dashboard (and the diffs with ``--dry-run``); ``profiles``:
    the folders of a site's own device profiles, whose fields' roles the panels read too."""
    changes = push(grafana_from_environment(), build_all(catalogue(profiles)), dry_run=dry_run)
    for change in changes:
        verb = {Action.CREATE: "create", Action.UPDATE: "update", Action.UNCHANGED: "unchanged"}[
            change.action
        ]
        print(f"{'would ' if dry_run and change.action is not Action.UNCHANGED else ''}{verb}: "
              f"{change.uid} ({change.title})")  # fmt: skip
        if dry_run and change.diff:
            print(change.diff, end="")
    return 0
