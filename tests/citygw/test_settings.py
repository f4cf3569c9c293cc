"""One way to configure every service (citygw/contract/settings.py): defaults < file < environment
< command line, errors naming the setting, its source and the fix, and docs/configuration.md's table
equal to the models."""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

import pytest

from api.settings import ApiSettings
from citygw.cli import build_parser, main
from citygw.contract.settings import (
    ServiceSettings,
    SettingsError,
    add_arguments,
    load,
    load_from_args,
)
from citygw.settings_table import markdown_table, service_models
from collector.owners import OwnerPolicy
from collector.settings import CollectorSettings
from edge.config_file import load_agent_config
from edge.launcher import Launcher
from edge.releases import Releases
from edge.settings import EdgeSettings

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "configuration.md"
EXAMPLE_AGENT = ROOT / "edge" / "examples" / "agent.yaml"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CITYGW_* of the machine running the tests takes part."""
    for name in list(os.environ):
        if name.startswith("CITYGW_"):
            monkeypatch.delenv(name)


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_the_table_in_the_docs_is_the_models() -> None:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- settings table[^>]*-->\n(.*?)\n<!-- end of settings table -->", text, re.S)
    assert found, "docs/configuration.md lost its table's markers"
    assert found.group(1) == markdown_table(), "regenerate it: python -m citygw.settings_table"
    assert text.count("| setting | service |") == 1  # one table


def test_every_service_has_a_row_per_setting_with_every_name() -> None:
    rows = markdown_table().splitlines()[2:]
    expected = sum(len(model.model_fields) for model in service_models())
    assert len(rows) == expected
    assert (
        "| collector_owners | collector | `collector_owners` | `CITYGW_COLLECTOR_OWNERS` | `--owners` |"
        in (markdown_table())
    )
    assert "| gil_switch_interval_s | collector |" in markdown_table()  # the process tuning too


def test_the_docs_example_file_loads(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", text, re.S)
    assert example
    path = tmp_path / "api.toml"
    path.write_text(example.group(1), encoding="utf-8")
    settings = load(ApiSettings, file=path)
    assert settings.cors_origins == ("https://maps.example.org",)
    assert settings.source("alert_interval_s").kind == "file"


@pytest.mark.parametrize(
    ("command", "model", "name", "flag", "values", "expected"),
    [
        (("api", "run"), ApiSettings, "api_port", "--port", ("7001", "7002", "7003"), (7001, 7002, 7003)),
        (("api", "run"), ApiSettings, "city", "--city", ("kyiv", "odesa", "lviv"), ("kyiv", "odesa", "lviv")),
        (
            ("collector", "run"),
            CollectorSettings,
            "collector_owners",
            "--owners",
            ("known", "strict", "off"),
            (OwnerPolicy.KNOWN, OwnerPolicy.STRICT, OwnerPolicy.OFF),
        ),
        (
            ("collector", "run"),
            CollectorSettings,
            "gc_young_threshold",
            "--gc-young-threshold",
            ("1000", "2000", "0"),
            (1000, 2000, 0),
        ),
    ],
)
@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_file_then_environment_then_command_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: tuple[str, ...],
    model: type[ServiceSettings],
    name: str,
    flag: str,
    values: tuple[str, str, str],
    expected: tuple[object, object, object],
    suffix: str,
) -> None:
    from_file, from_env, from_cli = values
    path = tmp_path / f"settings{suffix}"
    path.write_text(f'{name} = "{from_file}"\n' if suffix == ".toml" else f"{name}: '{from_file}'\n")
    base = [*command, "--config", str(path)]

    settings = load_from_args(_parse(*base), model)
    assert (getattr(settings, name), settings.source(name).kind) == (expected[0], "file")
    monkeypatch.setenv(model.env_name(name), from_env)
    settings = load_from_args(_parse(*base), model)
    assert (getattr(settings, name), str(settings.source(name))) == (
        expected[1],
        f"environment {model.env_name(name)}",
    )
    settings = load_from_args(_parse(*base, flag, from_cli), model)
    assert (getattr(settings, name), str(settings.source(name))) == (expected[2], f"command line {flag}")
    assert settings.describe("log_level").startswith("log_level (default; set it with key log_level")


def test_a_yes_no_setting_has_both_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYGW_ACKS", "false")
    assert not load_from_args(_parse("collector", "run"), CollectorSettings).acks
    assert load_from_args(_parse("collector", "run", "--acks"), CollectorSettings).acks
    monkeypatch.delenv("CITYGW_ACKS")
    assert not load_from_args(_parse("collector", "run", "--no-acks"), CollectorSettings).acks


@pytest.mark.parametrize(
    ("where", "says"),
    [
        (
            "file",
            "api_port (file {file}, key api_port): Input should be less than or equal to 65535; "
            "fix: change key api_port in {file}",
        ),
        (
            "environment",
            "api_port (environment CITYGW_API_PORT): Input should be less than or equal to 65535; "
            "fix: change or unset CITYGW_API_PORT",
        ),
        (
            "command line",
            "api_port (command line --port): Input should be less than or equal to 65535; fix: change --port",
        ),
    ],
)
def test_a_bad_value_names_the_setting_its_source_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str, says: str
) -> None:
    path = tmp_path / "api.toml"
    path.write_text("api_port = 70000\n" if where == "file" else "")
    if where == "environment":
        monkeypatch.setenv("CITYGW_API_PORT", "70000")
    argv = ["api", "run", "--config", str(path)] + (["--port", "70000"] if where == "command line" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "citygw: invalid api settings:" in err
    assert says.format(file=path) in err


@pytest.mark.parametrize(
    ("model", "setting", "value", "says"),
    [
        (
            CollectorSettings,
            "broker_url",
            "http://broker",
            "broker_url (environment CITYGW_BROKER_URL): broker URL: unknown scheme 'http'",
        ),
        (CollectorSettings, "collector_owners", "yes", "Input should be 'off', 'known' or 'strict'"),
        (
            CollectorSettings,
            "gil_switch_interval_s",
            "1",
            "gil_switch_interval_s (environment "
            "CITYGW_GIL_SWITCH_INTERVAL_S): Input should be less than or equal to 0.1",
        ),
        (
            EdgeSettings,
            "broker_url",
            "http://pi:s3cret@broker",
            "broker_url (environment CITYGW_BROKER_URL): scheme must be mqtt:// or mqtts://",
        ),
        (EdgeSettings, "log_level", "LOUD", "log_level (environment CITYGW_LOG_LEVEL): String should match"),
    ],
)
def test_each_service_names_a_bad_environment_variable(
    monkeypatch: pytest.MonkeyPatch, model: type[ServiceSettings], setting: str, value: str, says: str
) -> None:
    monkeypatch.setenv(model.env_name(setting), value)
    with pytest.raises(SettingsError) as refused:
        load(model, overrides={"agent_config": EXAMPLE_AGENT} if model is EdgeSettings else None)
    assert says in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_a_setting_that_is_not_one_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text("store_url: sqlite:///x.sqlite\nmetrics_prot: 9108\n")
    with pytest.raises(SettingsError) as refused:
        load(CollectorSettings, file=path)
    assert str(refused.value) == (
        f"collector settings file {path}:\n"
        "  metrics_prot: no such collector setting; fix: did you mean metrics_port?"
    )


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("api.toml", "api_port = [", "not valid TOML"),
        ("api.yaml", "- a\n- b\n", "the top level is not a table of settings"),
        ("api.ini", "api_port=1", "name it *.toml or *.yaml"),
        ("missing.toml", None, "cannot read it (No such file or directory)"),
    ],
)
def test_a_file_that_is_no_settings_file_is_named(
    tmp_path: Path, name: str, text: str | None, says: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(SettingsError, match=re.escape(says)) as refused:
        load(ApiSettings, file=path)
    assert str(path) in str(refused.value)


def test_a_check_of_two_settings_names_where_each_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "api.toml"
    path.write_text("alert_ph_min = 9.0\n")
    monkeypatch.setenv("CITYGW_ALERT_PH_MAX", "8")
    with pytest.raises(SettingsError) as refused:
        load(ApiSettings, file=path)
    assert (
        f"alert_ph_min (9) must be below alert_ph_max (8) [alert_ph_min from file {path}, key alert_ph_min; "
        "alert_ph_max from environment CITYGW_ALERT_PH_MAX]"
    ) in str(refused.value)
    with pytest.raises(SettingsError) as unset:
        load(ApiSettings, cli={"oidc_issuer": "https://sso.example"})
    assert (
        "oidc_issuer is set but not oidc_audience: both are checked [oidc_issuer from command line "
        "--oidc-issuer; oidc_audience not set (key oidc_audience in the settings file, CITYGW_OIDC_AUDIENCE, "
        "--oidc-audience)]"
    ) in str(unset.value)


def test_the_edge_broker_url_file_then_environment_then_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent config's broker.url, then CITYGW_BROKER_URL, then --broker."""

    def broker(*argv: str) -> str:
        settings = load_from_args(_parse("edge", "run", "--config", str(EXAMPLE_AGENT), *argv), EdgeSettings)
        return load_agent_config(settings.agent_config, broker_url=settings.broker_url).broker.url

    in_file = broker()
    monkeypatch.setenv("CITYGW_BROKER_URL", "mqtts://agent:pw@env.example:8883")
    assert broker() == "mqtts://agent:pw@env.example:8883" != in_file
    assert broker("--broker", "mqtt://cli.example:1883") == "mqtt://cli.example:1883"


