"""The citygw command line: probe against a simulated device, and config errors exit with a clear message."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from citygw.cli import main
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_serial_pty, serve_tcp
from tests.services import Mosquitto, free_port


def _citygw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citygw.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


async def test_probe_shows_a_cdab_float_under_cdab() -> None:
    meter = ModbusDeviceSimulator("tuf_2000m", unit=3, values={"flow_rate": 12.5})
    async with serve_tcp([meter]) as endpoint:
        raw = await asyncio.to_thread(
            _citygw,
            "probe",
            "--tcp",
            f"127.0.0.1:{endpoint.port}",
            "--unit",
            "3",
            "--address",
            "0",
            "--count",
            "2",
        )
        decoded = await asyncio.to_thread(
            _citygw, "probe", "--tcp", f"127.0.0.1:{endpoint.port}", "--unit", "3", "--profile", "tuf_2000m"
        )
    assert raw.returncode == 0, raw.stderr
    [cdab_line] = [line for line in raw.stdout.splitlines() if "CDAB" in line]
    assert cdab_line.split()[-1] == "12.5"
    assert decoded.returncode == 0, decoded.stderr
    assert any("flow_rate" in line and "12.5" in line for line in decoded.stdout.splitlines()), decoded.stdout


def test_probe_of_a_dead_endpoint_is_one_line_and_exit_75() -> None:
    port = free_port()
    result = _citygw("probe", "--tcp", f"127.0.0.1:{port}", "--timeout", "0.3")
    # Before: pymodbus's "Failed to connect" and "Repeating...." lines, then "citygw probe: ...", exit 1.
    _only_line(
        result,
        75,
        f"citygw: unit 1 read holding 0+10 on tcp://127.0.0.1:{port}: not sent, line unavailable: "
        "connection refused",
    )


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (("--serial", "/dev/no-such-adapter"), "citygw: --serial /dev/no-such-adapter: no such port"),
        (("--tcp", "no-such-host.invalid:502"), "citygw: --tcp no-such-host.invalid:502: "),
    ],
)
def test_probe_of_a_port_or_host_that_is_not_there_is_one_line_and_exit_2(
    args: tuple[str, ...], start: str
) -> None:
    _only_line(_citygw("probe", *args, "--timeout", "0.3"), 2, start)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("probe", "--tcp", "nonsense"), "expected HOST:PORT"),
        (("probe", "--tcp", "127.0.0.1:502", "--profile", "no_such_device"), "no_such_device"),
        (("collector", "run", "--store", "mysql://x"), "store_url (command line --store)"),
    ],
)
def test_bad_settings_exit_2_with_the_fix(args: tuple[str, ...], needle: str) -> None:
    result = _citygw(*args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_edge_run_names_file_field_and_fix(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        "agent_id: depot-1\nsite: depot\nbroker: {url: mqtt://127.0.0.1:1}\njournal: j.sqlite\n"
        "lines: []\ndevices: [{id: m1, line: rs485-9, unit: 1, profile: eastron_sdm630, poll_s: 1}]\n"
    )
    result = _citygw("edge", "run", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}: devices[0].line: unknown line 'rs485-9'" in result.stderr
    assert "fix:" in result.stderr


@pytest.mark.integration
def test_services_start_as_the_documented_least_privilege_influxdb_users(tmp_path: Path) -> None:
    """docs/deploy.md: a writer for the collector, a reader for Grafana; not admins (CREATE DATABASE)."""
    from citygw.cli import open_store_for_service
    from citygw.contract.errors import ConfigError
    from tests.collector.store.auth_influxdb import WRITER, AuthInfluxDB

    server = AuthInfluxDB(tmp_path / "influxdb")
    server.start()
    try:
        server.create_users()
        server.create_database("citygw")
        server.grant("citygw")
        open_store_for_service(server.store_url("citygw", WRITER)).close()
        with pytest.raises(
            ConfigError, match='only an admin may create it: as an admin run CREATE DATABASE "gone"'
        ):
            open_store_for_service(server.store_url("gone", WRITER))
        result = _citygw("collector", "run", "--store", server.store_url("gone", WRITER))
    finally:
        server.stop()
    assert result.returncode == 2, result.stderr
    assert "store_url (command line --store)" in result.stderr
    assert "GRANT WRITE" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("how", ["option", "environment"])
def test_collector_run_serves_its_metrics_on_the_port_asked(
    mosquitto: Mosquitto, tmp_path: Path, how: str
) -> None:
    """docs/deploy.md: scrape the collector's /metrics; `--metrics-port` or CITYGW_METRICS_PORT serves it."""
    port = free_port()
    args = ["collector", "run", "--broker", mosquitto.url, "--store", f"sqlite:///{tmp_path}/store.sqlite"]
    env = dict(os.environ, CITYGW_METRICS_HOST="127.0.0.1")
    if how == "option":
        args += ["--metrics-port", str(port)]
    else:
        env["CITYGW_METRICS_PORT"] = str(port)
    proc = subprocess.Popen([sys.executable, "-m", "citygw.cli", *args], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no /metrics within 30 s"
            time.sleep(0.2)
        assert response.status_code == 200
        assert "citygw_collector_" in response.text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_a_bad_metrics_port_exits_2() -> None:
    result = _citygw("collector", "run", "--metrics-port", "http")
    assert result.returncode == 2
    assert "metrics_port (command line --metrics-port): Input should be a valid integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_api_port_in_the_environment_fails_only_the_api_and_says_so() -> None:
    env = dict(os.environ, CITYGW_API_PORT="abc")
    helped = _citygw("--help", env=env)
    assert helped.returncode == 0, helped.stderr
    result = _citygw("api", "run", env=env)
    assert result.returncode == 2
    assert "api_port (environment CITYGW_API_PORT): Input should be a valid integer" in result.stderr
    assert "fix: change or unset CITYGW_API_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_api_port_out_of_range_exits_2() -> None:
    result = _citygw("api", "run", "--port", "99999")
    assert result.returncode == 2
    assert "api_port (command line --port): Input should be less than or equal to 65535" in result.stderr
    assert "Traceback" not in result.stderr


def test_collector_run_says_once_why_it_cannot_reach_the_broker(tmp_path: Path) -> None:
    """Paho retries every 1-10 s in silence: the first failure is logged, with host, port and reason."""
    port = free_port()
    stderr = tmp_path / "stderr"
    args = [
        "collector",
        "run",
        "--broker",
        f"mqtt://127.0.0.1:{port}",
        "--store",
        f"sqlite:///{tmp_path}/s.sqlite",
    ]
    with stderr.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "citygw.cli", *args], stderr=sink)
    try:
        needle = f"cannot connect to the broker at 127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while needle not in stderr.read_text():
            assert proc.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, f"nothing said within 10 s: {stderr.read_text()!r}"
            time.sleep(0.1)
        time.sleep(3)  # paho retries after 1 s, 2 s, ...: still one line (at most one a minute)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    [line] = [line for line in stderr.read_text().splitlines() if needle in line]
    assert "Connection refused" in line


