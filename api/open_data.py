"""Open data: the newest state of public devices as FIWARE Smart Data Models entities (NGSI-LD).

A dataset is one description in ``DATASETS``: its entity type, measurement, @context and how a
stored point becomes properties. Only device measurements are published, never who operates
what: no agent ids, no vehicles or ticket validators, no keys. Each property carries the time
the device was read (``observedAt``); entities stand where the registry says the device is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from api.air import concentrations_ugm3
from api.registry.catalogue import RegisteredDevice, field_units
from api.spreadsheet import csv_cell
from api.timespec import iso
from citygw import air_quality
from collector.store.base import FieldValue, Point, TelemetryReader, newest_per_device

NGSI_LD_CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
_MODELS = "https://raw.githubusercontent.com/smart-data-models/{domain}/master/context.jsonld"
LAMP_FIELD = re.compile(r"^(lamp\d+)_(status|level)$")
DALI_MAX_LEVEL = 254
# UN/CEFACT unit codes, as the Smart Data Models use them.
UGM3, PPB, PPM, CELSIUS, CUBIC_METRE, KWH, WATT, VOLT, AMPERE, HERTZ = (
    "GQ", "61", "59", "CEL", "MTQ", "KWH", "WTT", "VLT", "AMP", "HTZ"
)  # fmt: skip

Properties = dict[str, dict[str, Any]]


class DatasetName(StrEnum):
    AIR_QUALITY = "air-quality"
    STREETLIGHTS = "streetlights"
    WATER_CONSUMPTION = "water-consumption"
    ELECTRICITY = "electricity"


@dataclass(frozen=True, slots=True)
class Subject:
    """One thing an entity describes: a device, or one lamp of a lighting cabinet."""

    key: str
    properties: Properties


@dataclass(frozen=True, slots=True)
class Dataset:
    name: DatasetName
    entity_type: str
    measurement: str
    domain: str
    subjects: Callable[[Point, Mapping[str, str]], list[Subject]]

    @property
    def context(self) -> list[str]:
        return [_MODELS.format(domain=self.domain), NGSI_LD_CORE]


def _number(value: FieldValue | None) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _property(value: Any, observed: str, unit: str | None = None) -> dict[str, Any]:
    prop = {"type": "Property", "value": value, "observedAt": observed}
    if unit is not None:
        prop["unitCode"] = unit
    return prop


def _numbers(
    fields: Mapping[str, FieldValue], names: Mapping[str, tuple[str, str | None]], observed: str
) -> Properties:
    """Properties from fields renamed by ``names`` (field -> (property, unit code))."""
    found: Properties = {}
    for name, (prop, unit) in names.items():
        value = _number(fields.get(name))
        if value is not None:
            found[prop] = _property(value, observed, unit)
    return found


def _per_phase(
    fields: Mapping[str, FieldValue], stem: str, observed: str, unit: str
) -> dict[str, Any] | None:
    phases = {f"L{n}": _number(fields.get(f"{stem}_l{n}")) for n in (1, 2, 3)}
    known = {phase: value for phase, value in phases.items() if value is not None}
    return _property(known, observed, unit) if known else None


def air_quality_subjects(point: Point, units: Mapping[str, str]) -> list[Subject]:
    observed = iso(point.ts_ms)
    pollutants = concentrations_ugm3(point.fields, units)
    props: Properties = {name: _property(value, observed, UGM3) for name, value in pollutants.items()}
    gas_unit = {"ppb": PPB, "ppm": PPM, "µg/m³": UGM3}
    for name in ("pm1", "no", "co", "co2"):
        value = _number(point.fields.get(name))
        if value is not None:
            props[name] = _property(value, observed, gas_unit.get(units.get(name, "")))
    props |= _numbers(point.fields, {"temperature": ("temperature", CELSIUS)}, observed)
    humidity = _number(point.fields.get("humidity"))
    if humidity is not None:
        props["relativeHumidity"] = _property(round(humidity / 100, 4), observed)
    indexed = {p: c for p, c in pollutants.items() if p in air_quality.CURRENT.upper_bounds}
    if indexed:
        band = air_quality.index(indexed)
        props["airQualityIndex"] = _property(band.band, observed)
        props["airQualityLevel"] = _property(band.level, observed)
    props["dateObserved"] = _property(observed, observed)
    return [Subject(point.tags["device"], props)]


def streetlight_subjects(point: Point, _units: Mapping[str, str]) -> list[Subject]:
    """One Streetlight per lamp of the cabinet, from its DALI status byte and actual level."""
    observed = iso(point.ts_ms)
    lamps: dict[str, dict[str, float]] = {}
    for name, value in point.fields.items():
        match = LAMP_FIELD.match(name)
        number = _number(value)
        if match and number is not None:
            lamps.setdefault(match.group(1), {})[match.group(2)] = number
    subjects = []
    for lamp, values in sorted(lamps.items()):
        props: Properties = {}
        if "status" in values:
            status_byte = int(values["status"])
            # DALI: b0 control gear (ballast) failure, b1 lamp failure, b2 lamp on.
            condition = (
                "defectiveLamp" if status_byte & 0x02 else "brokenLantern" if status_byte & 0x01 else "ok"
            )
            props["status"] = _property(condition, observed)
            if not status_byte & 0x04:
                props["powerState"] = _property("off", observed)
        if "level" in values:
            level = min(1.0, max(0.0, values["level"] / DALI_MAX_LEVEL))
            props["illuminanceLevel"] = _property(round(level, 4), observed)
            if "powerState" not in props:
                props["powerState"] = _property(
                    "on" if level >= 1 else "low" if level > 0 else "off", observed
                )
        subjects.append(Subject(f"{point.tags['device']}:{lamp}", props))
    return subjects


def water_subjects(point: Point, _units: Mapping[str, str]) -> list[Subject]:
    observed = iso(point.ts_ms)
    props = _numbers(point.fields, {"positive_total": ("waterConsumption", CUBIC_METRE)}, observed)
    props["dateObserved"] = _property(observed, observed)
    return [Subject(point.tags["device"], props)] if "waterConsumption" in props else []


def electricity_subjects(point: Point, _units: Mapping[str, str]) -> list[Subject]:
    observed = iso(point.ts_ms)
    props = _numbers(
        point.fields,
        {
            "import_energy_kwh": ("totalActiveEnergyImport", KWH),
            "export_energy_kwh": ("totalActiveEnergyExport", KWH),
            "total_power": ("totalActivePower", WATT),
            "power_factor": ("totalPowerFactor", None),
            "frequency": ("frequency", HERTZ),
        },
        observed,
    )
    for stem, prop, unit in (("voltage", "phaseVoltage", VOLT), ("current", "current", AMPERE)):
        phases = _per_phase(point.fields, stem, observed, unit)
        if phases is not None:
            props[prop] = phases
    power = _per_phase(point.fields, "power", observed, WATT)
    if power is not None:
        props["activePower"] = power
    return [Subject(point.tags["device"], props)] if props else []


DATASETS: dict[DatasetName, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            DatasetName.AIR_QUALITY,
            "AirQualityObserved",
            "air_quality",
            "dataModel.Environment",
            air_quality_subjects,
        ),
        Dataset(
            DatasetName.STREETLIGHTS,
            "Streetlight",
            "lighting",
            "dataModel.Streetlighting",
            streetlight_subjects,
        ),
        Dataset(
            DatasetName.WATER_CONSUMPTION,
            "WaterConsumptionObserved",
            "water",
            "dataModel.WaterConsumption",
            water_subjects,
        ),
        Dataset(
            DatasetName.ELECTRICITY,
            "ThreePhaseAcMeasurement",
            "electricity",
            "dataModel.Energy",
            electricity_subjects,
        ),
    )
}


def urn(entity_type: str, city: str, key: str) -> str:
    """``urn:ngsi-ld:<Type>:<city>:<device>``, with what a URN may not hold percent-encoded."""
    return f"urn:ngsi-ld:{entity_type}:{city}:{quote(key, safe=':-._~+')}"


def entities(
    dataset: Dataset, store: TelemetryReader, devices: Mapping[str, RegisteredDevice], city: str
) -> Iterator[dict[str, Any]]:
    """The dataset's entities from each device's newest point, sorted by id."""
    for point in newest_per_device(store.latest(measurement=dataset.measurement)):
        device = point.tags["device"]
        registered = devices.get(device)
        units = field_units(registered.profile) if registered and registered.profile else {}
        for subject in dataset.subjects(point, units):
            entity: dict[str, Any] = {
                "id": urn(dataset.entity_type, city, subject.key),
                "type": dataset.entity_type,
            }
            if registered is not None and registered.lat is not None and registered.lon is not None:
                entity["location"] = {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": [registered.lon, registered.lat]},
                }
            entity |= subject.properties
            entity["refDevice"] = {"type": "Relationship", "object": urn("Device", city, device)}
            yield entity


def flat_row(entity: Mapping[str, Any]) -> dict[str, str]:
    """One CSV row of an entity: id, type, lat, lon, observedAt, a column per (sub-)value; no formulas."""
    row = {
        "id": csv_cell(entity["id"]),
        "type": csv_cell(entity["type"]),
        "lat": "",
        "lon": "",
        "observedAt": "",
    }
    location = entity.get("location")
    if location is not None:
        row["lon"], row["lat"] = (str(c) for c in location["value"]["coordinates"])
    for name, prop in entity.items():
        if not isinstance(prop, dict) or prop.get("type") != "Property":
            continue
        row["observedAt"] = csv_cell(prop["observedAt"])
        value = prop["value"]
        if isinstance(value, dict):
            row |= {f"{name}_{part}": csv_cell(v) for part, v in value.items()}
        else:
            row[name] = csv_cell(value)
    return row
