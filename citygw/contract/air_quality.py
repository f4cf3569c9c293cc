"""The European Air Quality Index (EEA) of a station: the worst band of its pollutants.

Concentrations are in µg/m³ under the pollutants' role names (``pm2_5``, ``pm10``, ``no2``,
``o3``, ``so2``), averaged as the EEA defines (``AVERAGING_S``). A value equal to a band's upper
bound still belongs to that band. Tables are versioned because cities keep publishing under
older ones; the current 6-band table is the default. Dependency-free, so the API and the edge can both use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

POLLUTANTS: tuple[str, ...] = ("pm2_5", "pm10", "no2", "o3", "so2")
# What the index of an hour is computed from (EEA, "European Air Quality Index", About the index,
# https://airindex.eea.europa.eu/AQI/index.html: the index is defined hourly; NO2, O3 and SO2 enter
# as hourly concentrations, PM10 and PM2.5 as running means over the past 24 hours).
AVERAGING_S: dict[str, int] = {"pm2_5": 86_400, "pm10": 86_400, "no2": 3_600, "o3": 3_600, "so2": 3_600}

# Molar mass ÷ molar volume at 20 °C and 1013.25 hPa (24.04 l/mol): µg/m³ per ppb.
PPB_TO_UGM3: dict[str, float] = {"no2": 1.91, "o3": 2.00, "so2": 2.66}


@dataclass(frozen=True)
class IndexTable:
    """One published version of the index: band names and, per pollutant, the upper bound of each band.

    The last band has no upper bound: every concentration above the others falls into it.
    """

    version: str
    levels: tuple[str, ...]
    upper_bounds: Mapping[str, tuple[float, ...]]

    def __post_init__(self) -> None:
        for pollutant, bounds in self.upper_bounds.items():
            if len(bounds) != len(self.levels) - 1 or list(bounds) != sorted(bounds):
                raise ValueError(
                    f"table {self.version}: {pollutant} needs {len(self.levels) - 1} rising upper bounds"
                )

    def band(self, pollutant: str, concentration: float) -> int:
        """The band (1 = best) of one pollutant's concentration in µg/m³."""
        bounds = self.upper_bounds.get(pollutant)
        if bounds is None:
            raise ValueError(
                f"{pollutant!r} is not in the {self.version} index; use one of {', '.join(self.upper_bounds)}"
            )
        if not math.isfinite(concentration) or concentration < 0:
            raise ValueError(f"{pollutant}={concentration} is not a concentration (finite, at least 0)")
        return next((i for i, bound in enumerate(bounds, 1) if concentration <= bound), len(bounds) + 1)


class StationIndex(NamedTuple):
    """A station's index: its band (1 = best), the band's name and the pollutant that set it."""

    band: int
    level: str
    pollutant: str


EEA_2024 = IndexTable(
    version="eea-2024",
    levels=("Good", "Fair", "Moderate", "Poor", "Very poor", "Extremely poor"),
    upper_bounds={
        "pm2_5": (5, 15, 50, 90, 140),
        "pm10": (15, 45, 120, 195, 270),
        "no2": (10, 25, 60, 100, 150),
        "o3": (60, 100, 120, 160, 180),
        "so2": (20, 40, 125, 190, 275),
    },
)
EEA_2017 = IndexTable(
    version="eea-2017",
    levels=("Good", "Fair", "Moderate", "Poor", "Very poor"),
    upper_bounds={
        "pm2_5": (10, 20, 25, 50),
        "pm10": (20, 35, 50, 100),
        "no2": (40, 100, 200, 400),
        "o3": (80, 120, 180, 240),
        "so2": (100, 200, 350, 500),
    },
)
TABLES: dict[str, IndexTable] = {t.version: t for t in (EEA_2024, EEA_2017)}
CURRENT = EEA_2024


def index(pollutants: Mapping[str, float], table: IndexTable | str = CURRENT) -> StationIndex:
    """The station's index from its pollutants in µg/m³; ties go to the first pollutant in the table."""
    if isinstance(table, str):
        if table not in TABLES:
            raise ValueError(f"no index table {table!r}; known: {', '.join(TABLES)}")
        table = TABLES[table]
    if not pollutants:
        raise ValueError(
            f"no pollutant given; the index needs at least one of {', '.join(table.upper_bounds)}"
        )
    bands = {p: table.band(p, c) for p, c in pollutants.items()}
    worst = max(bands.values())
    driver = next(p for p in table.upper_bounds if bands.get(p) == worst)
    return StationIndex(worst, table.levels[worst - 1], driver)


def ugm3_from_ppb(pollutant: str, ppb: float) -> float:
    """µg/m³ at 20 °C of a gas concentration in ppb (NO2, O3, SO2)."""
    factor = PPB_TO_UGM3.get(pollutant)
    if factor is None:
        raise ValueError(f"no ppb conversion for {pollutant!r}; known: {', '.join(PPB_TO_UGM3)}")
    return ppb * factor


def ppb_from_ugm3(pollutant: str, ugm3: float) -> float:
    """ppb of a gas concentration given in µg/m³ at 20 °C (the inverse of ``ugm3_from_ppb``)."""
    return ugm3 / ugm3_from_ppb(pollutant, 1.0)
