"""Open data: the newest state of public devices as FIWARE Smart Data Models entities (NGSI-LD).

A dataset is one description in ``DATASETS``: its entity type, the roles whose measurements it
reads, @context and how a stored point becomes properties. Fields are found by role (a profile's
``role:``), never by a model's field name, and published in the role's canonical unit. Only
device measurements are published, never who operates what: no agent ids, no vehicles or ticket
validators, no keys. Each property carries the time
the device was read (``observedAt``); entities stand where the registry says the device is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from api.air import RecentIndices, StationIndex, concentrations_ugm3, station_indices
from api.registry.catalogue import RegisteredDevice
from api.settings import ApiSettings
from api.spreadsheet import csv_cell
from api.timespec import iso
from citygw.contract import air_quality
from collector.store.base import Point, TelemetryReader, newest_per_device
from firmware_bridge.catalogue import RoleCatalogue
from firmware_bridge.roles import ROLES, LampBit, Role

NGSI_LD_CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
_MODELS = "https://raw.githubusercontent.com/smart-data-models/{domain}/master/context.jsonld"
# UN/CEFACT unit codes, as the Smart Data Models use them, of the roles' canonical units.
UGM3, PPB, PPM, CELSIUS, CUBIC_METRE, KWH, WATT, VOLT, AMPERE, HERTZ, MG_L = (
    "GQ", "61", "59", "CEL", "MTQ", "KWH", "WTT", "VLT", "AMP", "HTZ", "M1"
)  # fmt: skip
UNIT_CODES = {"µg/m³": UGM3, "ppb": PPB, "ppm": PPM, "°C": CELSIUS, "m³": CUBIC_METRE, "kWh": KWH,
              "W": WATT, "V": VOLT, "A": AMPERE, "Hz": HERTZ, "mg/L": MG_L}  # fmt: skip
# A bin's alarm channels (role alarm) as the WasteContainer's safety status, the gravest first.
BIN_ALARMS = (("fire", "burning"), ("tilt", "dropped"))

Properties = dict[str, dict[str, Any]]


class DatasetName(StrEnum):
    AIR_QUALITY = "air-quality"
    STREETLIGHTS = "streetlights"
    WATER_CONSUMPTION = "water-consumption"
    ELECTRICITY = "electricity"
    WASTE_CONTAINERS = "waste-containers"
    PARKING_SPOTS = "parking-spots"
    WATER_QUALITY = "water-quality"


@dataclass(frozen=True, slots=True)
class Subject:
    """One thing an entity describes: a device, or one lamp of a lighting controller."""

    key: str
    properties: Properties


@dataclass(frozen=True, slots=True)
class Observed:
    """What a dataset's subjects are made from: the newest point, the roles, the station's index."""

    point: Point
    roles: RoleCatalogue
    station: StationIndex | None = None
    city: str = ""

    @property
    def at(self) -> str:
        return iso(self.point.ts_ms)

    def chosen(self, role: Role) -> dict[str | None, float]:
        """Per channel, the point's value of ``role`` in the role's canonical unit."""
        found = self.roles.chosen(role, self.point.measurement, self.point.fields)
        return {channel: value for channel, (_spec, value) in found.items()}

    def property(self, role: Role) -> dict[str, Any] | None:
        """The role's channel-less value as a Property in its canonical unit, or None."""
        value = self.chosen(role).get(None)
        return None if value is None else _property(value, self.at, _unit_code(role))

    def per_channel(self, role: Role) -> dict[str, Any] | None:
        """The role's values per channel (a phase: L1, L2, L3) as one Property, or None."""
        values = {str(c).upper(): v for c, v in self.chosen(role).items() if c is not None}
        return _property(values, self.at, _unit_code(role)) if values else None


@dataclass(frozen=True, slots=True)
class Dataset:
    name: DatasetName
    entity_type: str
    roles: tuple[Role, ...]  # a measurement holding a field of one of them is in the dataset
    domain: str
    subjects: Callable[[Observed], list[Subject]]
    located: bool = False  # the model requires a location: a device the registry places nowhere is left out
    device_list: bool = False  # the model's refDevice is a list of devices

    @property
    def context(self) -> list[str]:
        return [_MODELS.format(domain=self.domain), NGSI_LD_CORE]


def _unit_code(role: Role) -> str | None:
    unit = ROLES[role].unit
    return None if unit is None else UNIT_CODES.get(unit)


def _property(value: Any, observed: str, unit: str | None = None) -> dict[str, Any]:
    prop = {"type": "Property", "value": value, "observedAt": observed}
    if unit is not None:
        prop["unitCode"] = unit
    return prop


def _named(seen: Observed, names: Mapping[str, Role]) -> Properties:
    """Properties named by ``names`` (property -> role), of the roles the point has."""
    found: Properties = {}
    for name, role in names.items():
        prop = seen.property(role)
        if prop is not None:
            found[name] = prop
    return found


