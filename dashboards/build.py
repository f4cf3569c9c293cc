"""Every CityGW dashboard as Grafana JSON, and the files under dashboards/generated/."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import air_quality, electricity, lighting, parking, system_health, transport, waste, water
from firmware_bridge.catalogue import RoleCatalogue, catalogue

GENERATED = Path(__file__).parent / "generated"
GRID_WIDTH = 24
# Each board from the catalogue of fields by role (the shipped profiles, and a site's own).
DASHBOARDS: tuple[Callable[[RoleCatalogue], Dashboard], ...] = (
    air_quality.dashboard,
    electricity.dashboard,
    water.dashboard,
    waste.dashboard,
    parking.dashboard,
    lighting.dashboard,
    lambda _roles: transport.dashboard(),
    system_health.dashboard,
)


def model(board: Dashboard) -> dict[str, Any]:
    """The dashboard's JSON model, panels numbered 1, 2, ... and laid out left to right, top to bottom.

    The SDK's own flow does not wrap a panel that does not fit the rest of a row, so the
    positions are set here.
    """
    built: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    x = y = row_height = 0
    for number, panel in enumerate(built.get("panels", []), 1):
        panel["id"] = number
        place = panel["gridPos"]
        if x + place["w"] > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        place["x"], place["y"] = x, y
        x += place["w"]
        row_height = max(row_height, place["h"])
    return built


def build_all(roles: RoleCatalogue | None = None) -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON model by uid, reading the fields ``roles`` (default: the shipped
    profiles') gives each role."""
    models = [model(make(roles or catalogue())) for make in DASHBOARDS]
    return {board["uid"]: board for board in models}


def text(board: dict[str, Any]) -> str:
    """The file content of a dashboard: stable key order, so a rebuild changes nothing."""
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(folder: Path = GENERATED, roles: RoleCatalogue | None = None) -> list[Path]:
    """Write ``<uid>.json`` per dashboard into ``folder`` and remove dashboards no longer built."""
    folder.mkdir(parents=True, exist_ok=True)
    boards = build_all(roles)
    written = []
    for uid, board in boards.items():
        path = folder / f"{uid}.json"
        path.write_text(text(board), encoding="utf-8")
        written.append(path)
    for stale in set(folder.glob("*.json")) - set(written):
        stale.unlink()
    return written
