"""The EEA European Air Quality Index: band boundaries, the driving pollutant, table versions."""

from __future__ import annotations

import pytest

from citygw.contract.air_quality import (
    AVERAGING_S,
    EEA_2017,
    EEA_2024,
    IndexTable,
    index,
    ppb_from_ugm3,
    ugm3_from_ppb,
)


@pytest.mark.parametrize(
    ("pollutant", "value", "band"),
    [
        ("pm2_5", 0.0, 1),
        ("pm2_5", 5.0, 1),  # an upper bound belongs to its band
        ("pm2_5", 5.01, 2),
        ("pm2_5", 15.0, 2),
        ("pm2_5", 140.0, 5),
        ("pm2_5", 140.1, 6),
        ("pm10", 45.0, 2),
        ("pm10", 270.5, 6),
        ("no2", 10.0, 1),
        ("no2", 60.5, 4),
        ("o3", 120.0, 3),
        ("o3", 180.0, 5),
        ("o3", 181.0, 6),
        ("so2", 40.0, 2),
        ("so2", 275.0, 5),
    ],
)
def test_current_table_boundaries(pollutant: str, value: float, band: int) -> None:
    assert index({pollutant: value}).band == band
    assert index({pollutant: value}).pollutant == pollutant


def test_station_takes_the_worst_band_and_names_its_pollutant() -> None:
    result = index({"pm2_5": 4.0, "no2": 61.0, "o3": 70.0})
    assert result == (4, "Poor", "no2")
    assert index({"pm10": 46.0, "pm2_5": 16.0}) == (3, "Moderate", "pm2_5"), "a tie goes to the table's first"
    assert index({"pm2_5": 1.0}).level == "Good"
    assert index({"so2": 1000.0}).level == "Extremely poor"


def test_the_2017_table_has_five_bands() -> None:
    assert index({"no2": 40.0}, EEA_2017) == (1, "Good", "no2")
    assert index({"no2": 41.0}, "eea-2017") == (2, "Fair", "no2")
    assert index({"pm2_5": 50.0}, EEA_2017).band == 4
    assert index({"pm2_5": 900.0}, EEA_2017) == (5, "Very poor", "pm2_5")
    # The same air reads differently under the two tables.
    assert index({"pm2_5": 12.0}, EEA_2017).band == 2
    assert index({"pm2_5": 12.0}, EEA_2024).band == 2
    assert index({"o3": 75.0}, EEA_2017).band == 1
    assert index({"o3": 75.0}, EEA_2024).band == 2


@pytest.mark.parametrize(
    ("pollutants", "table", "message"),
    [
        ({}, EEA_2024, "no pollutant"),
        ({"co": 1.0}, EEA_2024, "'co' is not in the eea-2024 index"),
        ({"pm2_5": -1.0}, EEA_2024, "not a concentration"),
        ({"pm2_5": float("nan")}, EEA_2024, "not a concentration"),
        ({"pm2_5": 1.0}, "caqi", "no index table 'caqi'"),
    ],
)
def test_bad_input_is_refused_clearly(
    pollutants: dict[str, float], table: IndexTable | str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        index(pollutants, table)


def test_a_table_with_the_wrong_number_of_bounds_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 2 rising upper bounds"):
        IndexTable("broken", ("a", "b", "c"), {"pm2_5": (10.0, 5.0)})


def test_ppb_conversion_at_20_degrees() -> None:
    assert ugm3_from_ppb("no2", 10) == pytest.approx(19.1)
    assert ugm3_from_ppb("o3", 10) == pytest.approx(20.0)
    assert ugm3_from_ppb("so2", 10) == pytest.approx(26.6)
    assert ppb_from_ugm3("no2", 19.1) == pytest.approx(10)
    with pytest.raises(ValueError, match="no ppb conversion for 'pm2_5'"):
        ugm3_from_ppb("pm2_5", 1)


def test_every_indexed_pollutant_has_the_eea_averaging_period() -> None:
    # EEA: NO2, O3, SO2 hourly; PM10 and PM2.5 as 24-hour running means.
    assert AVERAGING_S == {"pm2_5": 86_400, "pm10": 86_400, "no2": 3_600, "o3": 3_600, "so2": 3_600}
    assert set(AVERAGING_S) == set(EEA_2024.upper_bounds) == set(EEA_2017.upper_bounds)
