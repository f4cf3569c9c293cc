"""GET /v1/open-data: FIWARE Smart Data Models as NGSI-LD and CSV, with nothing personal in them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry as SchemaRegistry
from referencing import Resource

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
    assert [d["name"] for d in listed] == [
        "air-quality",
        "streetlights",
        "water-consumption",
        "electricity",
        "waste-containers",
        "parking-spots",
        "water-quality",
    ]
    everything = ""
    for dataset in listed:
        for fmt in ("ngsi-ld", "csv"):
            everything += get(anonymous, dataset["name"], format=fmt).text
    for secret in ("depot-secret-agent", "depot-1", "1204", "val-7", "taps", "gps-", "edge-a"):
        assert secret not in everything
    assert anonymous.get("/v1/open-data/vehicle_position").status_code == 422
    assert anonymous.get("/v1/open-data/validators").status_code == 422
    assert json.loads(get(anonymous, "air-quality").text)  # valid JSON


SCHEMAS = Path(__file__).parents[1] / "smart_data_models"


def model_schema(entity_type: str) -> Draft202012Validator:
    """The model's published JSON Schema (tests/api/smart_data_models/PROVENANCE.md), its $refs to the
    common schema resolved from the stored copy, formats checked."""
    common = json.loads((SCHEMAS / "common-schema.json").read_text(encoding="utf-8"))
    registry: Registry[Any] = SchemaRegistry().with_resource(common["$id"], Resource.from_contents(common))
    schema = json.loads((SCHEMAS / f"{entity_type}.schema.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def key_values(entity: dict[str, Any]) -> dict[str, Any]:
    """An NGSI-LD normalized entity in the key-values form the models' schemas describe: a Property's or
    GeoProperty's value, a Relationship's object."""
    simple: dict[str, Any] = {}
    for name, attribute in entity.items():
        if name == "@context":
            continue
        if isinstance(attribute, dict) and attribute.get("type") in ("Property", "GeoProperty"):
            simple[name] = attribute["value"]
        elif isinstance(attribute, dict) and attribute.get("type") == "Relationship":
            simple[name] = attribute["object"]
        else:
            simple[name] = attribute
    return simple


def valid(entity: dict[str, Any]) -> dict[str, Any]:
    simple = key_values(entity)
    errors = [e.message for e in model_schema(entity["type"]).iter_errors(simple)]
    assert errors == [], f"{entity['id']}: {errors}"
    return simple


@pytest.fixture
def seed_city(store: SqliteStore, registry: Registry) -> SqliteStore:
    with registry.session() as session:
        for device, profile in (
            ("bin-1", "waste_bin_fill"),
            ("bin-2", "waste_bin_fill"),
            ("bay-1", "parking_bay"),
            ("bay-2", "parking_bay"),
            ("bay-3", "parking_bay"),
            ("wq-1", "water_quality_probe"),
        ):
            register_device(session, device, profile, agent="depot-secret-agent", lat=49.84, lon=24.03)
        session.commit()
    at = NOW_MS - MINUTE_MS
    bin_fields = {"temperature": 11.2, "battery": 3610, "fire_alarm": 0}
    store.write(
        [
            reading("waste_bin", "bin-1", at, {"fill_level": 91.5, "tilt_alarm": 0, **bin_fields}),
            reading("waste_bin", "bin-2", at, {"fill_level": 40.0, "tilt_alarm": 1, **bin_fields}),
            reading("waste_bin", "bin-nowhere", at, {"fill_level": 10.0}),  # not in the registry: no location
            reading("parking", "bay-1", at, {"occupied": True, "battery": 3580}, zone="rynok"),
            reading(
                "parking", "bay-2", at, {"occupied": False}, district="halytskyi", site="depot-secret-agent"
            ),
            reading(
                "parking", "bay-3", at, {"occupied": False}, site="depot-secret-agent"
            ),  # no zone, no district
            reading(
                "water_quality",
                "wq-1",
                at,
                {"ph": 7.42, "turbidity": 0.35, "free_chlorine": 0.28, "temperature": 12.6},
            ),
        ]
    )
    return store


def test_waste_containers_are_valid_smart_data_models(anonymous: TestClient, seed_city: SqliteStore) -> None:
    bins = {e["id"]: valid(e) for e in get(anonymous, "waste-containers").json()}
    assert bins.keys() == {"urn:ngsi-ld:WasteContainer:lviv:bin-1", "urn:ngsi-ld:WasteContainer:lviv:bin-2"}
    one, two = bins["urn:ngsi-ld:WasteContainer:lviv:bin-1"], bins["urn:ngsi-ld:WasteContainer:lviv:bin-2"]
    assert (one["fillingLevel"], one["status"], one["temperature"]) == (0.915, "ok", 11.2)
    assert (two["fillingLevel"], two["status"]) == (0.4, "dropped")  # knocked over
    assert one["refDevice"] == ["urn:ngsi-ld:Device:lviv:bin-1"]


def test_parking_spots_are_valid_smart_data_models(anonymous: TestClient, seed_city: SqliteStore) -> None:
    bays = {e["id"]: valid(e) for e in get(anonymous, "parking-spots").json()}
    assert {k: (v["status"], v["refParkingSite"], v["category"]) for k, v in bays.items()} == {
        "urn:ngsi-ld:ParkingSpot:lviv:bay-1": (
            "occupied",
            "urn:ngsi-ld:OnStreetParking:lviv:rynok",
            ["onStreet"],
        ),
        # No zone tag: the bay's district. bay-3 has neither: the model needs a parking site, none is made up.
        "urn:ngsi-ld:ParkingSpot:lviv:bay-2": (
            "free",
            "urn:ngsi-ld:OnStreetParking:lviv:halytskyi",
            ["onStreet"],
        ),
    }


def test_water_quality_is_a_valid_smart_data_model(anonymous: TestClient, seed_city: SqliteStore) -> None:
    [entity] = get(anonymous, "water-quality").json()
    assert entity["@context"][0].endswith("/dataModel.WaterQuality/master/context.jsonld")
    assert entity["temperature"]["unitCode"] == "CEL"
    simple = valid(entity)
    assert (simple["pH"], simple["turbidity"], simple["measurand"]) == (
        7.42,
        0.35,
        ["Cl2, 0.28, M1, free chlorine"],
    )
    row = next(csv.DictReader(io.StringIO(get(anonymous, "water-quality", format="csv").text)))
    assert row["measurand"] == "Cl2, 0.28, M1, free chlorine"


def test_the_schemas_refuse_what_the_models_do_not_allow() -> None:
    """The check can fail: a fill level in % (the model's is 0..1), a bay with no parking site."""
    base = {"id": "urn:ngsi-ld:WasteContainer:lviv:b", "type": "WasteContainer"}
    place = {"location": {"type": "Point", "coordinates": [24.03, 49.84]}}
    assert not list(model_schema("WasteContainer").iter_errors(base | place | {"fillingLevel": 0.9}))
    assert list(model_schema("WasteContainer").iter_errors(base | place | {"fillingLevel": 91.5}))
    assert list(model_schema("WasteContainer").iter_errors(base | {"fillingLevel": 0.9}))  # no location
    bay = {
        "id": "urn:ngsi-ld:ParkingSpot:lviv:b",
        "type": "ParkingSpot",
        "status": "free",
        "category": ["onStreet"],
    }
    assert list(model_schema("ParkingSpot").iter_errors(bay | place))


def test_the_seed_devices_datasets_name_no_agent(anonymous: TestClient, seed_city: SqliteStore) -> None:
    for dataset in ("waste-containers", "parking-spots", "water-quality"):
        for fmt in ("ngsi-ld", "csv"):
            assert "depot-secret-agent" not in get(anonymous, dataset, format=fmt).text
