"""The line owner: priorities, quarantine of a dead device, truthful health, counter resets,
report by exception with an honest heartbeat.

Devices are simulators on a pseudo-terminal RS-485 line; where bus time matters the line is
paced at 9600 baud like real wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from citygw.contract import wire
from citygw.contract.agent_config import Device
from edge.journal import ROW_OVERHEAD_BYTES, Journal
from edge.poller import FAST, QUARANTINED, WITH_SLOW, HealthBoard, ModbusPoller, reset_field
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_serial_pty, serve_tcp
from tests.services import free_port

TIMEOUT = 0.1


class Recorder(Journal):
    """A real journal that also keeps what was appended, in order, and when (wall clock, ms)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "pi-test")
        self.readings: list[wire.Reading] = []
        self.appended_at: list[int] = []

    def append(self, readings: Sequence[wire.Reading]) -> int:
        self.readings.extend(readings)
        self.appended_at.extend(time.time_ns() // 1_000_000 for _ in readings)
        return super().append(readings)


def device(sim: ModbusDeviceSimulator, poll_s: float, **more: Any) -> Device:
    return Device(
        id=f"dev-{sim.unit}", line="rs485-1", profile=sim.profile.model, unit=sim.unit, poll_s=poll_s, **more
    )


@asynccontextmanager
async def polling(
    sims: Sequence[ModbusDeviceSimulator],
    tmp_path: Path,
    *,
    poll_s: float,
    baudrate: int | None = 9600,
    **more: Any,
) -> AsyncIterator[tuple[ModbusPoller, Recorder, HealthBoard, ModbusLine]]:
    """A poller serving the simulators on one (baud-paced) pty line, running in the background.

    ``more`` goes to every device's config (``heartbeat_s``, ``report``).
    """
    journal = Recorder(tmp_path / f"journal-{time.monotonic_ns()}.sqlite")
    board = HealthBoard()
    poller = ModbusPoller(
        [(device(s, poll_s, **more), s.profile) for s in sims], journal=journal, board=board, site="test"
    )
    async with (
        serve_serial_pty(sims, baudrate=baudrate) as port,
        ModbusLine.rtu(port=port, baudrate=9600, timeout=TIMEOUT) as line,
    ):
        task = asyncio.create_task(poller.run(line))
        try:
            yield poller, journal, board, line
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            journal.close()


async def live_reads(sims: list[ModbusDeviceSimulator], tmp_path: Path, seconds: float) -> dict[str, int]:
    async with polling(sims, tmp_path, poll_s=0.2) as (_, _, board, _):
        await asyncio.sleep(seconds)
    return {d: r.reads for d, r in board.devices.items()}


async def test_a_dead_device_costs_its_live_neighbours_under_10_percent(tmp_path: Path) -> None:
    def live() -> list[ModbusDeviceSimulator]:
        return [ModbusDeviceSimulator("jxbs_3001", unit=u) for u in (1, 2, 3)]

    dead = ModbusDeviceSimulator("jxbs_3001", unit=9)
    dead.offline = True
    alone = await live_reads(live(), tmp_path, 3.0)
    with_dead = await live_reads([*live(), dead], tmp_path, 3.0)
    live_ids = ["dev-1", "dev-2", "dev-3"]
    before, after = sum(alone[d] for d in live_ids), sum(with_dead[d] for d in live_ids)
    assert before >= 3 * 12, alone  # ~15 polls each in 3 s at 0.2 s
    assert after >= 0.9 * before, (alone, with_dead)
    # Quarantine: one timeout per backoff period (0.2, 0.4, 0.8, 1.6 s ...), not one per poll.
    assert 2 <= len(dead.requests) <= 6, dead.requests


async def test_quarantined_device_is_reported_and_recovers(tmp_path: Path) -> None:
    live, dead = ModbusDeviceSimulator("jxbs_3001", unit=1), ModbusDeviceSimulator("jxbs_3001", unit=2)
    dead.offline = True
    async with polling([live, dead], tmp_path, poll_s=0.1) as (_, _, board, _):
        await asyncio.sleep(0.5)
        health = board.snapshot()["dev-2"]
        assert (health.state, health.quarantined, health.last_ok) == (wire.DeviceState.TIMEOUT, True, None)
        assert health.last_error_at is not None
        assert health.response_ms_buckets is None, "a timeout is no response time"
        dead.offline = False
        deadline = time.monotonic() + 3.0
        while board.devices["dev-2"].state is not wire.DeviceState.OK:
            assert time.monotonic() < deadline, "never probed again"
            await asyncio.sleep(0.05)
        assert board.snapshot()["dev-2"].quarantined is None


async def test_commands_go_before_waiting_polls(tmp_path: Path) -> None:
    gateway = ModbusDeviceSimulator("ecodim_dali_gw2", unit=1)
    meters = [ModbusDeviceSimulator("eastron_sdm630", unit=u) for u in (2, 3, 4, 5)]

    async def dim(line: ModbusLine, level: int) -> wire.FieldValue:
        await line.write(1, gateway.profile, "lamp0_brightness", level)  # write-only: no read-back
        return await line.read_field(1, gateway.profile, "lamp0_level")

    # poll_s far below what the line can do: every device is always due, the line is saturated.
    async with polling([gateway, *meters], tmp_path, poll_s=0.01) as (poller, _, board, _):
        await asyncio.sleep(0.5)
        for level in (10, 200, 77):
            meter_reads = sum(board.devices[f"dev-{m.unit}"].reads for m in meters)
            read_back = await poller.submit_priority(partial(dim, level=level))
            assert read_back == level == gateway.get("lamp0_brightness")
            # Counted, not timed: the command waits for at most the one meter read already on the wire
            # (and the next may finish as it returns); queued behind four saturated meters it would see 4+.
            overtaken_by = sum(board.devices[f"dev-{m.unit}"].reads for m in meters) - meter_reads
            assert overtaken_by <= 2, overtaken_by
        assert all(r.state is wire.DeviceState.OK for r in board.devices.values())


async def test_a_failing_command_reaches_its_sender_and_the_line_goes_on(tmp_path: Path) -> None:
    gateway = ModbusDeviceSimulator("ecodim_dali_gw2", unit=1)
    async with polling([gateway], tmp_path, poll_s=0.05, baudrate=None) as (poller, _, board, _):
        with pytest.raises(ValueError, match="outside the allowed range"):
            await poller.submit_priority(lambda line: line.write(1, gateway.profile, "lamp0_brightness", 999))
        reads = board.devices["dev-1"].reads
        await asyncio.sleep(0.2)
        assert board.devices["dev-1"].reads > reads


async def test_fast_points_before_slow_points_before_quarantine(tmp_path: Path) -> None:
    sims = [ModbusDeviceSimulator("jxbs_3001", unit=u) for u in (1, 2, 3)]
    now = 100.0
    journal = Journal(tmp_path / "j.sqlite", "pi-test")
    board = HealthBoard()
    poller = ModbusPoller(
        [(device(s, 1.0), s.profile) for s in sims], journal=journal, board=board, site="t", clock=lambda: now
    )
    with_slow, fast, quarantined = poller._slots
    fast.polls = 1  # its next poll is fast points only
    quarantined.polls = 1
    board.failed("dev-3", wire.DeviceState.TIMEOUT, "no answer")
    for slot in poller._slots:
        slot.due, slot.patience = now - 0.5, 1.0
    ranks = [poller._rank(s, now) for s in (fast, with_slow, quarantined)]
    assert ranks == [FAST, WITH_SLOW, QUARANTINED]
    assert poller._next_ready(now) is fast
    fast.due = now + 1
    assert poller._next_ready(now) is with_slow
    with_slow.due = now + 1
    assert poller._next_ready(now) is quarantined
    # Whatever waited a whole period past its due time is no longer outranked: nothing starves.
    quarantined.due, fast.due = now - 1.5, now - 0.1
    assert poller._rank(quarantined, now) == FAST
    assert poller._next_ready(now) is quarantined
    journal.close()


async def test_health_tells_each_failure_apart(tmp_path: Path) -> None:
    ok = ModbusDeviceSimulator("jxbs_3001", unit=1)
    refusing = ModbusDeviceSimulator("jxbs_3001", unit=2)
    refusing.exception_code = 4
    garbled = ModbusDeviceSimulator("jxbs_3001", unit=3)
    garbled.crc_error = True
    swapped = ModbusDeviceSimulator("eastron_sdm120", unit=4)
    swapped.word_swapped = True
    silent = ModbusDeviceSimulator("jxbs_3001", unit=5)
    silent.offline = True
    async with polling([ok, refusing, garbled, swapped, silent], tmp_path, poll_s=0.1, baudrate=None) as (
        _,
        _,
        board,
        _,
    ):
        await asyncio.sleep(0.6)
    health = board.snapshot()
    assert {d: h.state for d, h in health.items()} == {
        "dev-1": wire.DeviceState.OK,
        "dev-2": wire.DeviceState.EXCEPTION,
        "dev-3": wire.DeviceState.CRC_ERROR,
        "dev-4": wire.DeviceState.DECODE_ERROR,
        "dev-5": wire.DeviceState.TIMEOUT,
    }
    assert health["dev-2"].exception_code == 4
    assert health["dev-3"].exception_code is None
    assert health["dev-1"].last_ok is not None
    assert health["dev-1"].last_error_at is None
    buckets = health["dev-1"].response_ms_buckets
    assert buckets is not None
    assert set(buckets) == {
        "le_50",
        "le_100",
        "le_250",
        "le_500",
        "le_1000",
        "gt_1000",
    }
    assert sum(buckets.values()) == health["dev-1"].reads
    assert buckets["le_50"] > 0
    assert health["dev-2"].response_ms_buckets is not None, "an exception is an answer"
    assert [h.quarantined for h in health.values()] == [None, None, None, None, True]
    wire.Health(
        agent="pi-test", ts=1, devices=health, journal=wire.JournalHealth(backlog=0, dropped=0)
    ).model_dump_json()


async def test_a_counter_that_goes_down_is_flagged_once(tmp_path: Path) -> None:
    validator = ModbusDeviceSimulator("ticket_validator", unit=1)
    async with polling([validator], tmp_path, poll_s=0.05, baudrate=None) as (_, journal, board, _):
        await asyncio.sleep(0.3)
        validator.reboot()
        await asyncio.sleep(0.3)
        validator.set("taps_student", 7)  # climbing again after the reboot: no new flag
        await asyncio.sleep(0.2)
    flag = reset_field("taps_resident")
    flagged = [r for r in journal.readings if flag in r.fields]
    assert len(flagged) == 1, [r.fields for r in journal.readings]
    first_after = flagged[0]
    assert first_after.fields[flag] is True
    assert first_after.fields["taps_resident"] == 0
    assert reset_field("taps_student") in first_after.fields
    before = journal.readings[: journal.readings.index(first_after)]
    assert before
    assert all(r.fields["taps_resident"] == 18342 for r in before)
    assert board.snapshot()["dev-1"].counter_resets == 4  # the validator's four tap counters
    assert not any(reset_field("taps_student") in r.fields for r in journal.readings if r is not first_after)
    assert reset_field("x" * 64) == "x" * 58 + "_reset"


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_stop_slow_skips_slow_devices_until_the_backlog_drains(tmp_path: Path) -> None:
    """Quota reached under stop_slow: the slow device is not polled (counted), until under 90 %."""
    slow, fast = ModbusDeviceSimulator("jxbs_3001", unit=1), ModbusDeviceSimulator("jxbs_3001", unit=2)
    async with polling([slow, fast], tmp_path, poll_s=0.05, baudrate=None) as (_, journal, board, _):
        await until(lambda: bool(journal.readings))
        journal.policy, journal.slow_devices = "stop_slow", frozenset({"dev-1"})
        each = len(wire.encode(journal.readings[0])) + ROW_OVERHEAD_BYTES
        journal.quota_bytes = journal.size_bytes() + 40 * each
        await until(lambda: journal.slow_stopped)
        asked, fast_reads = len(slow.requests), board.devices["dev-2"].reads
        await asyncio.sleep(0.5)
        assert len(slow.requests) <= asked + 1, "a poll already on the wire may finish, no more"
        assert board.devices["dev-2"].reads > fast_reads + 3, "fast devices keep their rate"
        assert (board.snapshot()["dev-1"].skipped_polls or 0) >= 5
        while (batch := journal.form_batch(500, live=True)) is not None:
            journal.ack(batch.seq)
        assert not journal.slow_stopped
        await asyncio.sleep(0.3)
        assert len(slow.requests) > asked + 1, "polled again once the backlog is under 90 % of the quota"


@pytest.mark.parametrize("turns", range(4))
async def test_a_line_told_to_stop_as_it_wakes_stops(tmp_path: Path, turns: int) -> None:
    """A cancellation arriving in the loop turn of a wake-up is never lost (3.11's wait_for lost it)."""
    journal = Journal(tmp_path / "journal.sqlite", "pi-test")
    poller = ModbusPoller([], journal=journal, board=HealthBoard(), site="test")
    line = ModbusLine.tcp(host="127.0.0.1", port=9)  # never opened: nothing is due
    task = asyncio.create_task(poller.run(line))
    await asyncio.sleep(0.05)  # waiting for a due poll or a command
    poller._wake.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    journal.close()
    assert done, "the line went on serving after it was cancelled"
    assert task.cancelled()


async def test_a_field_left_out_shows_on_health_until_it_decodes_again(tmp_path: Path) -> None:
    """A dead sensor channel (NaN): the other fields are journaled, health names the field and why."""
    meter = ModbusDeviceSimulator("tuf_2000m", unit=1, values={"flow_rate": float("nan")})
    async with polling([meter], tmp_path, poll_s=0.05, baudrate=None) as (_, journal, board, _):
        await until(lambda: len(journal.readings) >= 2)
        sick = board.snapshot()["dev-1"]
        meter.set("flow_rate", 3.5)
        await until(lambda: "flow_rate" in journal.readings[-1].fields)
        await until(lambda: board.snapshot()["dev-1"].fields_left_out is None)
    before = journal.readings[0].fields
    assert "flow_rate" not in before
    assert before["velocity"] == meter.expected()["velocity"]
    assert sick.state is wire.DeviceState.OK
    assert sick.fields_left_out is not None
    assert set(sick.fields_left_out) == {"flow_rate"}
    assert "nan" in sick.fields_left_out["flow_rate"]
    wire.Health(
        agent="pi-test", ts=1, devices={"dev-1": sick}, journal=wire.JournalHealth(backlog=0, dropped=0)
    )
    assert journal.readings[-1].fields["flow_rate"] == 3.5


async def test_a_failing_device_is_one_warning_naming_device_unit_line_request_and_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not one per poll, and nothing of pymodbus: then one line when it answers again."""
    caplog.set_level(logging.INFO)
    meter = ModbusDeviceSimulator("jxbs_3001", unit=7)
    port = free_port()
    journal = Recorder(tmp_path / "journal.sqlite")
    poller = ModbusPoller(
        [(device(meter, 0.05), meter.profile)], journal=journal, board=HealthBoard(), site="t"
    )
    async with ModbusLine.tcp(host="127.0.0.1", port=port, timeout=TIMEOUT) as line:
        task = asyncio.create_task(poller.run(line))
        try:
            await asyncio.sleep(1.5)  # a try now and then (quarantine backoff), every one refused
            failed = poller.board.devices["dev-7"].failures
            async with serve_tcp([meter], port=port):
                deadline = time.monotonic() + 10
                while not journal.readings:
                    assert time.monotonic() < deadline, "never read once the meter was back"
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            journal.close()
    assert failed >= 3
    assert [r for r in caplog.records if r.name.startswith("pymodbus")] == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"device dev-7: unit 7 read holding 0+10 on tcp://127.0.0.1:{port}: not sent, line unavailable: "
        f"connection refused: nothing listens on 127.0.0.1:{port} (wrong port, or the device is off)"
    ]
    answers = [
        r.getMessage() for r in caplog.records if r.name == "edge.poller" and r.levelno == logging.INFO
    ]
    assert len(answers) == 1
    assert answers[0].startswith("device dev-7 answers again after ")


async def test_a_steady_station_publishes_once_per_heartbeat_each_a_fresh_read(tmp_path: Path) -> None:
    """Polled every 0.1 s, published every 0.5 s; the heartbeat carries what that poll read, at its time."""
    station = ModbusDeviceSimulator("vaisala_aqt530", unit=1)
    async with polling([station], tmp_path, poll_s=0.1, baudrate=None, heartbeat_s=0.5) as (
        _,
        journal,
        board,
        _,
    ):
        await until(lambda: len(journal.readings) == 1)
        station.set("pm25", 8.9)  # within the profile's 1 µg/m³ deadband of the published 8.4
        moved_at = time.time_ns() // 1_000_000
        await asyncio.sleep(2.3)
        health = board.snapshot()["dev-1"]
    readings = journal.readings
    assert readings[0].fields["pm25"] == 8.4
    # 2.3 s after the first: four or five heartbeats, each 0.45-0.55 s after the last (a loaded
    # machine may stretch one), never one per poll.
    assert 4 <= len(readings) <= 6, [r.ts for r in readings]
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(readings)]
    assert all(400 <= gap <= 1000 for gap in gaps), gaps
    heartbeat = readings[1]
    # A fresh read: the value the device held at that poll (not 8.4 re-stamped), read as it was journaled.
    assert heartbeat.fields["pm25"] == 8.9
    assert heartbeat.ts > moved_at
    assert all(0 <= at - r.ts <= 200 for r, at in zip(readings, journal.appended_at, strict=True))
    assert health.state is wire.DeviceState.OK
    assert health.reads >= 3 * len(readings)
    assert health.suppressed == health.reads - len(readings)
    assert health.last_published == readings[-1].ts
    assert health.last_ok is not None
    assert health.last_ok >= health.last_published


async def test_a_move_beyond_the_deadband_is_published_at_once(tmp_path: Path) -> None:
    station = ModbusDeviceSimulator("vaisala_aqt530", unit=1)
    validator = ModbusDeviceSimulator("ticket_validator", unit=2)
    async with polling(
        [station, validator], tmp_path, poll_s=0.05, baudrate=None, heartbeat_s=60, report={"pm25": "10%"}
    ) as (_, journal, board, _):
        await until(lambda: len(journal.readings) == 2)

        def of(device_id: str) -> list[wire.Reading]:
            return [r for r in journal.readings if r.device == device_id]

        station.set("pm25", 9.2)  # +0.8: within 10 % of 8.4
        station.set("temperature", -3.6)  # within the profile's 0.2 °C
        await asyncio.sleep(0.4)
        assert len(of("dev-1")) == 1
        station.set("pm25", 9.3)  # +0.9 from the published 8.4: beyond 10 %
        started = time.monotonic()
        await until(lambda: len(of("dev-1")) == 2)
        assert time.monotonic() - started < 0.4  # the next poll or the one after, not the heartbeat
        assert of("dev-1")[-1].fields["pm25"] == 9.3
        assert of("dev-1")[-1].fields["temperature"] == -3.6
        station.set("pm25", 10.1)  # +0.8 from the newly published 9.3: within 10 %
        await asyncio.sleep(0.4)
        assert len(of("dev-1")) == 2
        taps = validator.get("taps_student")
        assert isinstance(taps, int)
        validator.set("taps_student", taps + 1)  # a counter: any change
        await until(lambda: len(of("dev-2")) == 2)
        assert (board.snapshot()["dev-1"].suppressed or 0) >= 10


async def test_health_tells_a_silent_device_from_a_steady_one(tmp_path: Path) -> None:
    steady, dead = ModbusDeviceSimulator("vaisala_aqt530", unit=1), ModbusDeviceSimulator("jxbs_3001", unit=2)
    dead.offline = True
    async with polling([steady, dead], tmp_path, poll_s=0.1, baudrate=None, heartbeat_s=60) as (
        _,
        journal,
        board,
        _,
    ):
        await until(lambda: (board.devices["dev-1"].suppressed or 0) >= 5)
        health = board.snapshot()
        taken = time.time_ns() // 1_000_000
    alive, silent = health["dev-1"], health["dev-2"]
    assert alive.state is wire.DeviceState.OK
    assert alive.last_ok is not None
    assert taken - alive.last_ok < 500, "read a moment ago"
    assert alive.last_published == journal.readings[0].ts < alive.last_ok, "published once, at the start"
    assert (silent.state, silent.last_ok, silent.last_published, silent.suppressed) == (
        wire.DeviceState.TIMEOUT,
        None,
        None,
        None,
    )


async def test_without_a_heartbeat_every_poll_is_published(tmp_path: Path) -> None:
    station = ModbusDeviceSimulator("vaisala_aqt530", unit=1)  # its profile has deadbands: unused here
    async with polling([station], tmp_path, poll_s=0.05, baudrate=None) as (_, journal, board, _):
        await until(lambda: len(journal.readings) >= 8)
        health = board.snapshot()["dev-1"]
    assert health.suppressed is None
    assert health.reads <= len(journal.readings)
    assert health.last_published == journal.readings[health.reads - 1].ts == health.last_ok


async def test_a_reading_the_journal_refuses_is_not_taken_as_published(tmp_path: Path) -> None:
    """Quota full under drop_newest: the heartbeat's reading is refused, so the next poll tries again."""
    station = ModbusDeviceSimulator("vaisala_aqt530", unit=1)
    async with polling([station], tmp_path, poll_s=0.05, baudrate=None, heartbeat_s=60) as (
        _,
        journal,
        board,
        _,
    ):
        journal.policy, journal.quota_bytes = "drop_newest", journal.size_bytes()
        await until(lambda: journal.counters.dropped >= 3)
        refused = board.snapshot()["dev-1"]
        journal.quota_bytes = None
        await until(lambda: board.snapshot()["dev-1"].last_published is not None)
        await until(lambda: (board.snapshot()["dev-1"].suppressed or 0) >= 3)
    assert refused.state is wire.DeviceState.OK
    assert (refused.last_published, refused.suppressed) == (None, None), (
        "refused: neither published nor held back"
    )
    assert journal.backlog() == 1, "published once the journal took it, then nothing moved"
