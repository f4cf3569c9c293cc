"""Previews of every dashboard drawn from the seeded city on real InfluxDB: a PNG each, no empty panel."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dashboards import build_all
from dashboards.macros import TimeRange
from dashboards.preview import preview_all, render_board

pytestmark = pytest.mark.integration
PNG = b"\x89PNG\r\n\x1a\n"


def test_every_dashboard_is_drawn_with_data_in_every_panel(
    influxql: Callable[[str], list[dict[str, Any]]], city: TimeRange, tmp_path: Path
) -> None:
    boards = build_all()
    previews = preview_all(boards, influxql, city, tmp_path)
    assert [p.path.name for p in previews] == [f"{uid}.png" for uid in boards]
    for preview in previews:
        assert preview.path.read_bytes()[:8] == PNG
        assert preview.path.stat().st_size > 20_000, preview.path  # drawn, not a blank page
        panels = [p["title"] for p in boards[preview.uid]["panels"]]
        assert sorted(preview.rows_by_panel) == sorted(panels)
        assert preview.empty_panels == [], preview.uid


def test_a_panel_without_data_is_reported(
    influxql: Callable[[str], list[dict[str, Any]]], city: TimeRange, tmp_path: Path
) -> None:
    board = build_all()["citygw-water"]
    long_ago = TimeRange(0, 3_600_000, 60_000)  # 1970: nothing there
    preview = render_board(board, influxql, long_ago, tmp_path / "water.png")
    assert set(preview.empty_panels) == {p["title"] for p in board["panels"]}


def test_the_preview_command_refuses_a_store_that_speaks_no_influxql(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "citygw.cli",
            "dashboards",
            "preview",
            "--store",
            f"sqlite:///{tmp_path}/x.sqlite",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip().splitlines()[-1].endswith("the dashboards' queries are InfluxQL: use influxdb://")
    )
    assert "Traceback" not in done.stderr
