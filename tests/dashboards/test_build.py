"""The dashboards' JSON: committed files equal a fresh build, ids, uids, datasources, schema."""

from __future__ import annotations

import re

import pytest

from dashboards import DATASOURCE_UID, GENERATED, build_all, text
from tests.dashboards.grafana import panels, selected_names, targets, variables

BOARDS = build_all()
# Dashboard JSON schema versions of Grafana 10.x to 12.x, which import each other's files.
SUPPORTED_SCHEMA_VERSIONS = range(36, 42)
IDS = [pytest.param(board, id=uid) for uid, board in BOARDS.items()]


def test_committed_files_equal_a_fresh_build() -> None:
    committed = {path.stem: path.read_text(encoding="utf-8") for path in GENERATED.glob("*.json")}
    fresh = {uid: text(board) for uid, board in BOARDS.items()}
    assert committed.keys() == fresh.keys(), "run `python -m dashboards build` and commit the result"
    stale = [uid for uid in fresh if committed[uid] != fresh[uid]]
    assert not stale, f"{stale} differ from the code: run `python -m dashboards build` and commit the result"


def test_the_eight_dashboards_have_stable_unique_uids() -> None:
    assert set(BOARDS) == {
        "citygw-air-quality",
        "citygw-electricity",
        "citygw-water",
        "citygw-waste",
        "citygw-parking",
        "citygw-street-lighting",
        "citygw-transport",
        "citygw-system-health",
    }
    for uid in BOARDS:
        assert re.fullmatch(r"[a-z0-9-]{1,40}", uid), uid  # Grafana's limit is 40 characters


@pytest.mark.parametrize("board", IDS)
def test_dashboard_json(board: dict[str, object]) -> None:
    assert board["schemaVersion"] in SUPPORTED_SCHEMA_VERSIONS
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) and i > 0 for i in ids)
    for panel in panels(board):
        position = panel["gridPos"]
        assert position["x"] >= 0, panel["title"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        assert panel["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}, panel["title"]
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    for panel, target in targets(board):
        assert target["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}, panel["title"]
        assert target["rawQuery"] is True
        assert target["resultFormat"] in ("time_series", "table")
        assert selected_names(target["query"]), panel["title"]
    for variable in variables(board):
        if variable["type"] == "custom":  # a choice (a threshold): its options and the one chosen at start
            assert variable["current"]["value"] in variable["query"].split(","), variable["name"]
            continue
        assert variable["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}
        assert variable["query"].startswith("SHOW TAG VALUES FROM ")


def test_map_panels_select_lat_and_lon() -> None:
    maps = [(p, t) for board in BOARDS.values() for p, t in targets(board) if p["type"] == "geomap"]
    assert maps
    for panel, target in maps:
        assert target["resultFormat"] == "table"
        assert {"lat", "lon"} <= set(selected_names(target["query"])), panel["title"]


def test_every_condition_says_whether_it_means_a_tag_or_a_field() -> None:
    """Issue 22.1: ``"device" = 'x'`` compares a field named device when a measurement has one."""
    condition = re.compile(r'"([a-z_0-9]+)"(?!::)\s*(=~|!~|!=|<>|<=|>=|=|<|>)')
    queries = [target["query"] for board in BOARDS.values() for _, target in targets(board)]
    queries += [variable["query"] for board in BOARDS.values() for variable in variables(board)]
    assert len(queries) > 50
    assert sum("::tag" in query for query in queries) > 30
    unqualified = {(name, op) for query in queries for name, op in condition.findall(str(query))}
    assert not unqualified, unqualified
