"""The DLMS line against simulated meters built on Gurux' server: HDLC on a pty (a multi-drop bus),
HDLC over TCP and the TCP wrapper; LLS passwords, scaler/unit, load profile ranges, and the
faults (wrong password, bad frames, a dead meter, a unit the profile does not expect)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from firmware_bridge.dlms import DlmsLine, DlmsRefused, Meter, Transport
from firmware_bridge.errors import DeviceCrcError, DeviceTimeout, LineUnavailable
from firmware_bridge.profile import DlmsField, DlmsProfile, load_dlms_profile
from firmware_bridge.simulators.dlms import (
    DlmsMeterSimulator,
    SimRegister,
    hdlc_destination,
    serve_dlms_pty,
    serve_dlms_tcp,
)

PROFILE = load_dlms_profile("generic_dlms_meter")
PASSWORD = "12345678"
START = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)


def registers(energy: int = 12_345_678) -> list[SimRegister]:
    return [
        SimRegister("1.0.1.8.0.255", energy, 0, 30, step=250),
        SimRegister("1.0.2.8.0.255", 1000, 0, 30),
        SimRegister("1.0.1.7.0.255", 2305, -1, 27, in_load_profile=False),
        SimRegister("1.0.32.7.0.255", 2301, -1, 35, in_load_profile=False),
        SimRegister("1.0.31.7.0.255", 105, -2, 33, in_load_profile=False),
    ]


EXPECTED = {
    "energy_import_kwh": 12345.678,
    "energy_export_kwh": 1.0,
    "power_import_w": 230.5,
    "voltage_l1_v": 230.1,
    "current_l1_a": 1.05,
}


def stepped_clock() -> tuple[list[dt.datetime], Callable[[], dt.datetime]]:
    now = [START]
    return now, lambda: now[0]


async def test_registers_are_read_with_their_scaler_over_hdlc_with_a_password() -> None:
    meter = DlmsMeterSimulator(registers(), physical=17, password=PASSWORD)
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, name="dlms-1", timeout=0.5) as line:
        fields = await line.read(Meter(physical=17, client=17, password=PASSWORD), PROFILE)
    assert fields == EXPECTED


async def test_two_meters_on_one_bus_answer_by_physical_address() -> None:
    first = DlmsMeterSimulator(registers(1_000), physical=17)
    second = DlmsMeterSimulator(registers(2_000), physical=18)
    async with serve_dlms_pty([first, second]) as port, DlmsLine(port, timeout=0.5) as line:
        one = await line.read(Meter(physical=17), PROFILE)
        two = await line.read(Meter(physical=18), PROFILE)
    assert (one["energy_import_kwh"], two["energy_import_kwh"]) == (1.0, 2.0)


@pytest.mark.parametrize("transport", ["hdlc", "wrapper"])
async def test_a_meter_on_tcp(transport: Transport) -> None:
    meter = DlmsMeterSimulator(registers(), transport=transport, password=PASSWORD)
    async with serve_dlms_tcp(meter) as url, DlmsLine(url, transport=transport, timeout=0.5) as line:
        fields = await line.read(Meter(client=17, password=PASSWORD), PROFILE)
    assert fields == EXPECTED


async def test_the_clock_is_the_meters() -> None:
    _, clock = stepped_clock()
    meter = DlmsMeterSimulator(registers(), now=clock)
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, timeout=0.5) as line:
        assert await line.read_clock(Meter()) == int(START.timestamp() * 1000)


async def test_the_load_profile_is_read_by_range_after_since_up_to_until() -> None:
    now, clock = stepped_clock()
    meter = DlmsMeterSimulator(registers(), now=clock)
    for _ in range(6):
        now[0] += dt.timedelta(minutes=15)
        meter.tick()
    stamps = [stamp for stamp, _ in meter.rows]
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, timeout=0.5) as line:
        rows = await line.read_load_profile(Meter(), PROFILE, stamps[1], stamps[4])
    assert [stamp for stamp, _ in rows] == stamps[2:5]  # after since, up to until: nothing doubled
    assert [fields["energy_import_kwh"] for _, fields in rows] == [
        meter.rows[i][1]["1.0.1.8.0.255"] / 1000 for i in (2, 3, 4)
    ]
    assert set(rows[0][1]) == {"energy_import_kwh", "energy_export_kwh"}  # the columns the profile has


async def test_a_wrong_password_is_refused_in_one_line() -> None:
    meter = DlmsMeterSimulator(registers(), physical=17, password=PASSWORD)
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, name="dlms-1", timeout=0.5) as line:
        with pytest.raises(DlmsRefused) as caught:
            await line.read(Meter(physical=17, client=17, password="00000000"), PROFILE)
    message = str(caught.value)
    assert message.startswith("DLMS line dlms-1, meter 17/1 (client 17, LLS password): AARQ: wrong password")
    assert "\n" not in message


async def test_a_bad_frame_is_asked_again_and_nothing_is_lost() -> None:
    meter = DlmsMeterSimulator(registers())
    meter.bad_frames = 1
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, timeout=0.5, retries=1) as line:
        assert await line.read(Meter(), PROFILE) == EXPECTED
    assert meter.bad_frames == 0


async def test_bad_frames_beyond_the_retries_are_a_crc_error_naming_what_was_sent() -> None:
    meter = DlmsMeterSimulator(registers())
    meter.bad_frames = 2
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, name="d", timeout=0.5, retries=1) as line:
        with pytest.raises(DeviceCrcError) as caught:
            await line.read(Meter(), PROFILE)
    assert str(caught.value).startswith("DLMS line d, meter 1 (client 16, no security): SNRM: ")
    assert "received 7e" in str(caught.value)


async def test_a_dead_meter_is_a_timeout_naming_the_request() -> None:
    meter = DlmsMeterSimulator(registers(), dead=True)
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, name="d", timeout=0.2) as line:
        with pytest.raises(DeviceTimeout) as caught:
            await line.read(Meter(), PROFILE)
    assert (
        str(caught.value) == "DLMS line d, meter 1 (client 16, no security): no answer to SNRM within 0.2 s"
    )


async def test_a_register_in_another_unit_is_left_out_with_why() -> None:
    wrong = registers()
    wrong[0] = SimRegister("1.0.1.8.0.255", 12_345, 0, 32)  # varh, not Wh
    meter = DlmsMeterSimulator(wrong)
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, name="d", timeout=0.5) as line:
        fields = await line.read(Meter(), PROFILE)
        errors = line.field_errors(Meter())
    assert "energy_import_kwh" not in fields
    assert fields["voltage_l1_v"] == 230.1  # the rest is kept
    assert "reports unit code 32, the profile expects 30" in str(errors["energy_import_kwh"])


async def test_a_missing_port_is_line_unavailable() -> None:
    with pytest.raises(LineUnavailable, match="DLMS line x: cannot open /dev/nonexistent-dlms"):
        async with DlmsLine("/dev/nonexistent-dlms", name="x"):
            pass


def test_hdlc_server_addresses() -> None:
    assert hdlc_destination(bytes.fromhex("7ea00703219310")) == (1, None)  # one-byte address 1
    assert hdlc_destination(bytes.fromhex("7ea0080223219310")) == (1, 17)  # upper 1, lower 17


def test_a_register_without_cosem_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="a register needs cosem_unit"):
        DlmsProfile.model_validate(
            {
                "model": "m",
                "vendor": "v",
                "measurement": "electricity",
                "protocol": "dlms",
                "source": "s",
                "verified": "modelled",
                "fields": [{"field": "e", "obis": "1.0.1.8.0.255"}],
            }
        )


async def test_an_object_the_meter_lacks_is_left_out_with_the_request() -> None:
    meter = DlmsMeterSimulator(registers()[:4])  # no current register 1.0.31.7.0.255
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, name="d", timeout=0.5) as line:
        fields = await line.read(Meter(), PROFILE)
        errors = line.field_errors(Meter())
    assert set(fields) == set(EXPECTED) - {"current_l1_a"}
    assert str(errors["current_l1_a"]).startswith(
        "DLMS line d, meter 1 (client 16, no security): GET 1.0.31.7.0.255 attribute 2: the meter answers "
    )


def test_a_role_is_checked_against_the_fields_unit() -> None:
    assert DlmsField(field="v", obis="1.0.32.7.0.255", cosem_unit=35, unit="V", role="voltage").role
    with pytest.raises(ValueError, match="voltage"):
        DlmsField(field="e", obis="1.0.1.8.0.255", cosem_unit=30, unit="kWh", role="voltage")
