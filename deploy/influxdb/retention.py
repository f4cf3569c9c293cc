"""Retention and downsampling of a CityGW InfluxDB 1.x database, applied idempotently.

    python deploy/influxdb/retention.py --url http://127.0.0.1:8086 --database citygw
    python deploy/influxdb/retention.py ... --backfill-days 90   # downsample data already stored

Raw readings stay RAW_DAYS in the default policy ``autogen`` (shortened in place, so data
already stored and every query without a policy keep working); hourly aggregates (``mean_<field>``,
``max_<field>`` and, for counters, ``last_<field>``) stay HOURLY_DAYS in ``hourly``, written by
continuous queries. Credentials: $CITYGW_INFLUX_USER and $CITYGW_INFLUX_PASSWORD (an admin).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import httpx

RAW_DAYS = 90
HOURLY_DAYS = 5 * 365
# Utility history; vehicle positions and dead letters are kept raw only.
DOWNSAMPLED = (
    "air_quality",
    "electricity",
    "water",
    "water_quality",
    "lighting",
    "validator",
    "agent_health",
)


def statements(database: str) -> dict[str, str]:
    """The continuous queries by name: their SELECT ... INTO, without the CQ wrapper."""
    source = f'"{database}"."autogen"./^({"|".join(DOWNSAMPLED)})$/'
    target = f'"{database}"."hourly".:MEASUREMENT'
    return {
        "hourly_mean_max": f"SELECT mean(*), max(*) INTO {target} FROM {source} GROUP BY time(1h), *",
        "hourly_last": f"SELECT last(*) INTO {target} FROM {source} GROUP BY time(1h), *",
    }


class Influx:
    def __init__(self, url: str, database: str) -> None:
        user, password = os.environ.get("CITYGW_INFLUX_USER"), os.environ.get("CITYGW_INFLUX_PASSWORD", "")
        self.http = httpx.Client(base_url=url, auth=(user, password) if user else None, timeout=300)
        self.database = database

    def query(self, statement: str) -> list[dict[str, Any]]:
        response = self.http.post("/query", data={"q": statement, "db": self.database})
        response.raise_for_status()
        (result,) = response.json()["results"]
        if "error" in result:
            raise RuntimeError(f"{statement}: {result['error']}")
        series: list[dict[str, Any]] = result.get("series", [])
        return series


def apply(influx: Influx) -> None:
    """Create or alter the policies and (re)create the continuous queries; safe to run again."""
    db = influx.database
    influx.query(f'CREATE DATABASE "{db}"')
    policies = influx.query(f'SHOW RETENTION POLICIES ON "{db}"')
    existing = {row[0] for series in policies for row in series["values"]}
    for name, days, shard, default in (
        ("autogen", RAW_DAYS, "1d", " DEFAULT"),
        ("hourly", HOURLY_DAYS, "30d", ""),
    ):
        verb = "ALTER" if name in existing else "CREATE"
        influx.query(
            f'{verb} RETENTION POLICY "{name}" ON "{db}" DURATION {days}d REPLICATION 1 '
            f"SHARD DURATION {shard}{default}"
        )
    for name, select in statements(db).items():
        influx.query(f'DROP CONTINUOUS QUERY "{name}" ON "{db}"')
        influx.query(f'CREATE CONTINUOUS QUERY "{name}" ON "{db}" BEGIN {select} END')


def backfill(influx: Influx, days: int, now_s: float | None = None) -> None:
    """Run the continuous queries once over the last ``days`` (for data stored before they existed)."""
    end = int(now_s if now_s is not None else time.time()) // 3600 * 3600
    for select in statements(influx.database).values():
        where = f" WHERE time >= {end - days * 86400}s AND time < {end}s GROUP BY"
        influx.query(select.replace(" GROUP BY", where, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8086")
    parser.add_argument("--database", default="citygw")
    parser.add_argument("--backfill-days", type=int, default=0)
    args = parser.parse_args(argv)
    influx = Influx(args.url, args.database)
    apply(influx)
    if args.backfill_days:
        backfill(influx, args.backfill_days)
    queries = len(statements(args.database))
    print(f"{args.database}: autogen {RAW_DAYS} d, hourly {HOURLY_DAYS} d, {queries} continuous queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
