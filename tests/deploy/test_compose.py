"""deploy/compose: parses, has the whole server stack, and every file it mounts or builds exists.

Docker cannot run on these machines; what can go wrong without it (a typo in a path, a
service missing, a secret in the file) is checked here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).parents[2] / "deploy" / "compose"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return data


def test_the_stack_has_every_server_service() -> None:
    assert set(compose()["services"]) == {"mosquitto", "influxdb", "grafana", "collector", "api"}


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
    assert (COMPOSE / "citygw.env.example").is_file()


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert not re.search(r"PASSWORD|TOKEN|SECRET", key), f"{name}: {key} belongs in citygw.env"
            assert "@" not in str(value), f"{name}: {key} has credentials in a URL"
    example = (COMPOSE / "citygw.env.example").read_text()
    assert all(line.endswith("=") for line in example.splitlines() if "PASSWORD=" in line)
