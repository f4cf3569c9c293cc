"""A small city in InfluxDB for the dashboards' tests: the devices of the shipped profiles, and a
second model of each kind with other field names, units and status bits (tests/profiles/).

Field values are what the simulators say a correct reader decodes from each profile
(``ModbusDeviceSimulator.expected()``), so a dashboard that names a field no profile reads
gets an empty panel and its test fails. Counters grow between readings. What the API derives
(delays, occupancy, command outcomes) is made into points by the API's own recorder functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.transit.gtfs_realtime_pb2 import VehiclePosition

from api.recorder import VehicleState, command_point, vehicle_point
from api.registry.models import Command
from api.transit.accuracy import WINDOWS, Score, accuracy_points, score
from api.transit.occupancy import Occupancy
from citygw.contract import wire
from citygw.contract.agent_config import Device as AgentDevice
from citygw.contract.agent_config import Location
from citygw.contract.wire import FieldValue
from collector.dead_letter import DEAD_LETTER, Reason
from collector.health import health_points, status_point
from collector.store import Point, open_store, prepare
from edge.poller import with_location
from firmware_bridge.profile import load_profile
from firmware_bridge.simulators import ModbusDeviceSimulator

PROFILES = Path(__file__).parents[1] / "profiles"
STEP_MS = 5 * 60_000
READINGS = 24  # two hours of readings every five minutes


@dataclass(frozen=True)
class Device:
    id: str
    profile: str
    agent: str
    tags: dict[str, str] = field(default_factory=dict)
    values: dict[str, FieldValue] = field(default_factory=dict)
    location: Location | None = None


# Bin → (district, fill level %, knocked over).
FILL = {
    "bin-rynok-1": ("halytskyi", 91.5, 0),
    "bin-rynok-2": ("halytskyi", 63.5, 0),
    "bin-sykhiv-1": ("sykhivskyi", 82.0, 1),
}
BINS = tuple(
    Device(
        bin_id,
        "waste_bin_fill",
        "depot-north-1",
        {"district": district},
        {"fill_level": fill, "tilt_alarm": tilted},
    )
    for bin_id, (district, fill, tilted) in FILL.items()
)
# Bay → (zone, taken).
TAKEN = {
    "bay-rynok-1": ("rynok", True),
    "bay-rynok-2": ("rynok", False),
    "bay-rynok-3": ("rynok", True),
    "bay-sykhiv-1": ("sykhiv", False),
}
BAYS = tuple(
    Device(bay, "parking_bay", "depot-south-1", {"zone": zone}, {"occupied": taken})
    for bay, (zone, taken) in TAKEN.items()
)
DEVICES = (
    Device(
        "aq-rynok",
        "vaisala_aqt530",
        "depot-north-1",
        {"district": "halytskyi"},
        {"pm25": 21.7},
        Location(lat=49.8419, lon=24.0316),
    ),
    Device("aq-sykhiv", "jxbs_3001", "depot-south-1", {"district": "sykhivskyi"}),
    Device("meter-opera", "eastron_sdm630", "depot-north-1", {"district": "halytskyi"}),
    Device("meter-sykhiv-1", "eastron_sdm120", "depot-south-1", {"district": "sykhivskyi"}),
    Device(
        "meter-cabinet-17",
        "eastron_sdm120",
        "depot-north-1",
        {"district": "halytskyi", "circuit": "street_lighting"},
    ),
    Device("water-zboishcha", "tuf_2000m", "depot-north-1", {"district": "shevchenkivskyi"}),
    Device("water-sykhiv", "tuf_2000m", "depot-south-1", {"district": "sykhivskyi"}, {"flow_rate": 3.5}),
    Device("cabinet-17", "ecodim_dali_gw2", "depot-north-1", {"district": "halytskyi"}),
    # Lamp 1 reports a lamp failure (status bit 1) and is dark whatever its set point; the gateway a fault.
    Device(
        "cabinet-42",
        "ecodim_dali_gw2",
        "depot-south-1",
        {"district": "sykhivskyi"},
        {"lamp1_status": 2, "lamp1_level": 0, "device_fault": 1},
    ),
    Device(
        "validator-4711-front",
        "ticket_validator",
        "bus-4711",
        {"vehicle": "bus-4711", "vehicle_label": "Bus 4711", "route": "12"},
    ),
    # Second models (tests/profiles), last so that each agent's first device stays the same.
    Device(
        "aq-example", str(PROFILES / "example_aq_station.yaml"), "depot-south-1", {"district": "sykhivskyi"}
    ),
    Device(
        "meter-example",
        str(PROFILES / "example_energy_meter.yaml"),
        "depot-south-1",
        {"district": "sykhivskyi"},
    ),
    Device(
        "water-example",
        str(PROFILES / "example_flow_meter.yaml"),
        "depot-south-1",
        {"district": "sykhivskyi"},
    ),
    # Light A reports a lamp failure (bit 3) and is dark; light B is lit; the controller has an alarm.
    Device(
        "cabinet-example",
        str(PROFILES / "example_lamp_gateway.yaml"),
        "depot-north-1",
        {"district": "halytskyi"},
        {"a_state": 0b1000, "a_dim": 0, "controller_alarm": 1},
    ),
    # Seed devices of issue 18: bins (two at or above 80 % full, one knocked over), parking bays in two
    # zones (two of four taken, both in rynok), water-quality probes (one with turbid, alkaline water).
    *BINS,
    *BAYS,
    Device(
        "wq-zboishcha",
        "water_quality_probe",
        "depot-north-1",
        {"district": "shevchenkivskyi"},
        {"free_chlorine": 0.4},
    ),
    Device(
        "wq-sykhiv",
        "water_quality_probe",
        "depot-south-1",
        {"district": "sykhivskyi"},
        {"turbidity": 1.6, "ph": 8.7},
    ),
)
# (vehicle, route, lat, lon, speed m/s): fields as edge/poller.py writes vehicle_position.
VEHICLES = (
    ("bus-4711", "12", 49.8419, 24.0316, 6.5),
    ("bus-4712", "12", 49.8350, 24.0140, 4.0),
    ("tram-7", "T7", 49.8085, 24.0132, 8.2),
)
AGENTS = ("depot-north-1", "depot-south-1", "bus-4711")
# Vehicle → (delay at the first reading, its growth per reading, s); trip; occupancy (%, status) or None.
# At the newest reading bus-4711 is 7 min late, bus-4712 just over 3 min, tram-7 early.
DELAYS = {
    "bus-4711": ((-20.0, 20.0), "12-weekday-31", (70, VehiclePosition.STANDING_ROOM_ONLY)),
    "bus-4712": ((200.0, 0.0), "12-weekday-32", None),
    "tram-7": ((-45.0, 0.0), "T7-weekday-8", (30, VehiclePosition.MANY_SEATS_AVAILABLE)),
}
# Route → per TransitApp bucket (0-3, 3-6, 6-10, 10-15 min) predictions (accurate, not) scored per
# recorder round: route 12 is right 75 %, 50 %, 50 %, 100 % of the time, T7 100 %, 100 %, 0 %, 50 %.
ACCURACY = {"12": ((3, 1), (2, 2), (1, 1), (2, 0)), "T7": ((1, 0), (1, 0), (0, 1), (1, 1))}
# Lighting commands that ended: (cabinet, agent, action, schedule, outcome, ran this late in s or None,
# reading index of the due time). Scheduled on time: 2, late: 1, failed/expired: 2; two sent "now".
COMMANDS = (
    ("cabinet-17", "depot-north-1", "on", {"event": "dusk", "offset_min": 0}, "done", 20.0, 3),
    ("cabinet-17", "depot-north-1", "dim", {"at": "22:00"}, "done", 4.0, 9),
    ("cabinet-17", "depot-north-1", "off", {"event": "dawn", "offset_min": 15}, "done", 150.0, 20),
    ("cabinet-17", "depot-north-1", "on", None, "done", 1.0, 12),
    ("cabinet-42", "depot-south-1", "on", {"event": "dusk", "offset_min": 0}, "failed", 5.0, 3),
    ("cabinet-42", "depot-south-1", "off", {"event": "dawn", "offset_min": 15}, "expired", None, 20),
    # An engineer's "on" after the failed dusk switching: written, but lamp 1 (failed) stays dark.
    ("cabinet-42", "depot-south-1", "on", None, "done_but_dark", 2.0, 14),
)


def _float_fields() -> dict[str, set[str]]:
    """Per measurement, the fields some profile decodes as floats.

    InfluxDB keeps the type a field was first written with and refuses the other. The JXBS-3001
    reads PM as whole numbers where the AQT530 reads tenths, so a city with both has a type
    conflict on ``air_quality`` pm25/pm10 (found by this seed; to be fixed where readings are
    made). The seed writes such fields as floats, as the fix would.
    """
    floats: dict[str, set[str]] = {}
    for device in DEVICES:
        profile = load_profile(device.profile)
        decoded = ModbusDeviceSimulator(profile).expected()
        names = {name for name, value in decoded.items() if isinstance(value, float)}
        floats.setdefault(profile.measurement, set()).update(names)
    return floats


def _growth(rate_per_hour: float | None, step: int) -> float:
    return (rate_per_hour or 120.0) * step * STEP_MS / 3_600_000


def points(now_ms: int) -> list[Point]:
    """Two hours of the city up to half a minute before ``now_ms``."""
    result: list[Point] = []
    floats = _float_fields()
    times = [now_ms - 30_000 - (READINGS - 1 - i) * STEP_MS for i in range(READINGS)]
    for device in DEVICES:
        profile = load_profile(device.profile)
        simulator = ModbusDeviceSimulator(profile, values=device.values or None)
        base = simulator.expected()
        tags = {**device.tags, "agent": device.agent, "device": device.id, "site": device.agent}
        configured = AgentDevice(id=device.id, line="seed", poll_s=STEP_MS / 1000, location=device.location)
        for step, ts in enumerate(times):
            fields = dict(base)
            for spec in profile.select():
                start = fields[spec.field]
                if spec.counter and isinstance(start, int | float) and not isinstance(start, bool):
                    grown = start + _growth(spec.typical_rate, step)
                    fields[spec.field] = int(grown) if isinstance(start, int) else grown
            for name in floats[profile.measurement] & fields.keys():
                fields[name] = float(fields[name])
            result.append(Point(profile.measurement, tags, ts, with_location(configured, fields)))
    for vehicle, route, lat, lon, speed in VEHICLES:
        tags = {"vehicle": vehicle, "vehicle_label": vehicle, "route": route, "agent": vehicle}
        tags |= {"device": f"{vehicle}-gps", "site": vehicle}
        for step, ts in enumerate(times):
            position: dict[str, FieldValue] = {
                "lat": lat + step * 0.0004,
                "lon": lon + step * 0.0006,
                "speed_mps": speed,
                "course_deg": 45.0,
                "fix_quality": 1,
                "satellites": 9,
                "hdop": 0.9,
            }
            result.append(Point("vehicle_position", tags, ts, position))
    result.extend(transit_points(times))
    result.extend(accuracy_points_seeded(times))
    result.extend(command_points(times))
    for i, agent in enumerate(AGENTS):
        result.append(status_point(wire.Status(agent=agent, state=wire.AgentState.ONLINE), times[0], agent))
        for step, ts in enumerate(times):
            result.extend(health_points(agent_health(agent, i, step, ts), agent))
    result.append(status_point(wire.Status(agent=AGENTS[2], state=wire.AgentState.OFFLINE), times[-1]))
    for step, reason in enumerate((Reason.SCHEMA, Reason.INVALID_JSON, Reason.SCHEMA)):
        tags = {"reason": reason, "agent": AGENTS[step % 2], "collector": "collector-1"}
        letter: dict[str, FieldValue] = {
            "topic": f"citygw/v1/{AGENTS[step % 2]}/telemetry",
            "error": "seeded",
            "payload": "{}",
        }
        result.append(Point(DEAD_LETTER, tags, times[-1 - step], letter))
    return result


def transit_points(times: list[int]) -> list[Point]:
    """What the API's recorder writes of each vehicle at each of its fixes."""
    result = []
    for vehicle, route, *_ in VEHICLES:
        (delay, growth), trip, load = DELAYS[vehicle]
        occupancy = Occupancy(load[1], load[0]) if load else None
        for step, ts in enumerate(times):
            state = VehicleState(
                vehicle,
                ts,
                route=route,
                direction=0,
                trip_id=trip,
                delay_s=delay + growth * step,
                confidence=0.9,
                occupancy=occupancy,
            )
            point = vehicle_point(state)
            assert point is not None
            result.append(point)
    return result


