"""The DLMS poller's backfill against a simulated meter on a pty and a real journal: a meter silent
in the middle of the backfill is asked for the same interval at the next good poll; a load profile
that cannot be used is said on health and live reading goes on; a long outage comes back whole."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest

from citygw.contract import wire
from citygw.contract.agent_config import Device
from edge.journal import Journal
from edge.poller import DlmsPoller, HealthBoard
from firmware_bridge.dlms import DlmsLine
from firmware_bridge.profile import load_dlms_profile
from firmware_bridge.simulators.dlms import DlmsMeterSimulator, demo_registers, serve_dlms_pty

PROFILE = load_dlms_profile("generic_dlms_meter")


class Recording(Journal):
    """The real journal, remembering what was appended (what the agent would publish)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "pi-1")
        self.readings: list[wire.Reading] = []

    def append(self, readings: Sequence[wire.Reading]) -> int:
        accepted = super().append(readings)
        if accepted:
            self.readings += readings
        return accepted


def poller(tmp_path: Path) -> tuple[DlmsPoller, Recording, HealthBoard]:
    journal, board = Recording(tmp_path / "j.sqlite"), HealthBoard()
    device = Device(id="m-1", line="dlms-1", profile="generic_dlms_meter", poll_s=60)
    return DlmsPoller([(device, PROFILE)], journal=journal, board=board, site="s"), journal, board


async def captured_rows(meter: DlmsMeterSimulator, count: int) -> list[int]:
    """``count`` rows captured by the meter now, 20 ms apart (distinct COSEM hundredths)."""
    for _ in range(count):
        await asyncio.sleep(0.02)
        meter.tick()
    return [stamp for stamp, _ in meter.rows[-count:]]


def backfilled(journal: Recording) -> list[int]:
    return [r.ts for r in journal.readings if "power_import_w" not in r.fields]


async def test_silence_in_the_middle_of_a_backfill_asks_for_the_same_interval_again(tmp_path: Path) -> None:
    meter = DlmsMeterSimulator(demo_registers())
    dlms_poller, journal, board = poller(tmp_path)
    slot = dlms_poller._slots[0]
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, timeout=0.2, retries=0) as line:
        assert await dlms_poller.poll(slot, line)
        meter.dead = True
        assert not await dlms_poller.poll(slot, line)
        outage = await captured_rows(meter, 4)
        meter.dead, meter.silent_after = False, 4  # SNRM, AARQ, capture objects, one scaler: then silence
        assert not await dlms_poller.poll(slot, line)
        assert board.record("m-1").error is not None
        assert "no answer to GET" in board.record("m-1").error
        assert backfilled(journal) == []
        meter.silent_after = None
        assert await dlms_poller.poll(slot, line)
    assert backfilled(journal) == outage  # the whole interval, once
    assert [r.fields["energy_import_kwh"] for r in journal.readings if r.ts in outage] == [
        raw["1.0.1.8.0.255"] / 1000 for _, raw in meter.rows[-4:]
    ]


async def test_an_unusable_load_profile_is_said_and_live_reading_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    meter = DlmsMeterSimulator(demo_registers())
    dlms_poller, journal, board = poller(tmp_path)
    slot = dlms_poller._slots[0]
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, timeout=0.2, retries=0) as line:
        assert await dlms_poller.poll(slot, line)
        meter.dead = True
        assert not await dlms_poller.poll(slot, line)
        await captured_rows(meter, 2)
        meter.dead = False
        meter.bad_frames = 1  # the backfill's SNRM answer garbled, past the retries: not usable
        assert await dlms_poller.poll(slot, line)
    record = board.record("m-1")
    assert record.state is wire.DeviceState.OK
    assert record.failures == 2  # the silent poll, and the backfill not done
    warned = [r.getMessage() for r in caplog.records if "load profile not backfilled" in r.getMessage()]
    assert warned[0].startswith("device m-1: load profile not backfilled: DLMS line ")
    assert "SNRM: bad frame" in warned[0]
    assert len([r for r in journal.readings if "power_import_w" in r.fields]) == 2


async def test_a_day_long_outage_comes_back_whole(tmp_path: Path) -> None:
    now = [dt.datetime.now(dt.UTC) - dt.timedelta(days=1)]
    meter = DlmsMeterSimulator(demo_registers(), now=lambda: now[0])
    dlms_poller, journal, _ = poller(tmp_path)
    slot = dlms_poller._slots[0]
    dlms_poller.published_up_to["m-1"] = int(now[0].timestamp() * 1000)
    for _ in range(95):  # a day of 15-minute rows, read in many HDLC frames and GET blocks
        now[0] += dt.timedelta(minutes=15)
        meter.tick()
    dlms_poller.board.record("m-1").consecutive_failures = 3  # it was silent
    async with serve_dlms_pty([meter]) as port, DlmsLine(port, timeout=0.5) as line:
        assert await dlms_poller.poll(slot, line)
    assert backfilled(journal) == [stamp for stamp, _ in meter.rows]