def _one_line(result: subprocess.CompletedProcess[str], code: int, start: str) -> str:
    """The command exited ``code`` with one ``citygw: …`` line starting with ``start``, no traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("citygw: ")]
    assert line.startswith(start), line
    return line


def _only_line(result: subprocess.CompletedProcess[str], code: int, start: str) -> str:
    """As ``_one_line``, and nothing else on stderr (no log line, no traceback) nor on stdout."""
    line = _one_line(result, code, start)
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""
    return line


@pytest.mark.parametrize(
    ("option", "code", "start", "why"),
    [
        ("--store", 75, "citygw: store at influxdb://demo:***@127.0.0.1:{port}/demo: ", "Connection refused"),
        ("--broker", 75, "citygw: broker at mqtt://demo:***@127.0.0.1:{port}: ", "Connection refused"),
        (
            "--store",
            2,
            "citygw: --store: store URL 'mysql://demo:***@127.0.0.1:{port}/demo'",
            "unknown scheme",
        ),
        ("--broker", 2, "citygw: --broker: broker URL: unknown scheme 'http'", "expected mqtt://"),
    ],
)
def test_a_demo_that_cannot_use_its_store_or_broker_is_one_line_before_anything_starts(
    tmp_path: Path, option: str, code: int, start: str, why: str
) -> None:
    port = free_port()
    url = {
        ("--store", 75): f"influxdb://demo:s3cret@127.0.0.1:{port}/demo",
        ("--broker", 75): f"mqtt://demo:s3cret@127.0.0.1:{port}",
        ("--store", 2): f"mysql://demo:s3cret@127.0.0.1:{port}/demo",
        ("--broker", 2): f"http://127.0.0.1:{port}",
    }[option, code]
    demo = ("demo", option, url, "--workdir", str(tmp_path), "--port", str(free_port()), "--duration", "5")
    # Before: a 30-100 line traceback, or (broker) a demo retrying in silence.
    line = _only_line(_citygw(*demo), code, start.format(port=port))
    assert why in line
    assert "s3cret" not in line
    assert list(tmp_path.iterdir()) in ([], [tmp_path / ".lock"])  # nothing was started


def test_keys_print_the_key_and_nothing_of_the_registry_migration(tmp_path: Path) -> None:
    registry = f"sqlite:///{tmp_path}/registry.sqlite"
    made = _citygw("keys", "create", "--name", "Lviv SCADA", "--role", "utility", "--registry", registry)
    assert made.returncode == 0, made.stderr
    assert made.stderr == ""  # before: six "alembic.runtime.migration" lines of a new registry
    created, token = made.stdout.splitlines()
    assert created.startswith("created key ")
    assert token.startswith("cgw_")
    listed = _citygw("keys", "list", "--registry", registry)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert "Lviv SCADA" in listed.stdout


@pytest.mark.parametrize("command", ["api", "collector"])
def test_an_unreachable_store_is_one_line_and_exit_75_without_the_password(command: str) -> None:
    port = free_port()
    result = _citygw(command, "run", "--store", f"influxdb://writer:s3cret@127.0.0.1:{port}/citygw")
    line = _one_line(result, 75, f"citygw: store at influxdb://writer:***@127.0.0.1:{port}/citygw: ")
    assert "Connection refused" in line
    assert "s3cret" not in result.stderr


def test_an_unreachable_postgresql_registry_is_one_line_and_exit_75() -> None:
    port = free_port()
    result = _citygw(
        "keys", "list", "--registry", f"postgresql+psycopg://admin:s3cret@127.0.0.1:{port}/citygw"
    )
    line = _one_line(result, 75, f"citygw: registry at postgresql+psycopg://127.0.0.1:{port}/citygw: ")
    assert "Connection refused" in line
    assert "s3cret" not in result.stderr


def test_a_sqlite_registry_whose_folder_cannot_be_made_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")  # stands where the folder should be (root may make any folder)
    result = _citygw("keys", "list", "--registry", f"sqlite:///{tmp_path}/a-file/keys/registry.sqlite")
    line = _one_line(result, 2, f"citygw: registry at sqlite:///{tmp_path}/a-file/keys/registry.sqlite: ")
    assert "Not a directory" in line


def test_probe_of_a_count_no_read_may_ask_for_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--tcp", f"127.0.0.1:{free_port()}", "--count", "0", "--timeout", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "citygw: probe: count 0 is outside 1..125" in err
    assert "Traceback" not in err


def test_the_collectors_series_budget_comes_from_the_option_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from citygw.cli import build_parser
    from citygw.contract.settings import load_from_args
    from collector.series_budget import MAX_SERIES_PER_AGENT
    from collector.settings import CollectorSettings

    def budget(*args: str) -> int:
        parsed = build_parser().parse_args(["collector", "run", *args])
        return load_from_args(parsed, CollectorSettings).max_series_per_agent

    assert budget() == MAX_SERIES_PER_AGENT
    assert budget("--max-series-per-agent", "250") == 250
    monkeypatch.setenv("CITYGW_MAX_SERIES_PER_AGENT", "40")
    assert budget() == 40
    assert budget("--max-series-per-agent", "250") == 250
    result = _citygw("collector", "run", "--max-series-per-agent", "0")
    assert result.returncode == 2
    assert (
        "max_series_per_agent (command line --max-series-per-agent): "
        "Input should be greater than or equal to 1" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_collector_run_names_the_broker_tls_file_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'telemetry.sqlite'}"
    missing = tmp_path / "svc.collector-1.crt"
    files = ["--broker-cert-file", str(missing), "--broker-key-file", str(missing)]
    for broker, says in (
        (
            "mqtts://127.0.0.1:8884",
            f"broker_cert_file (command line --broker-cert-file): {missing}, "
            f"broker_key_file (command line --broker-key-file): {missing}: ",
        ),
        ("mqtt://127.0.0.1:1883", "need mqtts://"),
    ):
        code = main(["collector", "run", "--broker", broker, "--store", store, *files])
        assert code == 2
        assert says in capsys.readouterr().err
    code = main(["collector", "run", "--broker", "mqtts://127.0.0.1:8884", "--store", store, *files[:2]])
    assert code == 2
    assert "a client certificate needs its key" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize("how", ["option", "environment"])
def test_collector_run_holds_agents_to_their_configs_when_asked(
    mosquitto: Mosquitto, tmp_path: Path, how: str
) -> None:
    """docs/deploy.md, "Ownership": `--owners strict` or CITYGW_COLLECTOR_OWNERS=strict; an agent
    without a pushed config is refused (not_owned), as the collector's dead letters show."""
    from collector.store.sqlite import SqliteStore
    from tests.collector.helpers import END, Agent, wait_until

    store_path = tmp_path / "store.sqlite"
    args = ["collector", "run", "--broker", mosquitto.url, "--store", f"sqlite:///{store_path}"]
    env = dict(os.environ)
    if how == "option":
        args += ["--owners", "strict"]
    else:
        env["CITYGW_COLLECTOR_OWNERS"] = "strict"
    proc = subprocess.Popen([sys.executable, "-m", "citygw.cli", *args], env=env, stderr=subprocess.PIPE)
    agent = Agent(mosquitto)
    try:
        wait_until(store_path.exists, "the store created", timeout=30)
        store = SqliteStore(store_path)
        try:
            deadline = time.monotonic() + 30
            # Until the collector is subscribed its readings reach nobody: send one every 0.3 s.
            while not (letters := store.range(measurement="dead_letter", start_ms=0, end_ms=END)):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "no dead letter within 30 s"
                agent.publish(agent.batch(1))
                time.sleep(0.3)
            assert {row.tags["reason"] for row in letters} == {"not_owned"}
            assert store.range(measurement="electricity", start_ms=0, end_ms=END) == []
        finally:
            store.close()
    finally:
        agent.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""