def accuracy_points_seeded(times: list[int]) -> list[Point]:
    """What the API's recorder writes of the predictions it scored, each round (one per reading here)."""
    result = []
    for ts in times:
        scores: list[Score | None] = []
        for route, buckets in ACCURACY.items():
            for window, (accurate, inaccurate) in zip(WINDOWS, buckets, strict=True):
                made_s = -window.start_s  # sampled this long before the bus came (at 0)
                scores += [score(route, made_s, 0, 0) for _ in range(accurate)]
                scores += [score(route, made_s, -600, 0) for _ in range(inaccurate)]  # 10 min late
        result.extend(accuracy_points([s for s in scores if s is not None], ts))
    return result


def command_points(times: list[int]) -> list[Point]:
    """What the API's recorder writes of each ended lighting command."""
    result = []
    for n, (cabinet, agent, action, schedule, outcome, late_s, at) in enumerate(COMMANDS):
        due_at = times[at]
        command = Command(
            id=f"00000000-0000-4000-8000-{n:012d}",
            agent_id=agent,
            device_id=cabinet,
            target={"kind": "cabinet"},
            action=action,
            level=50 if action == "dim" else None,
            schedule=schedule,
            due_at=due_at,
            created_at=due_at - 86_400_000,
            created_by="engineer:seed",
            status=outcome,
            result_at=None if late_s is None else due_at + int(late_s * 1000),
        )
        result.append(command_point(command))
    return result


