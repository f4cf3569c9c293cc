"""deploy/grafana: the datasource the dashboards name, and a provider loading dashboards/generated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dashboards import DATASOURCE_UID, GENERATED

PROVISIONING = Path(__file__).parents[2] / "deploy" / "grafana" / "provisioning"


def load(relative: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PROVISIONING / relative).read_text())
    assert data["apiVersion"] == 1
    return data


def test_the_datasource_is_influxql_under_the_uid_the_dashboards_use() -> None:
    (source,) = load("datasources/citygw.yaml")["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] == "influxdb"
    assert source["jsonData"]["version"] == "InfluxQL"
    # Secrets come from Grafana's environment, never from the file.
    assert source["secureJsonData"]["password"].startswith("${")


def test_the_provider_loads_the_generated_folder_read_only() -> None:
    (provider,) = load("dashboards/citygw.yaml")["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False
    assert list(GENERATED.glob("*.json"))
    compose = (Path(__file__).parents[2] / "deploy" / "compose" / "compose.yaml").read_text()
    assert f"../../dashboards/generated:{provider['options']['path']}:ro" in compose
