"""Water: flow, consumption and the night-flow pattern that gives leaks away, every meter model's
fields by role (flow in m³/h, volumes in m³); the drinking water's quality from the network's probes
(pH, turbidity, free chlorine) against the limits of ``citygw.contract.water_quality``."""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.builders.timeseries import Panel

from citygw.contract.water_quality import LIMITS, Limit
from dashboards.by_role import Wanted, sources
from dashboards.influxql import InfluxQL, matches, tag_values
from dashboards.panels import BAD, OK, WARN, Steps, city_dashboard, rows, time_series
from firmware_bridge.catalogue import RoleCatalogue, catalogue
from firmware_bridge.roles import Role

UID = "citygw-water"
MEASUREMENT = "water"
WHERE = f"$timeFilter AND {matches('district', 'district')} AND {matches('device', 'meter')}"
QUALITY = "water_quality"
QUALITY_WHERE = f"$timeFilter AND {matches('district', 'district')} AND {matches('device', 'probe')}"
PROBE_ROLES = (Role.WATER_PH, Role.TURBIDITY, Role.FREE_CHLORINE)
MG_L, NTU = "suffix: mg/L", "suffix: NTU"
# A district meter whose daily minimum flow stays above this has water running all night.
LEAK_FLOW_M3H = 2.0


def dashboard(roles: RoleCatalogue | None = None) -> Dashboard:
    roles = roles or catalogue()

    def of(wanted: dict[str, Wanted]) -> str:
        return sources(roles, MEASUREMENT, wanted, WHERE)

    def quality(wanted: dict[str, Wanted]) -> str:
        return sources(roles, QUALITY, wanted, QUALITY_WHERE)

    return (
        city_dashboard(
            UID,
            "Water",
            "Flow and consumption of the district and bulk water meters; leaks show as a night flow "
            "that never drops. The drinking water's pH, turbidity and free chlorine from the quality probes, "
            "against their limits.",
            [
                tag_values("district", "District", (MEASUREMENT, QUALITY), "district"),
                tag_values("meter", "Meter", MEASUREMENT, "device", where=matches("district", "district")),
                tag_values(
                    "probe", "Quality probe", QUALITY, "device", where=matches("district", "district")
                ),
            ],
        )
        .with_panel(
            time_series(
                "Flow",
                [
                    InfluxQL(
                        f'SELECT mean("flow_rate") AS "flow_rate" FROM {of({"flow_rate": Role.FLOW_RATE})} '
                        'WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="flowcmh",
            )
        )
        .with_panel(
            time_series(
                "Consumption per interval",
                [
                    InfluxQL(
                        'SELECT non_negative_difference(last("volume")) AS "consumption" '
                        f"FROM {of({'volume': Role.VOLUME_TOTAL})} "
                        'WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="m3",
                bars=True,
                stacked=True,
                description="Growth of the forward volume counter (role volume_total) in each interval.",
            )
        )
        .with_panel(
            time_series(
                "Leak pattern: minimum flow per day",
                [
                    InfluxQL(
                        f'SELECT min("flow_rate") AS "minimum_flow" FROM {of({"flow_rate": Role.FLOW_RATE})} '
                        'WHERE $timeFilter GROUP BY time(1d), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="flowcmh",
                bars=True,
                steps=((None, OK), (LEAK_FLOW_M3H, WARN), (LEAK_FLOW_M3H * 2, BAD)),
                description="A network without leaks goes nearly still at night; a daily minimum that "
                f"stays above {LEAK_FLOW_M3H} m³/h is water running somewhere.",
            )
        )
        .with_panel(
            time_series(
                "Reverse flow per interval",
                [
                    InfluxQL(
                        'SELECT non_negative_difference(last("volume")) AS "reverse" '
                        f"FROM {of({'volume': Role.VOLUME_REVERSE})} "
                        'WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
                    ).alias("$tag_device")
                ],
                unit="m3",
                bars=True,
                steps=((None, OK), (0.001, BAD)),
                description="Water flowing backwards: a failed check valve or a pressure problem.",
            )
        )
        .with_panel(
            rows(
                "Meters",
                InfluxQL(
                    'SELECT last("flow_rate") AS "flow_rate", last("volume") AS "volume", '
                    'last("signal_quality") AS "signal_quality", last("error_code") AS "error_code" FROM '
                    + of(
                        {
                            "flow_rate": Role.FLOW_RATE,
                            "volume": Role.VOLUME_TOTAL,
                            "signal_quality": Role.SIGNAL_QUALITY,
                            "error_code": Role.ERROR_CODE,
                        }
                    )
                    + ' GROUP BY "district", "device"'
                ),
                units={"flow_rate": "flowcmh", "volume": "m3"},
                column_steps={
                    "signal_quality": ((None, BAD), (60, WARN), (75, OK)),
                    "error_code": ((None, OK), (1, BAD)),
                },
            )
        )
        .with_panel(_quality_series(quality, Role.WATER_PH, "pH", "none"))
        .with_panel(_quality_series(quality, Role.TURBIDITY, "Turbidity", NTU))
        .with_panel(_quality_series(quality, Role.FREE_CHLORINE, "Free chlorine", MG_L))
        .with_panel(
            rows(
                "Water quality probes",
                InfluxQL(
                    "SELECT "
                    + ", ".join(
                        f'last("{role.value}") AS "{role.value}"' for role in (*PROBE_ROLES, Role.TEMPERATURE)
                    )
                    + " FROM "
                    + quality({role.value: role for role in (*PROBE_ROLES, Role.TEMPERATURE)})
                    + ' GROUP BY "district", "device"'
                ),
                description="Each probe's newest reading; a cell turns red outside the default limits of the "
                f"water_quality alert rule ({'; '.join(_limit(role) for role in PROBE_ROLES)}).",
                units={
                    Role.TEMPERATURE.value: "celsius",
                    Role.TURBIDITY.value: NTU,
                    Role.FREE_CHLORINE.value: MG_L,
                },
                column_steps={role.value: _steps(LIMITS[role.value]) for role in PROBE_ROLES},
            )
        )
    )


def _steps(limit: Limit) -> Steps:
    """Red below the lower limit (if any) and above the upper one, green between."""
    low: Steps = ((None, BAD), (limit.low, OK)) if limit.low is not None else ((None, OK),)
    return (*low, (limit.high, BAD)) if limit.high is not None else low


def _limit(role: Role) -> str:
    limit = LIMITS[role.value]
    return f"{role.value} {limit.describe()}, {limit.source}"


def _quality_series(quality: Callable[[dict[str, Wanted]], str], role: Role, title: str, unit: str) -> Panel:
    limit = LIMITS[role.value]
    return time_series(
        title,
        [
            InfluxQL(
                f'SELECT mean("{role.value}") AS "{role.value}" FROM {quality({role.value: role})} '
                'WHERE $timeFilter GROUP BY time($__interval), "device" fill(none)'
            ).alias("$tag_device")
        ],
        unit=unit,
        steps=_steps(limit),
        width=8,
        description=f"Limits: {limit.describe()} ({limit.source}); the alert rule water_quality takes its "
        "limits from the API's settings.",
    )
