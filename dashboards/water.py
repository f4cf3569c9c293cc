"""Water: flow, consumption and the night-flow pattern that gives leaks away (TUF-2000M fields)."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import BAD, OK, WARN, city_dashboard, rows, time_series

UID = "citygw-water"
MEASUREMENT = "water"
WHERE = f"$timeFilter AND {matches('district', 'district')} AND {matches('device', 'meter')}"
# A district meter whose daily minimum flow stays above this has water running all night.
LEAK_FLOW_M3H = 2.0


def dashboard() -> Dashboard:
    return (
        city_dashboard(
            UID,
            "Water",
            "Flow and consumption of the district and bulk water meters; leaks show as a night flow "
            "that never drops.",
            [
                tag_values("district", "District", MEASUREMENT, "district"),
                tag_values("meter", "Meter", MEASUREMENT, "device", where=matches("district", "district")),
            ],
        )
        .with_panel(
            time_series(
                "Flow",
                [
                    InfluxQL(
                        f'SELECT mean("flow_rate") AS "flow_rate" FROM "{MEASUREMENT}" WHERE {WHERE} '
                        'GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="flowcmh",
            )
        )
        .with_panel(
            time_series(
                "Consumption per interval",
                [
                    InfluxQL(
                        'SELECT non_negative_difference(last("positive_total")) AS "consumption" '
                        f'FROM "{MEASUREMENT}" WHERE {WHERE} GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="m3",
                bars=True,
                stacked=True,
                description="Growth of the forward volume counter in each interval.",
            )
        )
        .with_panel(
            time_series(
                "Leak pattern: minimum flow per day",
                [
                    InfluxQL(
                        f'SELECT min("flow_rate") AS "minimum_flow" FROM "{MEASUREMENT}" WHERE {WHERE} '
                        'GROUP BY time(1d), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="flowcmh",
                bars=True,
                steps=((None, OK), (LEAK_FLOW_M3H, WARN), (LEAK_FLOW_M3H * 2, BAD)),
                description="A network without leaks goes nearly still at night; a daily minimum that "
                f"stays above {LEAK_FLOW_M3H} m³/h is water running somewhere.",
            )
        )
        .with_panel(
            time_series(
                "Reverse flow per interval",
                [
                    InfluxQL(
                        'SELECT non_negative_difference(last("negative_total")) AS "reverse" '
                        f'FROM "{MEASUREMENT}" WHERE {WHERE} GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="m3",
                bars=True,
                steps=((None, OK), (0.001, BAD)),
                description="Water flowing backwards: a failed check valve or a pressure problem.",
            )
        )
        .with_panel(
            rows(
                "Meters",
                InfluxQL(
                    'SELECT last("flow_rate") AS "flow_rate", last("positive_total") AS "volume", '
                    'last("signal_quality") AS "signal_quality", last("error_code") AS "error_code" '
                    f'FROM "{MEASUREMENT}" WHERE {WHERE} GROUP BY "district", "device"'
                ),
                units={"flow_rate": "flowcmh", "volume": "m3"},
                column_steps={
                    "signal_quality": ((None, BAD), (60, WARN), (75, OK)),
                    "error_code": ((None, OK), (1, BAD)),
                },
            )
        )
    )
