"""Transport: vehicles reporting, their positions and speeds per route, boardings from validators."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import BAD, OK, WARN, big_number, city_dashboard, positions_map, rows, time_series

UID = "citygw-transport"
POSITIONS = "vehicle_position"
VALIDATORS = "validator"
WHERE = f"$timeFilter AND {matches('route', 'route')}"
TAPS = ("taps_resident", "taps_student", "taps_pupil", "taps_concession")


def dashboard() -> Dashboard:
    boardings = " + ".join(f'non_negative_difference(last("{field}"))' for field in TAPS)
    return (
        city_dashboard(
            UID,
            "Transport",
            "Buses and trams: who reports, where they are, how fast they go, how many board. "
            "Delays and occupancy need the timetable (GTFS) and are not here yet.",
            [tag_values("route", "Route", POSITIONS, "route")],
        )
        .with_panel(
            big_number(
                "Vehicles reporting",
                InfluxQL(
                    'SELECT count("lat") AS "vehicles" FROM (SELECT last("lat") AS "lat" '
                    f'FROM "{POSITIONS}" WHERE time > now() - 5m AND {WHERE} GROUP BY "vehicle")'
                ),
                unit="none",
                steps=((None, BAD), (1, OK)),
                description="Vehicles with a position in the last 5 minutes.",
            )
        )
        .with_panel(
            time_series(
                "Vehicles reporting per route",
                [
                    InfluxQL(
                        'SELECT count("lat") AS "vehicles" FROM (SELECT last("lat") AS "lat" '
                        f'FROM "{POSITIONS}" WHERE {WHERE} '
                        'GROUP BY time($__interval), "route", "vehicle" fill(none)) '
                        'WHERE $timeFilter GROUP BY time($__interval), "route" fill(none)'
                    ).alias("route $tag_route")
                ],
                unit="none",
                stacked=True,
                width=18,
            )
        )
        .with_panel(
            positions_map(
                "Where the vehicles are",
                InfluxQL(
                    'SELECT last("lat") AS "lat", last("lon") AS "lon", last("speed_mps") * 3.6 AS "speed" '
                    f'FROM "{POSITIONS}" WHERE time > now() - 5m AND {WHERE} '
                    'GROUP BY "route", "vehicle", "vehicle_label"'
                ),
                description="Newest position of every vehicle heard in the last 5 minutes.",
            )
        )
        .with_panel(
            time_series(
                "Mean speed per route",
                [
                    InfluxQL(
                        f'SELECT mean("speed_mps") * 3.6 AS "speed" FROM "{POSITIONS}" WHERE {WHERE} '
                        'GROUP BY time($__interval), "route" fill(none)'
                    ).alias("route $tag_route")
                ],
                unit="velocitykmh",
                steps=((None, BAD), (10, WARN), (18, OK)),
                description="Below 10 km/h a route is stuck in traffic.",
            )
        )
        .with_panel(
            time_series(
                "Positions received per interval",
                [
                    InfluxQL(
                        f'SELECT count("lat") AS "positions" FROM "{POSITIONS}" WHERE {WHERE} '
                        'GROUP BY time($__interval), "route" fill(0)'
                    ).alias("route $tag_route")
                ],
                unit="none",
                bars=True,
                stacked=True,
            )
        )
        .with_panel(
            time_series(
                "Boardings per interval",
                [
                    InfluxQL(
                        f'SELECT {boardings} AS "boardings" FROM "{VALIDATORS}" WHERE {WHERE} '
                        'GROUP BY time($__interval), "route", "device" fill(none)'
                    ).alias("route $tag_route $tag_device")
                ],
                unit="none",
                bars=True,
                stacked=True,
                description="Taps on the validators (all card types), from the growth of their counters.",
            )
        )
        .with_panel(
            rows(
                "GPS receivers",
                InfluxQL(
                    'SELECT last("satellites") AS "satellites", last("hdop") AS "hdop", '
                    f'last("fix_quality") AS "fix_quality" FROM "{POSITIONS}" WHERE {WHERE} '
                    'GROUP BY "route", "vehicle"'
                ),
                column_steps={
                    "satellites": ((None, BAD), (4, WARN), (7, OK)),
                    "hdop": ((None, OK), (2, WARN), (5, BAD)),
                },
            )
        )
    )
