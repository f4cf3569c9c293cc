"""Air quality: pollutant concentrations per station, coloured by the bands of the EEA index."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from citygw.air_quality import CURRENT, IndexTable
from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import Steps, city_dashboard, positions_map, rows, time_series

UID = "citygw-air-quality"
MEASUREMENT = "air_quality"
# The index is defined on µg/m³; gases in ppb are stored beside their µg/m³ fields.
FIELDS = {"pm25": "pm25", "pm10": "pm10", "no2": "no2_ugm3", "o3": "o3_ugm3", "so2": "so2_ugm3"}
NAMES = {"pm25": "PM2.5", "pm10": "PM10", "no2": "NO₂", "o3": "O₃", "so2": "SO₂"}
# The EEA's own colours, best band first.
BAND_COLOURS = ("#50F0E6", "#50CCAA", "#F0E641", "#FF5050", "#960032", "#7D2181")
WHERE = f"$timeFilter AND {matches('district', 'district')} AND {matches('device', 'station')}"


def band_steps(pollutant: str, table: IndexTable = CURRENT) -> Steps:
    """Colour steps at the upper bounds of the index's bands for one pollutant."""
    bounds = table.upper_bounds[pollutant]
    return [(None, BAND_COLOURS[0]), *zip(bounds, BAND_COLOURS[1:], strict=False)]


def dashboard() -> Dashboard:
    selection = ", ".join(f'mean("{field}") AS "{p}"' for p, field in FIELDS.items())
    last_hour = f'FROM "{MEASUREMENT}" WHERE time > now() - 1h AND {WHERE} GROUP BY "district", "device"'
    board = (
        city_dashboard(
            UID,
            "Air quality",
            f"Concentrations in µg/m³ coloured by the bands of the {CURRENT.version} index "
            "(the station's index is its worst band).",
            [
                tag_values("district", "District", MEASUREMENT, "district"),
                tag_values(
                    "station", "Station", MEASUREMENT, "device", where=matches("district", "district")
                ),
            ],
        )
        .with_panel(
            positions_map(
                "Station map",
                InfluxQL(f'SELECT last("lat") AS "lat", last("lon") AS "lon", {selection} {last_hour}'),
                description="Stations with a location in their agent's configuration (readings carry it as "
                "lat/lon fields), coloured by the EEA band of their hourly PM2.5 mean; the tooltip has every "
                "pollutant.",
                colour_by=("pm25", band_steps("pm25")),
            )
        )
        .with_panel(
            rows(
                "Stations, last hour",
                InfluxQL(f"SELECT {selection} {last_hour}"),
                description="Hourly mean per station; each cell has the colour of its EEA band. "
                "Stations without a location show here only.",
                units={p: "conμgm3" for p in FIELDS},
                column_steps={p: band_steps(p) for p in FIELDS},
                width=12,
                height=12,
            )
        )
    )
    for pollutant, field in FIELDS.items():
        board = board.with_panel(
            time_series(
                NAMES[pollutant],
                [
                    InfluxQL(
                        f'SELECT mean("{field}") AS "{pollutant}" FROM "{MEASUREMENT}" WHERE {WHERE} '
                        'GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="conμgm3",
                steps=band_steps(pollutant),
                description=f"Background colours are the {CURRENT.version} bands for {NAMES[pollutant]}.",
            )
        )
    return board.with_panel(
        time_series(
            "Temperature",
            [
                InfluxQL(
                    f'SELECT mean("temperature") AS "temperature" FROM "{MEASUREMENT}" WHERE {WHERE} '
                    'GROUP BY time($__interval), "device" fill(none)'
                ).alias("$tag_device")
            ],
            unit="celsius",
        )
    )