STEADY = "aq-rynok"


def agent_health(agent: str, i: int, step: int, ts: int) -> wire.Health:
    """The health message agent number ``i`` sends at ``ts``, as received: agent 1's first device times out,
    ``STEADY`` reports by exception."""
    devices: dict[str, wire.DeviceHealth] = {}
    for n, device in enumerate(d for d in DEVICES if d.agent == agent):
        if n == 0 and i == 1:
            devices[device.id] = wire.DeviceHealth(
                state=wire.DeviceState.TIMEOUT,
                last_ok=ts - 3_600_000,
                reads=step,
                failures=step + 1,
                quarantined=True,
            )
        elif device.id == STEADY:  # reporting by exception: read a second ago, published 10 min ago
            devices[device.id] = wire.DeviceHealth(
                state=wire.DeviceState.OK,
                last_ok=ts - 1_000,
                reads=step + 1,
                last_published=ts - 600_000,
                suppressed=step,
            )
        else:
            devices[device.id] = wire.DeviceHealth(
                state=wire.DeviceState.OK, last_ok=ts - 1_000, reads=step + 1, last_published=ts - 1_000
            )
    health = wire.Health(
        agent=agent,
        ts=ts,
        devices=devices,
        journal=wire.JournalHealth(backlog=40 * i, dropped=step if i == 1 else 0),
    )
    return wire.Health.model_validate_json(wire.encode(health))


def seed(url: str, now_ms: int) -> None:
    """Write the city through the collector's own store (``open_store``)."""
    store = open_store(url)
    try:
        prepare(store)
        store.write(points(now_ms))
    finally:
        store.close()
