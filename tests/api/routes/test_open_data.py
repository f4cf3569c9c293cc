"""GET /v1/open-data: FIWARE Smart Data Models as NGSI-LD and CSV, with nothing personal in them."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.registry import Registry
from collector.store.sqlite import SqliteStore
from tests.api.factories import MINUTE_MS, NOW_MS, bus_fix, reading, register_device

OBSERVED = "2027-01-15T07:59:00.000Z"


@pytest.fixture
def open_city(store: SqliteStore, registry: Registry) -> SqliteStore:
    with registry.session() as session:
        register_device(
            session, "aq-rynok", "vaisala_aqt530", agent="depot-secret-agent", lat=49.8419, lon=24.0316
        )
        register_device(session, "cab/rynok 1", "ecodim_dali_gw2", agent="depot-secret-agent")
        session.commit()
    at = NOW_MS - MINUTE_MS
    store.write(
        [
            reading(
                "air_quality",
                "aq-rynok",
                at,
                {
                    "no2": 20,
                    "o3": 10,
                    "pm25": 4.0,
                    "pm10": 9.0,
                    "co": 300,
                    "temperature": -2.5,
                    "humidity": 71.0,
                },
                agent="depot-secret-agent",
            ),
            reading(
                "lighting",
                "cab/rynok 1",
                at,
                {
                    "lamp0_status": 4,
                    "lamp0_level": 254,
                    "lamp1_status": 6,
                    "lamp1_level": 127,
                    "lamp2_status": 0,
                },
                agent="depot-secret-agent",
            ),
            reading(
                "water", "w-1", at, {"positive_total": 48213.75, "flow_rate": 1.5}, agent="depot-secret-agent"
            ),
            reading(
                "electricity",
                "sdm-1",
                at,
                {"import_energy_kwh": 15234.5, "voltage_l1": 231.2, "voltage_l2": 229.8, "voltage_l3": 230.5},
                agent="depot-secret-agent",
            ),
            bus_fix("1204", 5, lat=49.84, lon=24.03),
            reading(
                "validator", "val-7", at, {"taps_resident": 17}, agent="depot-secret-agent", vehicle="1204"
            ),
        ]
    )
    return store


def get(client: TestClient, dataset: str, **params: str) -> Any:
    response = client.get(f"/v1/open-data/{dataset}", params=params)
    assert response.status_code == 200, response.text
    return response


def test_air_quality_observed(anonymous: TestClient, open_city: SqliteStore) -> None:
    response = get(anonymous, "air-quality")
    assert response.headers["content-type"] == "application/ld+json"
    [entity] = response.json()
    assert entity["@context"][-1] == "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
    assert entity["id"] == "urn:ngsi-ld:AirQualityObserved:lviv:aq-rynok"
    assert entity["type"] == "AirQualityObserved"
    assert entity["location"] == {
        "type": "GeoProperty",
        "value": {"type": "Point", "coordinates": [24.0316, 49.8419]},
    }
    assert entity["no2"] == {"type": "Property", "value": 38.2, "observedAt": OBSERVED, "unitCode": "GQ"}
    assert entity["co"] == {"type": "Property", "value": 349.5, "observedAt": OBSERVED, "unitCode": "GQ"}
    assert entity["relativeHumidity"]["value"] == 0.71
    assert entity["airQualityLevel"]["value"] == "Moderate"  # no2 38.2 µg/m³
    assert entity["refDevice"] == {"type": "Relationship", "object": "urn:ngsi-ld:Device:lviv:aq-rynok"}


def test_streetlights_one_per_lamp(anonymous: TestClient, open_city: SqliteStore) -> None:
    lamps = {e["id"]: e for e in get(anonymous, "streetlights").json()}
    assert sorted(lamps) == [
        "urn:ngsi-ld:Streetlight:lviv:cab%2Frynok%201:lamp0",
        "urn:ngsi-ld:Streetlight:lviv:cab%2Frynok%201:lamp1",
        "urn:ngsi-ld:Streetlight:lviv:cab%2Frynok%201:lamp2",
    ]
    lamp0, lamp1, lamp2 = lamps.values()
    assert (lamp0["status"]["value"], lamp0["powerState"]["value"], lamp0["illuminanceLevel"]["value"]) == (
        "ok",
        "on",
        1.0,
    )
    assert (lamp1["status"]["value"], lamp1["powerState"]["value"]) == ("defectiveLamp", "low")
    assert (lamp2["status"]["value"], lamp2["powerState"]["value"]) == ("ok", "off")


def test_water_and_electricity(anonymous: TestClient, open_city: SqliteStore) -> None:
    [water] = get(anonymous, "water-consumption").json()
    assert water["waterConsumption"] == {
        "type": "Property",
        "value": 48213.75,
        "observedAt": OBSERVED,
        "unitCode": "MTQ",
    }
    assert "location" not in water  # not in the registry: no position is made up
    [meter] = get(anonymous, "electricity").json()
    assert meter["type"] == "ThreePhaseAcMeasurement"
    assert meter["phaseVoltage"]["value"] == {"L1": 231.2, "L2": 229.8, "L3": 230.5}
    assert meter["totalActiveEnergyImport"]["unitCode"] == "KWH"


def test_csv_per_dataset(anonymous: TestClient, open_city: SqliteStore) -> None:
    response = get(anonymous, "electricity", format="csv")
    assert response.headers["content-type"].startswith("text/csv")
    [row] = list(csv.DictReader(io.StringIO(response.text)))
    assert row["id"] == "urn:ngsi-ld:ThreePhaseAcMeasurement:lviv:sdm-1"
    assert row["phaseVoltage_L2"] == "229.8"
    assert row["observedAt"] == OBSERVED


def test_nothing_personal_and_nothing_unlisted(anonymous: TestClient, open_city: SqliteStore) -> None:
    listed = anonymous.get("/v1/open-data").json()
    assert [d["name"] for d in listed] == ["air-quality", "streetlights", "water-consumption", "electricity"]
    everything = ""
    for dataset in listed:
        for fmt in ("ngsi-ld", "csv"):
            everything += get(anonymous, dataset["name"], format=fmt).text
    for secret in ("depot-secret-agent", "depot-1", "1204", "val-7", "taps", "gps-", "edge-a"):
        assert secret not in everything
    assert anonymous.get("/v1/open-data/vehicle_position").status_code == 422
    assert anonymous.get("/v1/open-data/validators").status_code == 422
    assert json.loads(get(anonymous, "air-quality").text)  # valid JSON
