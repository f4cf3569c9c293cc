"""deploy/compose: parses, has the whole server stack, and every file it mounts or builds exists.

Docker cannot run on these machines; what can go wrong without it (a typo in a path, a
service missing, a secret in the file) is checked here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.collector.store.auth_influxdb import ADMIN, AuthInfluxDB
from tests.deploy.broker import ComposeMosquitto, Session

COMPOSE = Path(__file__).parents[2] / "deploy" / "compose"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return data


def test_the_stack_has_every_server_service() -> None:
    services = compose()["services"]
    started = {name for name, service in services.items() if "profiles" not in service}
    assert started == {"mosquitto", "influxdb", "grafana", "collector", "api"}
    assert services["retention"]["profiles"] == ["tools"], "run once by hand, not by `up`"


def test_mounted_and_built_files_exist() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name}: {source} does not exist"
        if "build" in service:
            context = COMPOSE / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), name
            assert (context / "pyproject.toml").is_file(), name
    env_files = {service.get("env_file") for service in services.values()} - {None}
    assert env_files == {"citygw.env", "collector.env", "api.env"}
    for env_file in env_files:
        assert (COMPOSE / f"{env_file}.example").is_file(), env_file


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert not re.search(r"PASSWORD|TOKEN|SECRET", key), f"{name}: {key} belongs in citygw.env"
            assert "@" not in str(value), f"{name}: {key} has credentials in a URL"
    for example in COMPOSE.glob("*.env.example"):
        lines = example.read_text().splitlines()
        assert all(line.endswith("=") for line in lines if "PASSWORD=" in line), example.name
        for url in (line.partition("=")[2] for line in lines if "://" in line):
            assert urlsplit(url).password == "PASSWORD", f"{example.name}: {url} has a real password"


def example(service: str) -> dict[str, str]:
    """The settings of a service's env file example."""
    env_file = compose()["services"][service]["env_file"]
    lines = (COMPOSE / f"{env_file}.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_collector_and_api_each_have_their_own_broker_user_and_store_rights() -> None:
    """Users as citygw-broker-users names them: service users have a dot, no agent id has one."""
    script = (COMPOSE.parent / "mosquitto" / "citygw-broker-users").read_text()
    # The API writes transit_vehicle and command (docs/deploy.md): a read-only user would be refused.
    expected = {"collector": ("svc.collector-1", "citygw_writer"), "api": ("svc.api-1", "citygw_api")}
    for service, (broker_user, store_user) in expected.items():
        settings = example(service)
        assert urlsplit(settings["CITYGW_BROKER_URL"]).username == broker_user, service
        assert urlsplit(settings["CITYGW_STORE_URL"]).username == store_user, service
        assert f"citygw-broker-users add {service} {broker_user}" in script, f"{broker_user}: not its usage"
    assert "CITYGW_BROKER_URL" not in example("grafana"), (
        "broker URLs belong to the collector's and API's files"
    )


def test_the_influxdb_image_creates_the_users_the_services_connect_as() -> None:
    """influxdb:1.x creates INFLUXDB_WRITE_USER (WRITE on INFLUXDB_DB) and INFLUXDB_USER (READ and WRITE)."""
    users = example("influxdb")
    assert compose()["services"]["influxdb"]["environment"]["INFLUXDB_DB"] == "citygw"
    assert urlsplit(example("collector")["CITYGW_STORE_URL"]).username == users["INFLUXDB_WRITE_USER"]
    assert urlsplit(example("api")["CITYGW_STORE_URL"]).username == users["INFLUXDB_USER"]
    assert users["CITYGW_INFLUX_READER"] == users["INFLUXDB_READ_USER"], "Grafana reads as the reader"


def test_the_api_registry_is_on_a_named_volume() -> None:
    data = compose()
    api = data["services"]["api"]
    database = make_url(api["environment"]["CITYGW_REGISTRY_URL"]).database
    assert database is not None
    path = PurePosixPath(database)
    assert path.is_absolute(), "a relative SQLite path lands in the container's working directory"
    mounts = [volume.split(":") for volume in api["volumes"]]
    (volume,) = [source for source, target, *_ in mounts if path.is_relative_to(target)]
    assert volume in data["volumes"], f"{volume} is not a named volume"
    assert str(path.parent) in (COMPOSE / "Dockerfile").read_text(), "the image must own the volume's folder"


def mounted(service: str, target: str) -> Path:
    """The file of this repository a service mounts at ``target``."""
    for volume in compose()["services"][service]["volumes"]:
        source, mount, *_ = str(volume).split(":")
        if mount == target:
            return (COMPOSE / source).resolve()
    raise AssertionError(f"{service} mounts nothing at {target}")


def settings_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_the_containers_broker_listens_to_the_stack_and_publishes_only_tls() -> None:
    """The collector and API connect to mosquitto:1883: not the broker container's loopback."""
    config = mounted("mosquitto", "/mosquitto/config/mosquitto.conf")
    assert "listener 1883" in settings_lines(config), f"{config}: 1883 must listen beyond loopback"
    assert compose()["services"]["mosquitto"]["ports"] == ["8883:8883", "8884:8884"], (
        "1883 must not reach the host"
    )
    for service in ("collector", "api"):
        assert urlsplit(example(service)["CITYGW_BROKER_URL"]).port == 1883, service
    persistence = next(line for line in settings_lines(config) if line.startswith("persistence_location"))
    mounted("mosquitto", persistence.split()[1].rstrip("/"))  # on the named volume
    production = settings_lines(COMPOSE.parent / "mosquitto" / "mosquitto.conf")
    differing = set(production) ^ set(settings_lines(config))
    assert differing == {
        "listener 1883 127.0.0.1",
        "listener 1883",
        "persistence_location /var/lib/mosquitto/",
        "persistence_location /mosquitto/data/",
        "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "plugin /usr/lib/mosquitto_dynamic_security.so",
        "plugin_opt_config_file /var/lib/mosquitto/dynamic-security.json",
        "plugin_opt_config_file /mosquitto/data/dynamic-security.json",
    }, "the compose broker must keep deploy/mosquitto/mosquitto.conf's settings"


@pytest.fixture
def compose_broker(tmp_path: Path) -> Iterator[ComposeMosquitto]:
    server = ComposeMosquitto(tmp_path / "mosquitto", ["svc.collector-1"])
    server.start()
    yield server
    server.stop()


@pytest.mark.integration
def test_a_service_reaches_the_compose_broker_from_another_address(compose_broker: ComposeMosquitto) -> None:
    """127.0.0.2 stands for the collector's container: the listener of 1883 is not loopback-only."""
    session = Session(compose_broker, "svc.collector-1", host="127.0.0.2")
    session.subscribe("citygw/v1/+/telemetry")
    with pytest.raises(PermissionError, match="Not authorized"):
        Session(compose_broker, None, host="127.0.0.2")


@pytest.mark.integration
def test_the_retention_script_runs_in_the_citygw_image_on_the_stacks_network(tmp_path: Path) -> None:
    """docs/deploy.md: `docker compose run --rm retention` (the influxdb image has no Python)."""
    services = compose()["services"]
    retention = services["retention"]
    assert retention["build"] == services["collector"]["build"], "the CityGW image, which has Python"
    assert "ports" not in services["influxdb"]
    assert "INFLUXDB_ADMIN_PASSWORD" in example("influxdb")
    shell, flag, script, name = retention["entrypoint"]
    assert (shell, flag) == ("sh", "-c")
    assert "http://influxdb:8086" in script, "InfluxDB by its service name on the stack's network"
    folder = str(mounted("retention", "/citygw-influxdb"))
    # What the container runs, with this machine's Python, folder and InfluxDB ($$ is compose's $).
    server = AuthInfluxDB(tmp_path / "influxdb")
    server.start()
    try:
        server.create_users()
        command = (
            script.replace("$$", "$")
            .replace("exec python ", f"exec {sys.executable} ")
            .replace("/citygw-influxdb", folder)
            .replace("http://influxdb:8086", server.url)
        )
        env = dict(os.environ, INFLUXDB_ADMIN_USER=ADMIN[0], INFLUXDB_ADMIN_PASSWORD=ADMIN[1])
        done = subprocess.run(
            ["sh", "-c", command, name, "--backfill-days", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        policies = server.query('SHOW RETENTION POLICIES ON "citygw"')["results"][0]["series"][0]["values"]  # type: ignore[index]
    finally:
        server.stop()
    assert {row[0] for row in policies} == {"autogen", "hourly"}