def test_the_edge_agent_config_is_required_and_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as refused:
        load_from_args(_parse("edge", "run"), EdgeSettings)
    assert "agent_config (not set): Field required; fix: set it with CITYGW_AGENT_CONFIG, --config" in str(
        refused.value
    )
    monkeypatch.setenv("CITYGW_AGENT_CONFIG", str(EXAMPLE_AGENT))
    assert load_from_args(_parse("edge", "launch"), EdgeSettings).agent_config == EXAMPLE_AGENT


def test_edge_launch_hands_its_settings_to_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYGW_BROKER_URL", "mqtt://env.example:1883")
    argv = ("edge", "launch", "--config", str(EXAMPLE_AGENT), "--broker", "mqtts://cli.example:8883")
    settings = load_from_args(_parse(*argv, "--log-level", "WARNING"), EdgeSettings)
    launcher = Launcher(EXAMPLE_AGENT, Releases(tmp_path / "releases"), env=settings.child_env())
    command, env, _ = launcher.command()
    assert env["CITYGW_BROKER_URL"] == "mqtts://cli.example:8883"
    assert env["CITYGW_LOG_LEVEL"] == "WARNING"
    assert command[-2:] == ["--config", str(EXAMPLE_AGENT)]  # what every release's CLI takes


def test_the_log_level_setting_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    from citygw.cli import _settings

    root = logging.getLogger()
    before = root.level
    try:
        monkeypatch.setenv("CITYGW_LOG_LEVEL", "ERROR")
        args = build_parser().parse_args(["collector", "run"])
        _settings(args, CollectorSettings)
        assert root.level == logging.ERROR
        args = build_parser().parse_args(["collector", "run", "--log-level", "DEBUG"])
        _settings(args, CollectorSettings)
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(before)


