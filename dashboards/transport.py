"""Transport: vehicles reporting, positions, speeds, delays and occupancy per route, boardings, and
how right the published arrival predictions were.

Delays and occupancy come from the API's recorder (``transit_vehicle``, api/recorder.py): the API
matches buses to the timetable and estimates occupancy from validator taps, then writes both here.
Prediction accuracy too (``transit_accuracy``, api/transit/accuracy.py): predictions scored per
TransitApp bucket, summed here into shares.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.builders.stat import Panel

from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import BAD, OK, WARN, big_number, city_dashboard, positions_map, rows, time_series

UID = "citygw-transport"
POSITIONS = "vehicle_position"
VALIDATORS = "validator"
TRANSIT = "transit_vehicle"
ACCURACY = "transit_accuracy"
WHERE = f"$timeFilter AND {matches('route', 'route')}"
TAPS = ("taps_resident", "taps_student", "taps_pupil", "taps_concession")
# Delay colours: a bus 3 minutes late is noticed at the stop, 5 minutes late breaks connections.
LATE_S, VERY_LATE_S = 180, 300
DELAY_STEPS = ((None, OK), (LATE_S, WARN), (VERY_LATE_S, BAD))
# Occupancy colours at the GTFS-realtime levels the API uses: few seats, then standing room only.
OCCUPANCY_STEPS = ((None, OK), (65, WARN), (90, BAD))
# Share of predictions within the windows: the 85 % target, and below 70 % riders stop trusting them.
ACCURACY_STEPS = ((None, BAD), (70, WARN), (85, OK))
# TransitApp's buckets (minutes ahead) and windows, as api/transit/accuracy.py scores them (the
# dashboards may not import the API; tests/dashboards check that the two agree).
BUCKETS = {"0_3": (30, 90), "3_6": (60, 150), "6_10": (60, 210), "10_15": (90, 270)}
# Per bucket, the percentage accurate of the predictions summed over the group: ``"0_3"`` ...
SHARES = ", ".join(f'sum("accurate_{b}") / sum("predictions_{b}") * 100 AS "{b}"' for b in BUCKETS)
WINDOWS_TEXT = "; ".join(
    f"{bucket.replace('_', '-')} min ahead: {early} s early to {late} s late"
    for bucket, (early, late) in BUCKETS.items()
)


def _late_now(over_s: int, colour: str) -> Panel:
    """How many vehicles' newest delay (last 5 minutes) is over ``over_s``."""
    return big_number(
        f"Vehicles over {over_s // 60} min late",
        InfluxQL(
            'SELECT count("delay") AS "vehicles" FROM (SELECT last("delay_s") AS "delay" '
            f'FROM "{TRANSIT}" WHERE time > now() - 5m AND {WHERE} GROUP BY "vehicle") '
            f'WHERE "delay"::field > {over_s}'
        ),
        unit="none",
        steps=((None, OK), (1, colour)),
        description="Vehicles on a matched trip whose newest delay is over this; no data: none is.",
    )


def dashboard() -> Dashboard:
    boardings = " + ".join(f'non_negative_difference(last("{field}"))' for field in TAPS)
    return (
        city_dashboard(
            UID,
            "Transport",
            "Buses and trams: who reports, where they are, how fast they go, how late they are against "
            "the timetable, how full they are and how many board. Delays and occupancy are written by "
            "the API (measurement transit_vehicle) for vehicles it matched to a trip of the GTFS "
            "timetable, every CITYGW_RECORD_INTERVAL_S.",
            [tag_values("route", "Route", (POSITIONS, TRANSIT), "route")],
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
        .with_panel(_late_now(LATE_S, WARN))
        .with_panel(_late_now(VERY_LATE_S, BAD))
        .with_panel(
            time_series(
                "Mean delay per route",
                [
                    InfluxQL(
                        f'SELECT mean("delay_s") AS "delay" FROM "{TRANSIT}" WHERE {WHERE} '
                        'GROUP BY time($__interval), "route" fill(none)'
                    ).alias("route $tag_route")
                ],
                unit="s",
                steps=DELAY_STEPS,
                description="Mean delay of the route's vehicles on a matched trip; negative: early.",
                width=12,
            )
        )
        .with_panel(
            time_series(
                "Occupancy per route",
                [
                    InfluxQL(
                        f'SELECT mean("occupancy_percentage") AS "occupancy" FROM "{TRANSIT}" WHERE {WHERE} '
                        'GROUP BY time($__interval), "route" fill(none)'
                    ).alias("route $tag_route")
                ],
                unit="percent",
                steps=OCCUPANCY_STEPS,
                description="Mean load of the route's vehicles, estimated from validator taps of about one "
                "ride against the vehicle capacity (CITYGW_TRANSIT_VEHICLE_CAPACITY), in tens of percent.",
                width=12,
            )
        )
        .with_panel(
            rows(
                "Delay per vehicle",
                InfluxQL(
                    'SELECT last("delay_s") AS "delay", last("trip_id") AS "trip", '
                    'last("confidence") AS "confidence", last("occupancy_percentage") AS "occupancy" '
                    f'FROM "{TRANSIT}" WHERE {WHERE} GROUP BY "route", "vehicle"'
                ),
                description="Newest delay, trip and occupancy of each vehicle in the time range; "
                "confidence: how sure the trip matching is (0-1).",
                units={"delay": "s", "occupancy": "percent", "confidence": "percentunit"},
                column_steps={"delay": DELAY_STEPS, "occupancy": OCCUPANCY_STEPS},
            )
        )
        .with_panel(
            time_series(
                "Arrival predictions within TransitApp's windows",
                [
                    InfluxQL(
                        f'SELECT {SHARES} FROM "{ACCURACY}" WHERE {WHERE} '
                        "GROUP BY time($__interval) fill(none)"
                    ).alias("$col min ahead")
                ],
                unit="percent",
                steps=ACCURACY_STEPS,
                description="Share of the TripUpdates' arrival predictions the bus kept to, by how long "
                f"before it really arrived they were published ({WINDOWS_TEXT}: TransitApp's ETA Accuracy "
                "Benchmark). Scored by the API from the buses' positions.",
                width=12,
            )
        )
        .with_panel(
            rows(
                "Prediction accuracy per route",
                InfluxQL(f'SELECT {SHARES} FROM "{ACCURACY}" WHERE {WHERE} GROUP BY "route"'),
                description="Per route over the time range, the share of arrival predictions within "
                "TransitApp's window, per bucket of minutes ahead (0_3: 0-3 minutes...).",
                units=dict.fromkeys(BUCKETS, "percent"),
                column_steps=dict.fromkeys(BUCKETS, ACCURACY_STEPS),
                width=12,
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
