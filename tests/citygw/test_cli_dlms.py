"""``citygw probe --dlms`` and ``citygw serve --dlms``: a meter's fields, clock and load profile against a
simulated meter, in a subprocess; wrong passwords, dead meters and mistakes exit with one clear line."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from firmware_bridge.simulators.dlms import DlmsMeterSimulator, demo_registers, serve_dlms_pty
from tests.citygw.test_cli import _citygw

PASSWORD = "12345678"


def probe(port: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _citygw(
        "probe", "--dlms", "--port", port, "--profile", "generic_dlms_meter", "--timeout", "0.3", *args
    )


async def test_probe_shows_a_meters_fields_clock_and_load_profile() -> None:
    meter = DlmsMeterSimulator(demo_registers(), physical=17, password=PASSWORD)
    for _ in range(3):
        meter.tick()
    async with serve_dlms_pty([meter]) as port:
        good = await asyncio.to_thread(
            probe, port, "--physical", "17", "--password", PASSWORD, "--load-profile", "1"
        )
        wrong = await asyncio.to_thread(probe, port, "--physical", "17", "--password", "00000000")
        absent = await asyncio.to_thread(probe, port, "--physical", "18")
    assert good.returncode == 0, good.stderr
    lines = good.stdout.splitlines()
    assert lines[:5] == [
        "energy_import_kwh = 12346.428",
        "energy_export_kwh = 1.0",
        "power_import_w = 230.5",
        "voltage_l1_v = 230.1",
        "current_l1_a = 1.05",
    ]
    assert lines[5].startswith("clock: ")
    assert "load profile 1.0.99.1.0.255: 3 row(s)" in lines  # the last hour's rows
    assert wrong.returncode == 1
    assert "meter 17/1 (client 17, LLS password): AARQ: wrong password" in wrong.stderr
    assert absent.returncode == 75
    assert absent.stderr.strip().endswith(
        "meter 18/1 (client 16, no security): no answer to SNRM within 0.3 s"
    )


def test_probe_dlms_mistakes_exit_2_with_the_fix() -> None:
    missing = _citygw("probe", "--dlms", "--profile", "generic_dlms_meter")
    assert missing.returncode == 2
    assert "--dlms needs --port" in missing.stderr
    modbus = _citygw("probe", "--dlms", "--port", "socket://127.0.0.1:1", "--profile", "eastron_sdm120")
    assert modbus.returncode == 2
    assert "needs a dlms profile" in modbus.stderr
    wrapper = _citygw(
        "probe", "--dlms", "--port", "/dev/null", "--transport", "wrapper", "--profile", "generic_dlms_meter"
    )
    assert wrapper.returncode == 2
    assert "--transport wrapper runs on TCP" in wrapper.stderr


def test_serve_dlms_answers_on_tcp_with_the_wrapper() -> None:
    serve = subprocess.Popen(
        [sys.executable, "-m", "citygw.cli", "serve", "--dlms", "--tcp", "127.0.0.1:0", "--duration", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        banner = serve.stdout.readline()
        assert banner.startswith("DLMS meter (wrapper, no security) on socket://127.0.0.1:"), banner
        url = banner.split()[-1]
        result = _citygw(
            "probe", "--dlms", "--port", url, "--transport", "wrapper", "--profile", "generic_dlms_meter"
        )
    finally:
        serve.terminate()
        serve.wait(10)
    assert result.returncode == 0, result.stderr
    assert "voltage_l1_v = 230.1" in result.stdout.splitlines()
