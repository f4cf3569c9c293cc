"""A second model of each kind, with other field names, units and status bits (tests/profiles/):
alerts, open data, the AQ index, consumption and exports find its fields by role, no code changed."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.alerts.engine import evaluate
from api.registry import Registry
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import MINUTE_MS, NOW_MS, reading

PROFILES = Path(__file__).parents[1] / "profiles"
HOUR_MS = 60 * MINUTE_MS
AT = NOW_MS - MINUTE_MS
OBSERVED = "2027-01-15T07:59:00.000Z"


@pytest.fixture
def settings(tmp_path: Path) -> ApiSettings:
    return ApiSettings(registry_url=f"sqlite:///{tmp_path}/registry.sqlite", profile_dirs=(PROFILES,))


@pytest.fixture
def second_city(store: SqliteStore) -> SqliteStore:
    """Devices of the second profiles only, none of them registered."""
    flow = [
        # 0.04 l/s = 0.144 m³/h, never below the 0.1 m³/h of a leak for four hours.
        reading(
            "water", "flow-1", NOW_MS - (12 - i) * 20 * MINUTE_MS, {"q_ls": 0.04, "vol_fwd_l": 1000.0 + i}
        )
        for i in range(13)
    ]
    store.write(
        [
            # light_a: on, lamp failure (bit 3); light_b: off, power (bit 6) and ballast (bit 5) failure.
            reading(
                "lighting",
                "ctl-1",
                AT,
                {"a_state": 0b1001, "a_dim": 100, "b_state": 0b1100000, "b_dim": 0, "line_load_pct": 20},
            ),
            # 60 ppb NO2 = 114.6 µg/m³: Very poor (band 5 of eea-2024: 100..150).
            reading(
                "air_quality",
                "station-1",
                AT,
                {"nitrogen_dioxide_ppb": 60.0, "ozone_ppb": 20.0, "fine_dust": 4.0, "air_temp": 3.5},
            ),
            reading(
                "electricity",
                "em-1",
                AT,
                {"p_sum_kw": 5.5, "u1": 229.0, "u2": 230.0, "u3": 231.0, "ea_plus_wh": 7_200_000},
            ),
            *flow,
        ]
    )
    return store


def test_alerts_of_the_second_models(
    registry: Registry, settings: ApiSettings, second_city: SqliteStore
) -> None:
    raised = {(e.rule, e.subject): e for e in evaluate(registry, second_city, settings, NOW_MS)}
    assert set(raised) == {
        ("lamp_failure", "ctl-1:light_a"),
        ("lamp_failure", "ctl-1:light_b"),
        ("water_leak", "flow-1"),
        ("aq_band", "station-1"),
    }
    assert raised[("lamp_failure", "ctl-1:light_a")].detail == "light_a of ctl-1: lamp failure (9)"
    assert (
        raised[("lamp_failure", "ctl-1:light_b")].detail == "light_b of ctl-1: ballast and power failure (96)"
    )
    assert raised[("water_leak", "flow-1")].data["min_flow"] == pytest.approx(0.144)
    assert raised[("aq_band", "station-1")].data == {"band": 5, "level": "Very poor", "pollutant": "no2"}


def get(client: TestClient, dataset: str) -> Any:
    response = client.get(f"/v1/open-data/{dataset}")
    assert response.status_code == 200, response.text
    return response.json()


def test_open_data_of_the_second_models(anonymous: TestClient, second_city: SqliteStore) -> None:
    [station] = get(anonymous, "air-quality")
    assert station["no2"] == {"type": "Property", "value": 114.6, "observedAt": OBSERVED, "unitCode": "GQ"}
    assert station["pm2_5"]["value"] == 4.0
    assert station["temperature"]["value"] == 3.5
    assert station["airQualityLevel"]["value"] == "Very poor"
    lamps = {e["id"].rsplit(":", 1)[1]: e for e in get(anonymous, "streetlights")}
    assert (lamps["light_a"]["status"]["value"], lamps["light_a"]["powerState"]["value"]) == (
        "defectiveLamp",
        "on",
    )
    assert lamps["light_a"]["illuminanceLevel"]["value"] == 1.0
    assert (lamps["light_b"]["status"]["value"], lamps["light_b"]["powerState"]["value"]) == (
        "brokenLantern",
        "off",
    )
    [meter] = get(anonymous, "electricity")
    assert meter["totalActivePower"] == {
        "type": "Property",
        "value": 5500.0,
        "observedAt": OBSERVED,
        "unitCode": "WTT",
    }
    assert meter["totalActiveEnergyImport"]["value"] == 7200.0
    assert meter["phaseVoltage"]["value"] == {"L1": 229.0, "L2": 230.0, "L3": 231.0}
    [water] = get(anonymous, "water-consumption")
    assert water["waterConsumption"]["value"] == 1.012  # 1012 l
    assert water["waterConsumption"]["unitCode"] == "MTQ"


def test_air_quality_index_of_the_second_station(anonymous: TestClient, second_city: SqliteStore) -> None:
    (station,) = anonymous.get("/v1/air-quality/stations").json()["stations"]
    assert station["concentrations_ugm3"] == {"pm2_5": 4.0, "no2": 114.6, "o3": 40.0}


def test_consumption_by_role_across_meter_models(client: TestClient, store: SqliteStore) -> None:
    start = NOW_MS - 2 * HOUR_MS
    store.write(
        [
            # The Eastron's kWh and the second meter's Wh, each growing 3 kWh in the first hour.
            reading("electricity", "sdm-1", start - MINUTE_MS, {"import_energy_kwh": 100.0}),
            reading("electricity", "sdm-1", start + 30 * MINUTE_MS, {"import_energy_kwh": 103.0}),
            reading("electricity", "em-1", start - MINUTE_MS, {"ea_plus_wh": 50_000}),
            reading("electricity", "em-1", start + 30 * MINUTE_MS, {"ea_plus_wh": 53_000}),
        ]
    )
    params = {"role": "active_energy_import", "start": str(start), "end": str(NOW_MS), "by": "city"}
    response = client.get("/v1/telemetry/electricity/consumption", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["role"], body["unit"]) == ("active_energy_import", "kWh")
    assert [(i["ts_ms"], i["consumption"], i["readings"]) for i in body["intervals"]] == [(start, 6.0, 2)]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({}, "give field"),
        ({"field": "x", "role": "volume_total"}, "give field"),
        ({"role": "active_power"}, "no counter"),
        ({"role": "volume_total"}, "no profile gives a field of electricity the role volume_total"),
    ],
)
def test_consumption_needs_one_counter(client: TestClient, params: dict[str, str], says: str) -> None:
    response = client.get("/v1/telemetry/electricity/consumption", params=params)
    assert response.status_code == 400
    assert says in response.text


def test_groups_by_role_combine_meter_models_in_the_roles_unit(
    client: TestClient, store: SqliteStore
) -> None:
    at = NOW_MS - 10 * MINUTE_MS
    store.write(
        [
            reading("electricity", "sdm-1", at, {"total_power": 1000.0, "voltage": 230.0}),
            reading("electricity", "em-1", at, {"p_sum_kw": 2.0}),
        ]
    )
    params = {"by": "city", "window": "1h", "aggregate": "sum", "roles": "active_power", "start": "-1h"}
    response = client.get("/v1/telemetry/electricity/groups", params=params)
    assert response.status_code == 200, response.text
    [row] = response.json()["rows"]
    assert (row["devices"], row["values"]) == (2, {"active_power": 3000.0})
    params |= {"aggregate": "mean"}
    [row] = client.get("/v1/telemetry/electricity/groups", params=params).json()["rows"]
    assert row["values"] == {"active_power": 1500.0}
    refused = client.get("/v1/telemetry/electricity/groups", params=params | {"roles": "wattage"})
    assert refused.status_code == 400
    assert "no role 'wattage'" in refused.text


def test_profile_folders_are_checked_when_the_api_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYGW_PROFILE_DIRS", f"{PROFILES}, {tmp_path}")
    assert ApiSettings().profile_dirs == (PROFILES, tmp_path)
    (tmp_path / "meter.yaml").write_text(
        "model: meter\nvendor: x\nsource: x\nverified: modelled\nmeasurement: electricity\nregisters:\n"
        "  - {field: p_sum_kw, role: active_power, table: input, address: 0, type: f32, unit: W}\n",
        encoding="utf-8",
    )
    with pytest.raises(ValidationError) as caught:
        ApiSettings()
    assert "field p_sum_kw of measurement electricity is role active_power unit W" in str(caught.value)
    monkeypatch.setenv("CITYGW_PROFILE_DIRS", str(tmp_path / "nowhere"))
    with pytest.raises(ValidationError, match="no such folder of profiles"):
        ApiSettings()


def test_exports_of_the_second_models(client: TestClient, second_city: SqliteStore) -> None:
    params = {"start": str(NOW_MS - 5 * HOUR_MS), "end": str(NOW_MS + 1)}  # end is exclusive
    table = list(csv.DictReader(io.StringIO(client.get("/v1/exports/lighting", params=params).text)))
    assert [(row["device"], row["a_state"], row["b_state"], row["line_load_pct"]) for row in table] == [
        ("ctl-1", "9", "96", "20")
    ]
    water = list(csv.DictReader(io.StringIO(client.get("/v1/exports/water", params=params).text)))
    assert len(water) == 13
    assert set(water[0]) >= {"q_ls", "vol_fwd_l"}
