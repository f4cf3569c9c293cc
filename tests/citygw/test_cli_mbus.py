"""``citygw probe --mbus``: scans and meter readouts against simulated meters on a pty, in a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import termios
from pathlib import Path

from firmware_bridge.simulators.mbus import MbusMeterSimulator, serve_mbus_pty
from tests.citygw.test_cli import _citygw

CAPTURES = Path(__file__).parents[1] / "firmware_bridge" / "captures" / "mbus"


def probe(port: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One ``citygw probe --mbus`` run; then the pty is set back to 38400 baud for the next one.

    Linux ptys refuse even parity (PARENB) and reject a change that requests nothing else
    (EINVAL): a second process opening the pty at the same 2400 baud would be refused, where a
    real UART simply takes the setting.
    """
    result = _citygw("probe", "--mbus", "--port", port, *args)
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
    try:
        attributes = termios.tcgetattr(fd)
        attributes[4] = attributes[5] = termios.B38400
        termios.tcsetattr(fd, termios.TCSANOW, attributes)
    finally:
        os.close(fd)
    return result


def meters() -> list[MbusMeterSimulator]:
    return [
        MbusMeterSimulator.from_capture(CAPTURES / "kamstrup_multical_601.hex", primary=2),
        MbusMeterSimulator.from_capture(CAPTURES / "EMU_EMU-Professional-375-M-Bus.hex", primary=0),
    ]


async def test_probe_scans_primary_and_secondary_addresses() -> None:
    async with serve_mbus_pty(meters()) as port:
        primary = await asyncio.to_thread(
            probe, port, "--scan", "primary", "--addresses", "0-5", "--timeout", "0.2"
        )
        secondary = await asyncio.to_thread(probe, port, "--scan", "secondary", "--timeout", "0.2")
    assert primary.returncode == 0, primary.stderr
    lines = primary.stdout.splitlines()
    assert lines[0].split() == ["address", "secondary", "manufacturer", "version", "medium"]
    assert lines[1].split()[:3] == ["0", "00032629B5151002", "EMU"]
    assert lines[2].split()[:3] == ["2", "068558172D2C0804", "KAM"]
    assert lines[-1] == "2 meter(s)"
    assert secondary.returncode == 0, secondary.stderr
    found = sorted(line.split()[0] for line in secondary.stdout.splitlines()[1:-1])
    assert found == ["00032629B5151002", "068558172D2C0804"]


async def test_probe_shows_a_meters_records_and_a_profiles_fields() -> None:
    async with serve_mbus_pty(meters()) as port:
        records = await asyncio.to_thread(probe, port, "--meter", "068558172D2C0804")
        fields = await asyncio.to_thread(probe, port, "--meter", "2", "--profile", "kamstrup_multical_601")
        dead = await asyncio.to_thread(probe, port, "--meter", "7", "--timeout", "0.1")
    assert records.returncode == 0, records.stderr
    assert records.stdout.startswith(
        "meter 068558172D2C0804: KAM, version 8, medium heat (outlet), 1 telegram(s)"
    )
    assert any(
        line.split()[:3] == ["1", "04", "06"] and "37351000" in line for line in records.stdout.splitlines()
    )
    assert fields.returncode == 0, fields.stderr
    assert "energy_kwh = 37351.0" in fields.stdout.splitlines()
    assert dead.returncode == 75
    assert dead.stderr.strip().endswith(
        "M-Bus line " + port + ", primary address 7: no answer to SND_NKE within 0.1 s"
    )


def test_probe_mbus_mistakes_exit_2_with_the_fix() -> None:
    missing = _citygw("probe", "--mbus", "--scan", "primary")
    assert missing.returncode == 2
    assert "--mbus needs --port" in missing.stderr
    both = _citygw("probe", "--mbus", "--port", "socket://127.0.0.1:1", "--meter", "300")
    assert both.returncode == 2
    assert "primary address 300 is outside 0..250" in both.stderr
    bad_range = _citygw(
        "probe", "--mbus", "--port", "socket://127.0.0.1:1", "--scan", "primary", "--addresses", "5-300"
    )
    assert bad_range.returncode == 2
    assert "--addresses '5-300': write FIRST-LAST within 0-250" in bad_range.stderr


def test_serve_mbus_names_a_capture_it_cannot_use() -> None:
    missing = _citygw("serve", "--mbus", "no-such-meter.hex:5")
    assert missing.returncode == 2
    assert "--mbus: [Errno 2] No such file or directory: 'no-such-meter.hex'" in missing.stderr
    bad = _citygw("serve", "--mbus", f"{CAPTURES / 'abb_delta.hex'}:five")
    assert bad.returncode == 2
    assert "write CAPTURE.hex[:PRIMARY[:SPLIT]], e.g. meter.hex:5:10" in bad.stderr
