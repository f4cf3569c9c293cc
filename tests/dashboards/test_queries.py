"""Every panel's InfluxQL, as Grafana would send it, against real InfluxDB holding a seeded city.

Grafana itself cannot run here; what it would add (macros, template variables) is done by
tests/dashboards/grafana.py. Each query must run, return series with exactly the columns the
panel selects, the tags it groups by, and a value in every column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from api.transit.accuracy import WINDOWS
from dashboards import build_all
from dashboards.preview import variable_values
from dashboards.transport import BUCKETS
from firmware_bridge.catalogue import catalogue
from tests.dashboards.grafana import TimeRange, group_by_tags, render, selected_names, targets, variables
from tests.dashboards.seed import FILL, PROFILES, TAKEN

pytestmark = pytest.mark.integration
Query = Callable[[str], list[dict[str, Any]]]
# Built as a site with the second models' profiles builds them (python -m dashboards build --profiles).
BOARDS = build_all(catalogue((PROFILES,)))
PANELS = [
    pytest.param(board, panel, target, id=f"{uid}:{panel['id']}:{target['refId']}")
    for uid, board in BOARDS.items()
    for panel, target in targets(board)
]


def all_values(board: dict[str, Any], influxql: Query) -> dict[str, list[str]]:
    """Every variable set to All, as the preview chains them (Grafana's way); each must have values."""
    chosen = variable_values(board, influxql)
    empty = {v["name"]: v["query"] for v in variables(board) if chosen[v["name"]] == [""]}
    assert not empty, f"variables without values: {empty}"
    return chosen


def check(statement: str, series: list[dict[str, Any]], names: list[str], tags: list[str]) -> None:
    assert series, f"no data: {statement}"
    for one in series:
        assert one["columns"] == ["time", *names], statement
        # InfluxDB answers a tag no point has with an empty value.
        assert all(one.get("tags", {}).get(tag) for tag in tags), f"{statement}: tags {one.get('tags')}"
    for i, name in enumerate(names, 1):
        assert any(row[i] is not None for one in series for row in one["values"]), (
            f"{name} empty: {statement}"
        )


@pytest.mark.parametrize(("board", "panel", "target"), PANELS)
def test_panel_query_returns_its_columns(
    board: dict[str, Any], panel: dict[str, Any], target: dict[str, Any], influxql: Query, city: TimeRange
) -> None:
    statement = render(target["query"], all_values(board, influxql), city)
    check(statement, influxql(statement), selected_names(target["query"]), group_by_tags(target["query"]))


def test_a_chosen_district_shows_only_its_devices(influxql: Query, city: TimeRange) -> None:
    board = BOARDS["citygw-electricity"]
    (power,) = [t for p, t in targets(board) if p["title"] == "Power per district"]
    chosen = all_values(board, influxql) | {"district": ["sykhivskyi"]}
    chosen["meter"] = [
        v for s in influxql(render(variables(board)[1]["query"], chosen)) for _k, v in s["values"]
    ]
    assert chosen["meter"] == ["meter-example", "meter-sykhiv-1"]
    series = influxql(render(power["query"], chosen, city))
    assert [s["tags"]["district"] for s in series] == ["sykhivskyi"]


def test_lamps_lit_and_failed_follow_the_dali_status_bits(influxql: Query, city: TimeRange) -> None:
    board = BOARDS["citygw-street-lighting"]
    chosen = all_values(board, influxql)
    numbers = {}
    for panel, target in targets(board):
        if panel["type"] == "stat":
            (series,) = influxql(render(target["query"], chosen, city))
            numbers[panel["title"]] = series["values"][0][1]
    # Two DALI cabinets of four lamps; on cabinet-42 lamp 1 has failed and is dark, and its gateway is at
    # fault. The second model's cabinet: light A failed (its own bit 3) and dark, light B lit, an alarm.
    assert numbers == {
        "Lamps lit": 8,
        "Lamps not lit": 2,
        "Lamps failed": 2,
        "Cabinets with a gateway fault": 2,
    }


def test_consumption_is_the_growth_of_the_energy_counters(influxql: Query, city: TimeRange) -> None:
    board = BOARDS["citygw-electricity"]
    (total,) = [t for p, t in targets(board) if p["title"] == "Consumption in the time range"]
    (series,) = influxql(render(total["query"], all_values(board, influxql), city))
    # Three Eastron meters, no typical_rate in their profiles: 10 kWh each per 5-minute step; the second
    # model counts Wh (typical_rate 120 000 Wh/h): 10 kWh per step too, once converted. Growth
    # inside the first 10-minute interval has no earlier interval to differ from: 21 to 23 steps count.
    per_step = 4 * 120 * 5 / 60
    assert 21 * per_step - 0.01 <= series["values"][0][1] <= 23 * per_step + 0.01


def test_system_health_reads_what_the_collector_makes_of_health_and_status(
    influxql: Query, city: TimeRange
) -> None:
    board = BOARDS["citygw-system-health"]
    chosen = all_values(board, influxql)
    queries = {panel["title"]: target["query"] for panel, target in targets(board)}
    numbers = {
        title: influxql(render(queries[title], chosen, city))[0]["values"][0][1]
        for title in ("Agents online", "Agents sending health", "Devices failing")
    }
    # Three agents sent health; bus-4711's last will came after its birth message; depot-south-1's
    # first device (aq-sykhiv) times out.
    assert numbers == {"Agents online": 2, "Agents sending health": 3, "Devices failing": 1}
    devices = {
        s["tags"]["device"]: dict(zip(s["columns"], s["values"][0], strict=True))
        for s in influxql(render(queries["Devices"], chosen, city))
    }
    assert len(devices) == 23
    assert devices["aq-sykhiv"] | {"time": 0} == {
        "time": 0,
        "state": "timeout",
        "ok": 0,
        "quarantined": 1,
        "failures": 24,
        "last_ok_age": 3600,
        "published_age": None,
        "suppressed": None,
    }
    # Steady, reporting by exception: read a second ago, nothing to publish for 10 min. Alive.
    steady = devices["aq-rynok"]
    assert (steady["state"], steady["last_ok_age"], steady["published_age"]) == ("ok", 1, 600)
    assert steady["suppressed"] == 23


def test_the_station_map_places_the_located_station(influxql: Query, city: TimeRange) -> None:
    board = BOARDS["citygw-air-quality"]
    ((panel, target),) = [(p, t) for p, t in targets(board) if p["type"] == "geomap"]
    series = influxql(render(target["query"], all_values(board, influxql), city))
    places = {s["tags"]["device"]: tuple(s["values"][0][1:3]) for s in series}
    # Only aq-rynok has a location in its agent's configuration; the map leaves the others out.
    assert places == {"aq-rynok": (49.8419, 24.0316), "aq-sykhiv": (None, None), "aq-example": (None, None)}
    assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"][0]["color"] == "#50F0E6"


def test_lamp_commands_not_followed_are_the_failed_ones(influxql: Query, city: TimeRange) -> None:
    board = BOARDS["citygw-street-lighting"]
    (target,) = [t for p, t in targets(board) if p["title"] == "Lamp commands the lamps did not follow"]
    series = influxql(render(target["query"], all_values(board, influxql), city))
    # seed.COMMANDS: cabinet-42's dusk switching failed, the engineer's "on" after it left a lamp dark;
    # cabinet-17 did what it was told.
    assert {
        (s["tags"]["cabinet"], s["tags"]["target"], s["tags"]["outcome"]): s["values"][0][1] for s in series
    } == {("cabinet-42", "cabinet", "failed"): 1, ("cabinet-42", "cabinet", "done_but_dark"): 1}


def test_delays_and_occupancy_are_what_the_api_recorded(influxql: Query, city: TimeRange) -> None:
    board = BOARDS["citygw-transport"]
    chosen = all_values(board, influxql)
    queries = {panel["title"]: target["query"] for panel, target in targets(board)}
    late = {
        title: influxql(render(queries[title], chosen, city))[0]["values"][0][1]
        for title in ("Vehicles over 3 min late", "Vehicles over 5 min late")
    }
    # Newest delays (tests/dashboards/seed.py): bus-4711 440 s, bus-4712 200 s, tram-7 early.
    assert late == {"Vehicles over 3 min late": 2, "Vehicles over 5 min late": 1}
    table = {
        s["tags"]["vehicle"]: dict(zip(s["columns"][1:], s["values"][0][1:], strict=True))
        for s in influxql(render(queries["Delay per vehicle"], chosen, city))
    }
    assert table == {
        "bus-4711": {"delay": 440.0, "trip": "12-weekday-31", "confidence": 0.9, "occupancy": 70},
        "bus-4712": {"delay": 200.0, "trip": "12-weekday-32", "confidence": 0.9, "occupancy": None},
        "tram-7": {"delay": -45.0, "trip": "T7-weekday-8", "confidence": 0.9, "occupancy": 30},
    }
    occupancy = influxql(render(queries["Occupancy per route"], chosen, city))
    # Route 12's mean is bus-4711's alone: bus-4712 has no validator, so no occupancy.
    assert {s["tags"]["route"]: s["values"][-1][1] for s in occupancy} == {"12": 70, "T7": 30}


def test_scheduled_switchings_are_on_time_late_or_failed(influxql: Query, city: TimeRange) -> None:
    board = BOARDS["citygw-street-lighting"]
    chosen = all_values(board, influxql)
    counts = {}
    for panel, target in targets(board):
        if panel["title"] == "Scheduled switchings":
            for series in influxql(render(target["query"], chosen, city)):
                total = sum(row[1] for row in series["values"])
                counts[(target["alias"].split(" ", 1)[1], series["tags"]["cabinet"])] = total
    # seed.COMMANDS: the engineer's "now" command on cabinet-17 is no scheduled switching.
    assert counts == {("on time", "cabinet-17"): 2, ("late", "cabinet-17"): 1, ("failed", "cabinet-42"): 2}
    (adherence,) = [t for p, t in targets(board) if p["title"] == "Schedule adherence per cabinet"]
    rows = {
        (s["tags"]["cabinet"], s["tags"]["outcome"]): s["values"][0][1:]
        for s in influxql(render(adherence["query"], chosen, city))
    }
    assert rows == {
        ("cabinet-17", "done"): [3, 58.0, 150.0],
        ("cabinet-42", "expired"): [1, None, None],
        ("cabinet-42", "failed"): [1, 5.0, 5.0],
    }


def test_prediction_accuracy_is_the_share_of_what_the_api_scored(influxql: Query, city: TimeRange) -> None:
    board = BOARDS["citygw-transport"]
    chosen = all_values(board, influxql)
    queries = {panel["title"]: target["query"] for panel, target in targets(board)}
    table = {
        s["tags"]["route"]: s["values"][0][1:]
        for s in influxql(render(queries["Prediction accuracy per route"], chosen, city))
    }
    # tests/dashboards/seed.py ACCURACY, the same every round.
    assert table == {"12": [75, 50, 50, 100], "T7": [100, 100, 0, 50]}
    over_time = influxql(render(queries["Arrival predictions within TransitApp's windows"], chosen, city))
    (series,) = over_time
    # Both routes together: 0-3 min 4 of 5, 3-6 3 of 5, 6-10 1 of 3, 10-15 3 of 4, in every interval.
    expected = [80, 60, 100 / 3, 75]
    assert all(row[1:] == pytest.approx(expected) for row in series["values"])


def test_the_dashboard_buckets_are_the_ones_the_api_scores() -> None:
    assert {w.key: (w.early_s, w.late_s) for w in WINDOWS} == BUCKETS


def test_the_second_models_fill_the_panels_in_the_roles_units(influxql: Query, city: TimeRange) -> None:
    def table(uid: str, title: str) -> dict[str, dict[str, Any]]:
        board = BOARDS[uid]
        (target,) = [t for p, t in targets(board) if p["title"] == title]
        series = influxql(render(target["query"], all_values(board, influxql), city))
        return {s["tags"]["device"]: dict(zip(s["columns"], s["values"][0], strict=True)) for s in series}

    meters = table("citygw-electricity", "Meters")
    assert meters["meter-example"]["power"] == pytest.approx(5500.0)  # 5.5 kW
    assert meters["meter-example"]["import_energy"] == pytest.approx(7200 + 23 * 10)  # kWh, from Wh
    assert meters["meter-opera"]["power"] == pytest.approx(7450.0)
    water = table("citygw-water", "Meters")
    assert water["water-example"]["flow_rate"] == pytest.approx(9.0)  # 2.5 l/s in m³/h
    assert water["water-example"]["volume"] == pytest.approx(9000 + 23 * 0.75)  # m³, from litres
    assert water["water-zboishcha"]["flow_rate"] == pytest.approx(12.5)
    stations = table("citygw-air-quality", "Stations, EEA averages")
    assert stations["aq-example"]["no2"] == pytest.approx(57.3)  # 30 ppb
    assert stations["aq-example"]["pm2_5"] == pytest.approx(12.0)
    assert stations["aq-rynok"]["no2"] == pytest.approx(27.0)  # its µg/m³ field, not its ppb one
    cabinets = table("citygw-street-lighting", "Cabinets")
    assert cabinets["cabinet-example"] == {
        "time": cabinets["cabinet-example"]["time"],
        "bus_status": 0,
        "bus_load": 20.0,
        "fault": 1,
    }


def numbers(uid: str, influxql: Query, city: TimeRange, **chosen: list[str]) -> dict[str, Any]:
    """Each single-number panel's value, with the variables at their defaults except ``chosen``."""
    board = BOARDS[uid]
    values = all_values(board, influxql) | chosen
    found = {}
    for panel, target in targets(board):
        if panel["type"] == "stat":
            series = influxql(render(target["query"], values, city))
            found[panel["title"]] = series[0]["values"][0][1] if series else None
    return found


def rows_of(
    uid: str, title: str, influxql: Query, city: TimeRange, **chosen: list[str]
) -> list[dict[str, Any]]:
    board = BOARDS[uid]
    (target,) = [t for p, t in targets(board) if p["title"] == title and p["type"] == "table"]
    series = influxql(render(target["query"], all_values(board, influxql) | chosen, city))
    return [
        s["tags"] | dict(zip(s["columns"][1:], row[1:], strict=True)) for s in series for row in s["values"]
    ]


def test_bins_due_for_collection_follow_the_threshold(influxql: Query, city: TimeRange) -> None:
    due = {bin_id for bin_id, (_district, fill, _tilt) in FILL.items() if fill >= 80}
    assert due == {"bin-rynok-1", "bin-sykhiv-1"}
    assert numbers("citygw-waste", influxql, city) == {
        "Bins due for collection": len(due),
        "Bins reporting": len(FILL),
        "Bins with an alarm": 1,  # bin-sykhiv-1 knocked over
    }
    assert numbers("citygw-waste", influxql, city, threshold=["90"])["Bins due for collection"] == 1
    table = rows_of("citygw-waste", "Bins to collect", influxql, city)
    assert {(r["device"], r["fill_level"]) for r in table} == {(b, FILL[b][1]) for b in due}
    bins = {r["device"]: r for r in rows_of("citygw-waste", "Bins", influxql, city)}
    assert bins["bin-rynok-2"] | {"district": "", "time": 0} == {
        "device": "bin-rynok-2",
        "district": "",
        "time": 0,
        "fill_level": 63.5,
        "temperature": 11.2,
        "battery_voltage": pytest.approx(3.61),  # 3610 mV
    }


def test_parking_occupancy_per_zone(influxql: Query, city: TimeRange) -> None:
    taken = sum(t for _zone, t in TAKEN.values())
    assert numbers("citygw-parking", influxql, city) == {
        "Bays occupied": taken,
        "Bays free": len(TAKEN) - taken,
    }
    per_zone = {
        r["zone"]: r["bays"] for r in rows_of("citygw-parking", "Occupied bays per zone", influxql, city)
    }
    assert per_zone == {"rynok": 2}  # sykhiv's one bay is free
    board = BOARDS["citygw-parking"]
    chosen = all_values(board, influxql)
    newest = {}
    for panel, target in targets(board):
        if panel["title"] == "Bays occupied and free per zone":
            for series in influxql(render(target["query"], chosen, city)):
                newest[(target["alias"].split(" ", 1)[1], series["tags"]["zone"])] = series["values"][-1][1]
    assert newest == {("occupied", "rynok"): 2, ("free", "rynok"): 1, ("free", "sykhiv"): 1}
    bays = {r["device"]: r["occupied"] for r in rows_of("citygw-parking", "Bays", influxql, city)}
    assert bays == {bay: taken for bay, (_zone, taken) in TAKEN.items()}
    only = numbers("citygw-parking", influxql, city, zone=["sykhiv"])
    assert only == {"Bays occupied": None, "Bays free": 1}


def test_water_quality_against_its_limits(influxql: Query, city: TimeRange) -> None:
    probes = {r["device"]: r for r in rows_of("citygw-water", "Water quality probes", influxql, city)}
    values = {
        d: (r["water_ph"], r["turbidity"], r["free_chlorine"], r["temperature"]) for d, r in probes.items()
    }
    # tests/dashboards/seed.py: wq-sykhiv's water is turbid and alkaline, its chlorine the profile's 0.28.
    assert values == {"wq-zboishcha": (7.42, 0.35, 0.4, 12.6), "wq-sykhiv": (8.7, 1.6, 0.28, 12.6)}
    board = BOARDS["citygw-water"]
    (table,) = [p for p in board["panels"] if p["title"] == "Water quality probes"]
    colours = {
        o["matcher"]["options"]: p["value"]["steps"]
        for o in table["fieldConfig"]["overrides"]
        for p in o["properties"]
        if p["id"] == "thresholds"
    }
    assert colours["water_ph"] == [
        {"color": "red", "value": None},
        {"color": "green", "value": 6.5},
        {"color": "red", "value": 8.5},
    ]
    assert colours["turbidity"] == [{"color": "green", "value": None}, {"color": "red", "value": 1.0}]