def air_quality_subjects(seen: Observed) -> list[Subject]:
    observed = seen.at
    pollutants = concentrations_ugm3(seen.roles, seen.point.measurement, seen.point.fields)
    props: Properties = {name: _property(value, observed, UGM3) for name, value in pollutants.items()}
    props |= _named(seen, {"pm1": Role.PM1, "no": Role.NO, "co": Role.CO, "co2": Role.CO2})
    props |= _named(seen, {"temperature": Role.TEMPERATURE})
    humidity = seen.chosen(Role.HUMIDITY).get(None)
    if humidity is not None:
        props["relativeHumidity"] = _property(round(humidity / 100, 4), observed)
    index = seen.station.index if seen.station is not None else None
    if index is not None:  # the EEA's averages, as /v1/air-quality gives them
        props["airQualityIndex"] = _property(index.band, observed)
        props["airQualityLevel"] = _property(index.level, observed)
    props["dateObserved"] = _property(observed, observed)
    return [Subject(seen.point.tags["device"], props)]


def streetlight_subjects(seen: Observed) -> list[Subject]:
    """One Streetlight per lamp (channel) of the controller, from its status word and actual level."""
    observed, point = seen.at, seen.point
    statuses = seen.roles.chosen(Role.LAMP_STATUS, point.measurement, point.fields)
    levels = seen.roles.chosen(Role.LAMP_LEVEL, point.measurement, point.fields)
    subjects = []
    for lamp in sorted({c for c in (*statuses, *levels) if c is not None}):
        props: Properties = {}
        if lamp in statuses:
            spec, value = statuses[lamp]
            status = int(value)
            condition = (
                "defectiveLamp"
                if status & spec.bits(LampBit.LAMP_FAILURE)
                else "brokenLantern"
                if status & spec.fault_mask
                else "ok"
            )
            props["status"] = _property(condition, observed)
            if not status & spec.bits(LampBit.LAMP_ON):
                props["powerState"] = _property("off", observed)
        if lamp in levels:
            spec, value = levels[lamp]
            level = min(1.0, max(0.0, value / (spec.full_scale or 1)))
            props["illuminanceLevel"] = _property(round(level, 4), observed)
            if "powerState" not in props:
                props["powerState"] = _property(
                    "on" if level >= 1 else "low" if level > 0 else "off", observed
                )
        subjects.append(Subject(f"{point.tags['device']}:{lamp}", props))
    return subjects


def water_subjects(seen: Observed) -> list[Subject]:
    props = _named(seen, {"waterConsumption": Role.VOLUME_TOTAL})
    if not props:
        return []
    props["dateObserved"] = _property(seen.at, seen.at)
    return [Subject(seen.point.tags["device"], props)]


def electricity_subjects(seen: Observed) -> list[Subject]:
    props = _named(
        seen,
        {
            "totalActiveEnergyImport": Role.ACTIVE_ENERGY_IMPORT,
            "totalActiveEnergyExport": Role.ACTIVE_ENERGY_EXPORT,
            "totalActivePower": Role.ACTIVE_POWER,
            "totalPowerFactor": Role.POWER_FACTOR,
            "frequency": Role.FREQUENCY,
        },
    )
    for name, role in (
        ("phaseVoltage", Role.VOLTAGE),
        ("current", Role.CURRENT),
        ("activePower", Role.ACTIVE_POWER),
    ):
        phases = seen.per_channel(role)
        if phases is not None:
            props[name] = phases
    return [Subject(seen.point.tags["device"], props)] if props else []


def waste_container_subjects(seen: Observed) -> list[Subject]:
    """A bin: its fill level as a fraction (0..1), the temperature inside, its safety status from its
    alarm flags (fire: burning, tilt: dropped, none raised: ok)."""
    props: Properties = {}
    fill = seen.chosen(Role.FILL_LEVEL).get(None)
    if fill is None:
        return []
    props["fillingLevel"] = _property(round(min(100.0, max(0.0, fill)) / 100, 4), seen.at)
    props |= _named(seen, {"temperature": Role.TEMPERATURE})
    alarms = seen.chosen(Role.ALARM)
    if alarms:
        raised = [status for channel, status in BIN_ALARMS if alarms.get(channel)]
        unnamed = any(value for channel, value in alarms.items() if channel not in dict(BIN_ALARMS))
        if raised or not unnamed:  # an alarm the model has no word for leaves the status out
            props["status"] = _property(raised[0] if raised else "ok", seen.at)
    return [Subject(seen.point.tags["device"], props)]


