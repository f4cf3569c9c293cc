"""Utilities' Grafana dashboards as code: built with grafana-foundation-sdk over InfluxQL."""

from dashboards.build import DASHBOARDS, GENERATED, build_all, text, write
from dashboards.influxql import DATASOURCE_UID

__all__ = ["DASHBOARDS", "DATASOURCE_UID", "GENERATED", "build_all", "text", "write"]