def test_every_generated_flag_has_printable_help() -> None:
    for model in service_models():
        parser = argparse.ArgumentParser()
        add_arguments(parser, model)
        text = parser.format_help()
        for name in model.model_fields:
            assert model.flag(name) in text
            assert model.env_name(name) in text


@pytest.mark.parametrize(
    ("files", "model"),
    [
        (("deploy/systemd/citygw-api.service", "deploy/compose/api.env.example"), ApiSettings),
        (
            ("deploy/systemd/citygw-collector@.service", "deploy/compose/collector.env.example"),
            CollectorSettings,
        ),
        (("deploy/edge/citygw-edge.service",), EdgeSettings),
    ],
)
def test_the_variables_deploy_sets_are_settings_of_the_service(
    files: tuple[str, ...], model: type[ServiceSettings]
) -> None:
    """The names the units and compose files use keep working: each is a setting of its service."""
    known = {model.env_name(name) for name in model.model_fields}
    for file in files:
        used = set(re.findall(r"\bCITYGW_[A-Z0-9_]*[A-Z0-9]", (ROOT / file).read_text(encoding="utf-8")))
        assert used, file
        assert used <= known, f"{file}: {sorted(used - known)} are no {model.service} settings"


def test_only_the_service_run_imports_its_settings_model() -> None:
    """`citygw --help` and the tools stay fast on a Pi: a model imports its room (api/, edge/)."""
    import subprocess
    import sys

    code = (
        "import sys; from citygw.cli import build_parser; build_parser({argv!r}); "
        "models = ('api.settings', 'collector.settings', 'edge.settings'); "
        "print(sorted(m for m in models if m in sys.modules))"
    )
    for argv, imported in (
        (["keys", "list"], "[]"),
        (["-v", "collector", "run", "--store", "sqlite:///x"], "['collector.settings']"),
    ):
        result = subprocess.run(
            [sys.executable, "-c", code.format(argv=argv)], capture_output=True, text=True, check=True
        )
        assert result.stdout.strip() == imported


def test_api_run_serves_as_its_settings_file_says(tmp_path: Path) -> None:
    """`citygw api run --config FILE`: the file's port and store, the environment's city, the flag's host."""
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from tests.services import free_port

    port = free_port()
    path = tmp_path / "api.toml"
    path.write_text(
        f'api_port = {port}\nstore_url = "sqlite:///{tmp_path}/store.sqlite"\n'
        f'registry_url = "sqlite:///{tmp_path}/registry.sqlite"\nhost = "typo"\n'
    )
    refused = subprocess.run(
        [sys.executable, "-m", "citygw.cli", "api", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "host: no such api setting; fix: did you mean" in refused.stderr
    path.write_text(path.read_text().replace('host = "typo"\n', 'city = "kyiv"\n'))
    # CITYGW_API_PORT beats the file's api_port, and loses to --port.
    env = dict(os.environ, CITYGW_OPEN_TELEMETRY="true", CITYGW_API_PORT="1")
    argv = ["api", "run", "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([sys.executable, "-m", "citygw.cli", *argv], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/devices", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the API did not answer within 60 s"
                time.sleep(0.3)
        assert response.status_code == 200  # open telemetry, from the environment: no key asked
        assert (tmp_path / "registry.sqlite").exists()  # the file's registry
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
