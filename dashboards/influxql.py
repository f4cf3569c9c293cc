"""InfluxQL targets and template variables for Grafana's InfluxDB datasource.

grafana-foundation-sdk has builders for panels and dashboards but none for InfluxDB queries,
so this module adds the one missing piece in the SDK's own shape: a ``Dataquery`` variant and
its ``Builder``. Queries are raw InfluxQL (``rawQuery``), the form Grafana stores them in.
"""

from __future__ import annotations

import enum
import typing

from grafana_foundation_sdk.builders.dashboard import CustomVariable, QueryVariable
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

DATASOURCE_UID = "citygw-influxdb"
DATASOURCE = DataSourceRef(type_val="influxdb", uid=DATASOURCE_UID)


class ResultFormat(enum.StrEnum):
    TIME_SERIES = "time_series"
    TABLE = "table"


class InfluxQLQuery(cogvariants.Dataquery):
    """One raw InfluxQL target as Grafana's InfluxDB datasource stores it."""

    def __init__(self, query: str, ref_id: str, result_format: ResultFormat, alias: str | None) -> None:
        self.query = query
        self.ref_id = ref_id
        self.result_format = result_format
        self.alias = alias

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "datasource": DATASOURCE.to_json(),
            "query": self.query,
            "rawQuery": True,
            "refId": self.ref_id,
            "resultFormat": self.result_format.value,
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        return payload


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builds an InfluxQL target; every selected value must be named with ``AS`` (the tests read them)."""

    def __init__(self, query: str) -> None:
        self._query = InfluxQLQuery(" ".join(query.split()), "A", ResultFormat.TIME_SERIES, None)

    def build(self) -> InfluxQLQuery:
        return self._query

    def ref_id(self, ref_id: str) -> typing.Self:
        self._query.ref_id = ref_id
        return self

    def table(self) -> typing.Self:
        """Rows instead of time series (tables, maps, bar gauges over tags)."""
        self._query.result_format = ResultFormat.TABLE
        return self

    def alias(self, alias: str) -> typing.Self:
        """Legend name; Grafana fills ``$tag_<key>`` and ``$col``."""
        self._query.alias = alias
        return self


def tag_values(
    name: str, label: str, measurement: str | tuple[str, ...], key: str, *, where: str | None = None
) -> QueryVariable:
    """A multi-value template variable (with All) listing the values of one tag of some measurements."""
    measurements = (measurement,) if isinstance(measurement, str) else measurement
    sources = ", ".join(f'"{one}"' for one in measurements)
    query = f'SHOW TAG VALUES FROM {sources} WITH KEY = "{key}"'
    if where:
        query += f" WHERE {where}"
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
    )


def matches(tag: str, variable: str) -> str:
    """The InfluxQL condition that ``tag`` is one of the values chosen in ``variable``.

    ``::tag``: InfluxQL takes an unqualified name for a field of that name when one exists.
    """
    return f'"{tag}"::tag =~ /^${variable}$/'


def choice(name: str, label: str, choices: tuple[float, ...], default: float) -> CustomVariable:
    """A single-value variable choosing one of ``choices`` (a threshold), ``default`` when opened."""
    options = [VariableOption(selected=c == default, text=f"{c:g}", value=f"{c:g}") for c in choices]
    return (
        CustomVariable(name)
        .label(label)
        .values(",".join(f"{c:g}" for c in choices))
        .options(options)
        .current(VariableOption(selected=True, text=f"{default:g}", value=f"{default:g}"))
        .multi(False)
    )