def parking_spot_subjects(seen: Observed) -> list[Subject]:
    """A bay: free or occupied, on-street, in the parking site of its ``zone`` tag (else its district;
    never its site, which may name who operates it). The model requires a parking site: a bay with
    neither tag is left out."""
    taken = seen.chosen(Role.OCCUPIED).get(None)
    area = seen.point.tags.get("zone") or seen.point.tags.get("district")
    if taken is None or not area:
        return []
    props: Properties = {
        "status": _property("occupied" if taken else "free", seen.at),
        "category": _property(["onStreet"], seen.at),
        "refParkingSite": {"type": "Relationship", "object": urn("OnStreetParking", seen.city, area)},
    }
    return [Subject(seen.point.tags["device"], props)]


def water_quality_subjects(seen: Observed) -> list[Subject]:
    """A probe's pH, turbidity (NTU), temperature; free chlorine, which the model has no attribute for, as
    one of its ``measurand`` strings ("code, value, UN/CEFACT unit, description")."""
    props = _named(seen, {"pH": Role.WATER_PH, "turbidity": Role.TURBIDITY, "temperature": Role.TEMPERATURE})
    chlorine = seen.chosen(Role.FREE_CHLORINE).get(None)
    if chlorine is not None:
        props["measurand"] = _property([f"Cl2, {chlorine:g}, {MG_L}, free chlorine"], seen.at)
    if not props:
        return []
    props["dateObserved"] = _property(seen.at, seen.at)
    return [Subject(seen.point.tags["device"], props)]


_POLLUTANTS = tuple(Role(p) for p in air_quality.POLLUTANTS)
DATASETS: dict[DatasetName, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            DatasetName.AIR_QUALITY,
            "AirQualityObserved",
            _POLLUTANTS,
            "dataModel.Environment",
            air_quality_subjects,
        ),
        Dataset(
            DatasetName.STREETLIGHTS,
            "Streetlight",
            (Role.LAMP_STATUS, Role.LAMP_LEVEL),
            "dataModel.Streetlighting",
            streetlight_subjects,
        ),
        Dataset(
            DatasetName.WATER_CONSUMPTION,
            "WaterConsumptionObserved",
            (Role.VOLUME_TOTAL,),
            "dataModel.WaterConsumption",
            water_subjects,
        ),
        Dataset(
            DatasetName.ELECTRICITY,
            "ThreePhaseAcMeasurement",
            (Role.ACTIVE_POWER, Role.ACTIVE_ENERGY_IMPORT, Role.VOLTAGE),
            "dataModel.Energy",
            electricity_subjects,
        ),
        Dataset(
            DatasetName.WASTE_CONTAINERS,
            "WasteContainer",
            (Role.FILL_LEVEL,),
            "dataModel.WasteManagement",
            waste_container_subjects,
            located=True,
            device_list=True,
        ),
        Dataset(
            DatasetName.PARKING_SPOTS,
            "ParkingSpot",
            (Role.OCCUPIED,),
            "dataModel.Parking",
            parking_spot_subjects,
            located=True,
            device_list=True,
        ),
        Dataset(
            DatasetName.WATER_QUALITY,
            "WaterQualityObserved",
            (Role.WATER_PH, Role.TURBIDITY, Role.FREE_CHLORINE),
            "dataModel.WaterQuality",
            water_quality_subjects,
            located=True,
        ),
    )
}


def urn(entity_type: str, city: str, key: str) -> str:
    """``urn:ngsi-ld:<Type>:<city>:<device>``, with what a URN may not hold percent-encoded."""
    return f"urn:ngsi-ld:{entity_type}:{city}:{quote(key, safe=':-._~+')}"


def entities(
    dataset: Dataset,
    store: TelemetryReader,
    devices: Mapping[str, RegisteredDevice],
    settings: ApiSettings,
    now_ms: int,
    indices: RecentIndices | None = None,
) -> Iterator[dict[str, Any]]:
    """The dataset's entities from each device's newest point, in every measurement with its roles;
    air quality with the stations' indices (``indices``: reused from the last minute)."""
    city, roles = settings.city, settings.roles
    stations: dict[str, StationIndex] = {}
    if dataset.name is DatasetName.AIR_QUALITY:
        table = air_quality.TABLES[settings.aq_table]

        def compute() -> list[StationIndex]:
            return station_indices(store, roles, table=table, now_ms=now_ms, max_age_s=settings.aq_max_age_s)

        found = compute() if indices is None else indices.get(table.version, now_ms, compute)
        stations = {s.device: s for s in found}
    for measurement in roles.measurements(*dataset.roles):
        for point in newest_per_device(store.latest(measurement=measurement)):
            device = point.tags["device"]
            registered = devices.get(device)
            placed = registered is not None and registered.lat is not None and registered.lon is not None
            if dataset.located and not placed:
                continue
            device_urn = urn("Device", city, device)
            for subject in dataset.subjects(Observed(point, roles, stations.get(device), city)):
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
                entity["refDevice"] = {
                    "type": "Relationship",
                    "object": [device_urn] if dataset.device_list else device_urn,
                }
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
        elif isinstance(value, list):
            row[name] = csv_cell("; ".join(str(v) for v in value))
        else:
            row[name] = csv_cell(value)
    return row
