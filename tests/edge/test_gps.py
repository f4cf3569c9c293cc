"""A bus's GPS positions: every poll_s, and at once when it stops, leaves a stop or turns."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfigError, Device, NmeaLine, Vehicle
from edge.config_file import load_agent_config
from edge.journal import Journal
from edge.poller import GpsPoller, HealthBoard, reading_tags
from firmware_bridge.nmea import GpsFix
from firmware_bridge.simulators import BusGpsSimulator

BUS_EXAMPLE = Path(__file__).parents[2] / "edge" / "examples" / "bus.yaml"
START = dt.datetime(2027, 1, 15, 8, 0, tzinfo=dt.UTC)
# 400 m east along Horodotska, then a right-angle turn north (Lviv).
CORNER = (49.8390, 24.0200)
ROUTE = [(49.8390, 24.0144), CORNER, (49.8426, 24.0200)]


class _Positions:
    """Stands in for the journal: keeps what the poller journals."""

    def __init__(self) -> None:
        self.readings: list[wire.Reading] = []

    def append(self, readings: Sequence[wire.Reading]) -> int:
        self.readings.extend(readings)
        return len(readings)


def test_positions_every_poll_s_and_at_once_on_a_turn_a_stop_and_a_departure() -> None:
    gps = BusGpsSimulator(ROUTE, speed_mps=8.0, vehicle_id="bus-7")
    positions = _Positions()
    poller = GpsPoller(
        NmeaLine(id="gps", kind="nmea", port="/dev/null"),
        Device(id="bus-7-gps", line="gps", poll_s=30, vehicle=Vehicle(id="bus-7", label="7", route="A3")),
        journal=cast(Journal, positions),
        board=HealthBoard(),
        site="depot-north",
    )
    fixes: dict[int, GpsFix] = {}
    for second in range(76):
        gps.speed_mps = 0.0 if 60 <= second < 70 else 8.0  # stands at a stop for 10 s
        for line in gps.sentences(START + dt.timedelta(seconds=second)):
            poller.take(line)
        assert isinstance(gps.last_fix, GpsFix)
        fixes[second] = gps.last_fix
    turned = next(s for s in fixes if abs(fixes[s].course_deg or 0.0) < 1.0)  # heading north now
    sent = [round((r.ts - START.timestamp() * 1000) / 1000) for r in positions.readings]
    # 0 and 30: the period; the turn; 60 arrival; 70 departure (the next period would be at 100).
    assert sent == [0, 30, turned, 60, 70]
    assert 45 <= turned <= 55
    assert [r.fields["speed_mps"] for r in positions.readings][-2:] == [0.0, fixes[70].speed_mps]
    assert positions.readings[0].tags == {
        "site": "depot-north",
        "vehicle": "bus-7",
        "vehicle_label": "7",
        "route": "A3",
    }


def test_the_bus_example_tags_the_validator_with_the_vehicle_of_the_gps(tmp_path: Path) -> None:
    config = load_agent_config(BUS_EXAMPLE)
    gps, validator = config.devices
    assert validator.profile == "ticket_validator"
    assert validator.vehicle == gps.vehicle is not None
    assert reading_tags(validator, config.site)["vehicle"] == "bus-4711"
    wrong = tmp_path / "bus.yaml"
    wrong.write_text(
        BUS_EXAMPLE.read_text().replace(
            'vehicle: {id: bus-4711, label: "4711", route: "A3"}   #',
            'vehicle: {id: bus-4712, label: "4712"}   #',
        )
    )
    with pytest.raises(
        AgentConfigError,
        match=re.escape("devices[1].vehicle.id: no GPS device of this agent rides in vehicle 'bus-4712'"),
    ):
        load_agent_config(wrong)


def gps_poller(profile: str | None, positions: _Positions) -> GpsPoller:
    device = Device(
        id="bus-7-gps", line="gps", profile=profile, poll_s=30, vehicle=Vehicle(id="bus-7", label="7")
    )
    board = HealthBoard()
    line = NmeaLine(id="gps", kind="nmea", port="/dev/null")
    return GpsPoller(line, device, journal=cast(Journal, positions), board=board, site="depot-north")


def test_measurement_and_fields_come_from_the_nmea_profile(tmp_path: Path) -> None:
    """A profile naming another measurement and fewer fields changes the readings, with no code change."""
    gps = BusGpsSimulator(ROUTE, speed_mps=8.0, vehicle_id="bus-7")
    lean = tmp_path / "lean_gps.yaml"
    lean.write_text(
        "model: lean_gps\nvendor: ACME\nsource: test\nverified: modelled\n"
        "measurement: tram_position\nprotocol: nmea\n"
        "sentences: [RMC]\ntalkers: [GN]\nfields: [{field: lat, unit: deg}, {field: lon, unit: deg}]\n"
    )
    default, custom = _Positions(), _Positions()
    for poller in (gps_poller(None, default), gps_poller(str(lean), custom)):
        rmc, gga = gps.sentences(START)
        for line in (gga, rmc):  # the GGA first, so the RMC's fix has its quality
            poller.take(line)
    [full], [short] = default.readings, custom.readings
    assert full.measurement == "vehicle_position"
    assert set(full.fields) == {
        "lat",
        "lon",
        "speed_mps",
        "course_deg",
        "fix_quality",
        "satellites",
        "hdop",
        "altitude_m",
    }
    assert short.measurement == "tram_position"
    assert short.fields == {"lat": full.fields["lat"], "lon": full.fields["lon"]}


def test_a_gps_device_may_name_an_nmea_profile_but_not_a_modbus_one(tmp_path: Path) -> None:
    text = BUS_EXAMPLE.read_text()
    gps_device = "  - id: bus-4711-gps\n"
    assert text.count(gps_device) == 1
    named = tmp_path / "bus.yaml"
    named.write_text(text.replace(gps_device, gps_device + "    profile: gps_nmea\n"))
    assert load_agent_config(named).devices[0].profile == "gps_nmea"
    named.write_text(text.replace(gps_device, gps_device + "    profile: eastron_sdm630\n"))
    with pytest.raises(
        AgentConfigError, match=r"devices\[0\]\.profile: cannot load GPS profile 'eastron_sdm630'"
    ):
        load_agent_config(named)


def test_an_epoch_still_open_when_the_line_closes_is_journaled_and_garbage_is_counted() -> None:
    """An RMC-only receiver's epoch waits for its GGA or the next epoch; the line closing ends it too."""
    positions = _Positions()
    poller = gps_poller(None, positions)
    rmc = "$GPRMC,080000.00,A,4949.8340,N,02401.2000,E,10.0,45.0,150127,,,A*5C"
    poller.take("$GPRMC,080000.00,A,4949.8340,N,02401.2000,E,10.0,45.0,3a0127,,,A*0A")
    poller.take(rmc)
    assert positions.readings == []
    record = poller.board.record("bus-7-gps")
    assert record.failures == 1
    assert record.error is not None
    assert record.error.startswith("GPRMC field 9 (Datestamp) '3a0127' is unreadable")
    poller.end_of_stream()
    [position] = positions.readings
    assert position.ts == round(START.timestamp() * 1000)
    assert position.fields == {
        "lat": 49.83056667,
        "lon": 24.02,
        "speed_mps": 10.0 * 1852 / 3600,
        "course_deg": 45.0,
    }
