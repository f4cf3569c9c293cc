"""Air quality: pollutant concentrations per station, coloured by the bands of the EEA index.

Pollutants are read by role from every station model, in µg/m³ (a gas in ppb converted by the
unit its profile gives it); the stations' table and map take the EEA's averages (``AVERAGING_S``:
gases over the past hour, PM over the past 24 hours).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from citygw.contract.air_quality import AVERAGING_S, CURRENT, POLLUTANTS, IndexTable
from dashboards.by_role import Wanted, sources
from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import Steps, city_dashboard, positions_map, rows, time_series
from firmware_bridge.catalogue import RoleCatalogue, catalogue
from firmware_bridge.roles import Role

UID = "citygw-air-quality"
MEASUREMENT = "air_quality"
NAMES = {"pm2_5": "PM2.5", "pm10": "PM10", "no2": "NO₂", "o3": "O₃", "so2": "SO₂"}
# The EEA's own colours, best band first.
BAND_COLOURS = ("#50F0E6", "#50CCAA", "#F0E641", "#FF5050", "#960032", "#7D2181")
CHOSEN = f"{matches('district', 'district')} AND {matches('device', 'station')}"
WHERE = f"$timeFilter AND {CHOSEN}"


def band_steps(pollutant: str, table: IndexTable = CURRENT) -> Steps:
    """Colour steps at the upper bounds of the index's bands for one pollutant."""
    bounds = table.upper_bounds[pollutant]
    return [(None, BAND_COLOURS[0]), *zip(bounds, BAND_COLOURS[1:], strict=False)]


def _eea_averages(roles: RoleCatalogue) -> str:
    """FROM sources: each pollutant over its EEA averaging period up to now, lat/lon over the last hour."""
    parts = [sources(roles, MEASUREMENT, {"lat": "lat", "lon": "lon"}, f"time > now() - 1h AND {CHOSEN}")]
    for seconds in sorted(set(AVERAGING_S.values())):
        wanted: dict[str, Wanted] = {p: Role(p) for p in POLLUTANTS if AVERAGING_S[p] == seconds}
        parts.append(sources(roles, MEASUREMENT, wanted, f"time > now() - {seconds}s AND {CHOSEN}"))
    return ", ".join(parts)


def dashboard(roles: RoleCatalogue | None = None) -> Dashboard:
    roles = roles or catalogue()
    selection = ", ".join(f'mean("{p}") AS "{p}"' for p in POLLUTANTS)
    averaged = f'FROM {_eea_averages(roles)} GROUP BY "district", "device"'
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
                InfluxQL(f'SELECT last("lat") AS "lat", last("lon") AS "lon", {selection} {averaged}'),
                description="Stations with a location in their agent's configuration (readings carry it as "
                "lat/lon fields), coloured by the EEA band of their PM2.5 (24-hour running mean); the "
                "tooltip has every pollutant.",
                colour_by=("pm2_5", band_steps("pm2_5")),
            )
        )
        .with_panel(
            rows(
                "Stations, EEA averages",
                InfluxQL(f"SELECT {selection} {averaged}"),
                description="Per station the averages the EEA index takes: NO₂, O₃ and SO₂ over the past "
                "hour, PM over the past 24 hours; each cell has the colour of its EEA band. Stations "
                "without a location show here only.",
                units={p: "conμgm3" for p in POLLUTANTS},
                column_steps={p: band_steps(p) for p in POLLUTANTS},
                width=12,
                height=12,
            )
        )
    )
    for pollutant in POLLUTANTS:
        board = board.with_panel(
            time_series(
                NAMES[pollutant],
                [
                    InfluxQL(
                        f'SELECT mean("{pollutant}") AS "{pollutant}" '
                        f"FROM {sources(roles, MEASUREMENT, {pollutant: Role(pollutant)}, WHERE)} "
                        'WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
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
                    'SELECT mean("temperature") AS "temperature" '
                    f"FROM {sources(roles, MEASUREMENT, {'temperature': Role.TEMPERATURE}, WHERE)} "
                    'WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
                ).alias("$tag_device")
            ],
            unit="celsius",
        )
    )
