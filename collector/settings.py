"""The collector's one settings model: file, ``CITYGW_*`` environment and ``citygw collector run``
flags (citygw/contract/settings.py layers them; docs/configuration.md lists them), the process tuning of
collector/tuning.py included."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from citygw.contract.settings import ServiceSettings
from collector.owners import OwnerPolicy
from collector.series_budget import MAX_SERIES_PER_AGENT
from collector.tuning import GC_YOUNG_THRESHOLD, GIL_SWITCH_INTERVAL_S

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_STORE = "sqlite:///var/citygw.sqlite"


class CollectorSettings(ServiceSettings):
    """Everything a collector process needs to know that is not code."""

    service = "collector"
    cli_flags = {
        "broker_url": "--broker",
        "store_url": "--store",
        "collector_id": "--client-id",
        "collector_owners": "--owners",
    }

    broker_url: str = Field(
        default=DEFAULT_BROKER,
        description="MQTT broker, mqtt://[user:pass@]host:port or mqtts:// (a broker user per collector)",
    )
    store_url: str = Field(
        default=DEFAULT_STORE,
        min_length=1,
        description="where readings are written: sqlite:///path, influxdb://…/db or influxdb2://…",
    )
    influx_token: SecretStr | None = Field(
        default=None,
        description="InfluxDB v2 API token, for an influxdb2:// store_url without one in its password",
    )
    collector_id: str = Field(
        default="citygw-collector",
        min_length=1,
        description="MQTT client id; the same across restarts (its persistent session holds what is unacked)",
    )
    share_group: str | None = Field(
        default=None,
        min_length=1,
        description="MQTT shared subscription group, when collectors share the stream",
    )
    broker_ca_file: Path | None = Field(
        default=None, description="CA of the broker's certificate for mqtts:// (system CAs if unset)"
    )
    broker_cert_file: Path | None = Field(
        default=None,
        description="this collector's certificate for the broker's certificate listener (citygw pki)",
    )
    broker_key_file: Path | None = Field(default=None, description="the key of broker_cert_file")
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="serve Prometheus metrics on http://HOST:PORT/metrics; unset: off",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="address of the metrics endpoint (0.0.0.0 for a scraper elsewhere)",
    )
    max_series_per_agent: int = Field(
        default=MAX_SERIES_PER_AGENT,
        ge=1,
        description="series (measurement, device, tags) one agent may create; readings of a new series "
        "beyond them are dead letters",
    )
    collector_owners: OwnerPolicy = Field(
        default=OwnerPolicy.OFF,
        description="hold agents to their pushed config: off, known (agents that have one) or strict "
        "(every agent)",
    )
    acks: bool = Field(
        default=True,
        description="publish end-to-end acks (citygw/v1/<agent>/ack); off for a broker whose roles do not "
        "let the collector publish them yet (agents then take the broker's PUBACK as final)",
    )
    gil_switch_interval_s: float = Field(
        default=GIL_SWITCH_INTERVAL_S,
        ge=0,
        le=0.1,
        description="process tuning: Python's GIL switch interval, lowered to this (collector/tuning.py); "
        "0: Python's own",
    )
    gc_young_threshold: int = Field(
        default=GC_YOUNG_THRESHOLD,
        ge=0,
        le=10_000_000,
        description="process tuning: the young generation's GC threshold, raised to this "
        "(collector/tuning.py); 0: Python's own",
    )

    @field_validator("broker_url")
    @classmethod
    def _broker_parses(cls, url: str) -> str:
        from collector.service import BrokerAddress

        BrokerAddress.parse(url)
        return url