def test_a_bad_ownership_policy_exits_2_and_names_the_choices() -> None:
    result = _citygw("collector", "run", env=dict(os.environ, CITYGW_COLLECTOR_OWNERS="yes"))
    assert result.returncode == 2
    assert (
        "collector_owners (environment CITYGW_COLLECTOR_OWNERS): Input should be 'off', 'known' or 'strict'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


async def test_probe_captures_a_case_that_serve_replays_and_a_second_capture_equals(tmp_path: Path) -> None:
    meter = ModbusDeviceSimulator("eastron_sdm630", unit=3, values={"voltage_l1": 230.5})
    async with serve_tcp([meter]) as endpoint:
        first = await asyncio.to_thread(
            _citygw,
            *("probe", "--tcp", f"127.0.0.1:{endpoint.port}", "--unit", "3", "--profile", "eastron_sdm630"),
            *("--capture", str(tmp_path / "first"), "--origin", "simulator", "--operator", "pytest"),
        )
    assert first.returncode == 0, first.stderr
    case = tmp_path / "first" / "testcases" / "eastron_sdm630"
    assert f"wrote {case}: 4 reads (0 refused, 0 unanswered), 16 fields decoded, 0 not" in first.stdout
    assert any(line.startswith("voltage_l1") and "230.5 V" in line for line in first.stdout.splitlines())
    info = yaml.safe_load((case / "capture.yaml").read_text())
    assert (info["origin"], info["operator"], info["unit"]) == ("simulator", "pytest", 3)
    profile_bytes = await asyncio.to_thread(Path("firmware_bridge/profiles/eastron_sdm630.yaml").read_bytes)
    assert info["profile_sha256"] == hashlib.sha256(profile_bytes).hexdigest()
    assert info["tool"].startswith("citygw ")

    port = free_port()
    serve = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "citygw.cli", "serve", "--replay", str(case), "--tcp", f"127.0.0.1:{port}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert serve.stdout is not None
        banner = (await asyncio.wait_for(serve.stdout.readline(), 30)).decode()
        assert banner.startswith(f"replaying {case} (eastron_sdm630, simulator capture of ")
        assert banner.rstrip().endswith(f"as unit 3 on tcp://127.0.0.1:{port}")
        second = await asyncio.to_thread(
            _citygw,
            *("probe", "--tcp", f"127.0.0.1:{port}", "--unit", "3", "--profile", "eastron_sdm630"),
            *("--capture", str(tmp_path / "second")),
        )
    finally:
        serve.terminate()
        _, errors = await asyncio.wait_for(serve.communicate(), 30)
    assert second.returncode == 0, second.stderr
    assert serve.returncode == 0, errors

    def reads(folder: Path) -> list[dict[str, object]]:
        lines = (folder / "testcases" / "eastron_sdm630" / "capture.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "ms"} for line in lines]

    assert reads(tmp_path / "second") == reads(tmp_path / "first")
    again = tmp_path / "second" / "testcases" / "eastron_sdm630"
    assert (again / "expected.yaml").read_text() == (case / "expected.yaml").read_text()
    assert yaml.safe_load((again / "capture.yaml").read_text())["origin"] == "field"


def test_probe_capture_needs_a_profile_and_never_overwrites(tmp_path: Path) -> None:
    result = _citygw("probe", "--tcp", "127.0.0.1:1", "--capture", str(tmp_path))
    _only_line(result, 2, "citygw: --capture needs --profile")
    case = tmp_path / "testcases" / "tuf_2000m"
    case.mkdir(parents=True)
    (case / "capture.jsonl").write_text("")
    result = _citygw("probe", "--tcp", "127.0.0.1:1", "--profile", "tuf_2000m", "--capture", str(tmp_path))
    _only_line(result, 2, f"citygw: --capture: {case} already holds a case; choose --case NAME")


def test_serve_of_a_folder_that_is_no_capture_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _citygw("serve", "--replay", str(tmp_path))
    _only_line(result, 2, f"citygw: {tmp_path / 'capture.yaml'}: cannot be read")


@pytest.mark.parametrize("transport", ["tcp", "serial"])
async def test_probe_scan_units_lists_the_ids_that_answer_in_one_line(transport: str) -> None:
    meter = ModbusDeviceSimulator("tuf_2000m", unit=2)
    counter = ModbusDeviceSimulator("parking_bay", unit=5)  # no holding registers: exception 02
    async with contextlib.AsyncExitStack() as stack:
        if transport == "tcp":
            endpoint = await stack.enter_async_context(serve_tcp([meter, counter]))
            where = ("--tcp", f"127.0.0.1:{endpoint.port}")
            name = f"tcp://127.0.0.1:{endpoint.port}"
        else:
            port = await stack.enter_async_context(serve_serial_pty([meter, counter]))
            where = ("--serial", port)
            name = f"{port}@9600"
        found = await asyncio.to_thread(_citygw, "probe", *where, "--scan-units", "1-6", "--timeout", "0.1")
        none = await asyncio.to_thread(_citygw, "probe", *where, "--scan-units", "7-8", "--timeout", "0.1")
    assert found.returncode == 0, found.stderr
    assert found.stdout == f"2 of 6 unit ids answer on {name}: 2, 5 (exception 02)\n"
    _only_line(none, 75, f"citygw: no unit id of 7-8 answers on {name} within 0.1 s")


async def test_probe_shows_64_bit_and_text_views() -> None:
    console = ModbusDeviceSimulator("onboard_console")
    text = next(s for s in console.profile.registers if s.type == "string")
    console.set(text.field, "DEPOT")
    async with serve_tcp([console]) as endpoint:
        result = await asyncio.to_thread(
            _citygw,
            *("probe", "--tcp", f"127.0.0.1:{endpoint.port}", "--table", text.table),
            *("--address", str(text.address), "--count", str(text.register_count)),
        )
    assert result.returncode == 0, result.stderr
    assert "order                   u64                   i64  f64" in result.stdout
    (ascii_line,) = [line for line in result.stdout.splitlines() if "DEPOT" in line]
    assert ascii_line.startswith(f"ascii AB from {text.address}: 'DEPOT")


def test_dashboards_refuse_a_site_profile_that_gives_a_stored_field_another_meaning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "meter.yaml").write_text(
        "model: meter\nvendor: x\nsource: x\nverified: modelled\nmeasurement: water\nregisters:\n"
        "  - {field: flow_rate, role: flow_rate, table: input, address: 0, type: f32, unit: l/s}\n",
        encoding="utf-8",
    )
    assert (
        main(["dashboards", "preview", "--profiles", str(tmp_path), "--store", "influxdb://127.0.0.1:1/x"])
        == 2
    )
    err = capsys.readouterr().err
    assert "field flow_rate of measurement water is role flow_rate unit l/s" in err
    assert "rename the field in one of the profiles" in err
