"""The panel shapes every CityGW dashboard uses, so each dashboard module only says what to show."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import geomap, stat, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DynamicConfigValue,
    GridPos,
    Threshold,
    ThresholdsMode,
)

from dashboards.influxql import DATASOURCE, InfluxQL

# Grafana's named colours; thresholds read "from this value on, this colour".
OK, WARN, BAD = "green", "orange", "red"
Steps = Sequence[tuple[float | None, str]]


def thresholds(steps: Steps) -> dashboard_builders.ThresholdsConfig:
    """Absolute colour steps; the first step's value is None (from minus infinity)."""
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def city_dashboard(
    uid: str,
    title: str,
    description: str,
    variables: Iterable[dashboard_builders.QueryVariable | dashboard_builders.CustomVariable] = (),
) -> dashboard_builders.Dashboard:
    """A dashboard with CityGW's defaults: last 24 h, refresh every minute, shared crosshair."""
    board = (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["citygw"])
        .time("now-24h", "now")
        .refresh("1m")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .readonly()
    )
    for variable in variables:
        board = board.with_variable(variable)
    return board


def _place(width: int, height: int) -> GridPos:
    # x = y = 0 lets the dashboard builder flow the panel after the previous one.
    return GridPos(h=height, w=width, x=0, y=0)


def time_series(
    title: str,
    queries: Sequence[InfluxQL],
    *,
    unit: str,
    description: str = "",
    steps: Steps | None = None,
    bars: bool = False,
    stacked: bool = False,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(queries))
        .unit(unit)
        .grid_pos(_place(width, height))
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if steps is not None:
        panel = panel.thresholds(thresholds(steps)).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE_AND_AREA)
        )
    return panel


def big_number(
    title: str,
    query: InfluxQL,
    *,
    unit: str,
    description: str = "",
    steps: Steps = ((None, OK),),
    width: int = 6,
    height: int = 5,
) -> stat.Panel:
    """One number (the last value of the query) coloured by ``steps``."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query)
        .unit(unit)
        .thresholds(thresholds(steps))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .grid_pos(_place(width, height))
    )


def rows(
    title: str,
    query: InfluxQL,
    *,
    description: str = "",
    units: Mapping[str, str] | None = None,
    column_steps: Mapping[str, Steps] | None = None,
    width: int = 24,
    height: int = 8,
) -> table.Panel:
    """A table of the query's rows; columns named in ``column_steps`` get coloured backgrounds."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query.table())
        .grid_pos(_place(width, height))
        .filterable(True)
    )
    properties: dict[str, list[DynamicConfigValue]] = {}
    for column, unit in (units or {}).items():
        properties.setdefault(column, []).append(DynamicConfigValue(id_val="unit", value=unit))
    for column, steps in (column_steps or {}).items():
        properties.setdefault(column, []).extend(
            [
                DynamicConfigValue(id_val="thresholds", value=thresholds(steps).build()),
                DynamicConfigValue(
                    id_val="custom.cellOptions", value=common.TableColoredBackgroundCellOptions()
                ),
            ]
        )
    for column, values in properties.items():
        panel = panel.override_by_name(column, values)
    return panel


def positions_map(
    title: str,
    query: InfluxQL,
    *,
    description: str = "",
    colour_by: tuple[str, Steps] | None = None,
    width: int = 12,
    height: int = 12,
) -> geomap.Panel:
    """Markers at the ``lat``/``lon`` columns of a table query; the view fits the markers.

    With ``colour_by`` (column, steps) each marker has the colour of its value's step.
    """
    markers = (
        common_builders.MapLayerOptions()
        .type("markers")
        .name("positions")
        .location(
            common_builders.FrameGeometrySource()
            .mode(common.FrameGeometrySourceMode.COORDS)
            .latitude("lat")
            .longitude("lon")
        )
        .tooltip(True)
    )
    panel = (
        geomap.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query.table())
        .view(geomap.MapViewConfig().id("fit").padding(10))
        .grid_pos(_place(width, height))
    )
    if colour_by is None:
        return panel.layers([markers])
    column, steps = colour_by
    style = {"color": {"field": column, "fixed": OK}, "size": {"fixed": 10}}
    return panel.layers([markers.config({"style": style, "showLegend": True})]).thresholds(thresholds(steps))
