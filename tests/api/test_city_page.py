"""The city page at / and the API docs, in headless Chromium against the API on a real socket.

The API serves a seeded city: buses of the fixture GTFS network on a simulated Friday (with
validators, so crowding is known), air-quality stations, a lamp cabinet and a meter registered
where they stand. The page must show what the API's own feeds say, ask nothing of another origin,
and let an engineer (key typed into the page) dim a lamp group through the command route.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from api import create_app
from api.registry import Registry
from api.registry.models import Command
from api.security import Role
from api.settings import ApiSettings
from api.transit.gtfs import load_gtfs
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import fixes_between, simulate_day, validator_point
from simulators.transit.network import network_files, network_zip
from tests.api.factories import MINUTE_MS, NOW_MS, FakeClock, reading, register_device
from tests.api.transit.conftest import FRIDAY
from tests.browser import chromium, console_errors, requests_of, screenshot
from tests.services import serving

pytestmark = pytest.mark.integration  # drives Debian's chromium

NOW_S = NOW_MS // 1000
CABINET = "cab-rynok"
WAIT_S = 30
NOTHING = "\N{EN DASH}"  # what the page shows for an unknown value
# Set to a folder, the test leaves a screenshot of the page there (docs/img/city-page.png is one).
SCREENSHOT_ENV = "SCREENSHOT_DIR"


@pytest.fixture
def city(store: SqliteStore, registry: Registry, tmp_path: Path) -> Path:
    """The seeded store and registry; returns the static GTFS's path."""
    timetable = load_gtfs(network_zip())
    buses = simulate_day(timetable, FRIDAY)
    store.write(list(fixes_between(timetable, buses, NOW_S - 120, NOW_S + 1)))
    store.write([validator_point(bus, at) for bus in buses for at in range(NOW_S - 1800, NOW_S + 1, 300)])
    with registry.session() as session:
        register_device(session, "aq-rynok", "vaisala_aqt530", lat=49.8419, lon=24.0315)
        register_device(session, "aq-sykhiv", "vaisala_aqt530", lat=49.8005, lon=24.0560)
        register_device(session, CABINET, "ecodim_dali_gw2", lat=49.8440, lon=24.0260)
        register_device(session, "meter-depot", "eastron_sdm630", lat=49.8330, lon=24.0050)
        session.commit()
    store.write(
        [
            # AQT530: NO2 in ppb. 50 ppb = 95.5 µg/m³ is Poor (band 4); 4 ppb with little dust is Good.
            reading("air_quality", "aq-rynok", NOW_MS - 5 * MINUTE_MS, {"no2": 50, "pm25": 8.0}),
            reading("air_quality", "aq-sykhiv", NOW_MS - 5 * MINUTE_MS, {"no2": 4, "pm25": 3.0}),
            reading(
                "lighting",
                CABINET,
                NOW_MS - MINUTE_MS,
                {"lamp0_status": 4, "lamp0_level": 254, "lamp1_status": 4, "lamp1_level": 120},
            ),
            reading(
                "electricity",
                "meter-depot",
                NOW_MS - MINUTE_MS,
                {"import_energy_kwh": 1234.5, "total_power": 5600.0, "frequency": 50.0},
            ),
        ]
    )
    path = tmp_path / "gtfs.zip"
    path.write_bytes(network_zip())
    return path


@pytest.fixture
def base_url(
    city: Path, store: SqliteStore, settings: ApiSettings, clock: FakeClock, registry: Registry
) -> Iterator[str]:
    app = create_app(
        store,
        settings=settings.model_copy(update={"transit_gtfs_path": city}),
        clock=clock,
        registry=registry,
    )
    with serving(app) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with chromium() as session:
        yield session


# Read in one script call: the page redraws every few seconds, an element found earlier may be gone.
_READ = """
const [css, names] = arguments;
const value = (e, n) =>
  n === "text" ? e.textContent : n === "cells" ? [...e.cells].map((c) => c.textContent) : e.getAttribute(n);
return [...document.querySelectorAll(css)].map((e) => Object.fromEntries(names.map((n) => [n, value(e, n)])));
"""


def read(browser: WebDriver, css: str, *names: str) -> list[dict[str, Any]]:
    """Each element matching ``css`` as {name: attribute}; "text" is its text, "cells" a row's cells."""
    found: list[dict[str, Any]] = browser.execute_script(_READ, css, list(names))
    return found


def wait_for(browser: WebDriver, css: str, what: str, *names: str, count: int = 1) -> list[dict[str, Any]]:
    """``read(browser, css, *names)`` once at least ``count`` elements match (fails naming ``what``)."""
    try:
        found: list[dict[str, Any]] = WebDriverWait(browser, WAIT_S).until(
            lambda b: len(elements := read(b, css, *names)) >= count and elements
        )
    except TimeoutException:
        status = read(browser, "#status", "text")
        raise AssertionError(f"{what} did not appear ({css}); page status: {status}") from None
    return found


def same_origin(urls: list[str], base: str) -> list[str]:
    """The URLs that went elsewhere than ``base`` (data: and blob: stay in the page)."""
    origin = urlsplit(base)
    return [u for u in urls if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u)[:2] != origin[:2]]


def gtfs_rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(network_files()[name].decode("utf-8"))))


def delay_text(delay_s: int | None) -> str:
    if delay_s is None:
        return NOTHING
    minutes = math.floor(abs(delay_s) / 60 + 0.5)  # as JavaScript's Math.round
    return "on time" if minutes == 0 else f"{minutes} min {'late' if delay_s > 0 else 'early'}"


def test_the_page_shows_the_city_without_a_key_and_asks_no_other_origin(
    browser: WebDriver, base_url: str
) -> None:
    feed = httpx.get(f"{base_url}/v1/transit/vehicle-positions.json").json()
    updates = httpx.get(f"{base_url}/v1/transit/trip-updates.json").json()
    stations = httpx.get(f"{base_url}/v1/air-quality/stations").json()["stations"]
    vehicles = {e["vehicle"]["vehicle"]["id"]: e["vehicle"] for e in feed["entity"]}
    assert len(vehicles) >= 3, "the seeded Friday should have buses on the road"

    browser.get(base_url + "/")
    markers = wait_for(
        browser, "#city-map [data-kind=vehicle]", "the vehicles", "data-vehicle", count=len(vehicles)
    )
    assert {m["data-vehicle"] for m in markers} == set(vehicles)
    # The static GTFS was read in the browser: every shape drawn, stops named.
    shapes = read(browser, "#city-map [data-kind=shape]", "data-shape")
    assert {m["data-shape"] for m in shapes} == {row["shape_id"] for row in gtfs_rows("shapes.txt")}

    stops = {row["stop_id"]: row for row in gtfs_rows("stops.txt")}
    routes = {row["route_id"]: row for row in gtfs_rows("routes.txt")}
    trips: dict[str, dict[str, Any]] = {}
    for entity in updates["entity"]:  # a bus's run first, then the next of its block
        trips.setdefault(entity["trip_update"]["vehicle"]["id"], entity["trip_update"])
    assert any("delay" in trip for trip in trips.values()), "the feed should say how late buses run"
    rows = {
        row["data-vehicle"]: row["cells"]
        for row in read(browser, "#vehicles tbody tr", "data-vehicle", "cells")
    }
    for vehicle, position in vehicles.items():
        label, route, next_stop, delay, crowding = rows[vehicle]
        assert label == position["vehicle"].get("label", vehicle)
        route_id = position.get("trip", {}).get("route_id")
        assert route == (routes[route_id]["route_short_name"] if route_id else NOTHING)
        trip = trips.get(vehicle, {})
        if trip.get("stop_time_update"):
            name = stops[trip["stop_time_update"][0]["stop_id"]]["stop_name"]
            assert re.fullmatch(rf"{re.escape(name)} \((now|in \d+ min)\)", next_stop), next_stop
        assert delay == delay_text(trip.get("delay")), (vehicle, trip.get("delay"))
        if "occupancy_status" in position:
            assert crowding.endswith(f"({position['occupancy_percentage']} %)"), crowding
    assert any(cells[4] != NOTHING for cells in rows.values()), "the validators' taps should give a crowding"
    assert any(cells[3].endswith("late") for cells in rows.values()), "some bus of the Friday runs late"

    aq = wait_for(
        browser, "#city-map [data-kind=aq-station]", "the stations", "data-device", "data-band", count=2
    )
    bands = {m["data-device"]: m["data-band"] for m in aq}
    assert bands == {s["device"]: str(s["index"]["band"]) for s in stations}
    assert bands == {"aq-rynok": "4", "aq-sykhiv": "1"}

    cabinets = wait_for(
        browser, "#city-map [data-kind=lamp-cabinet]", "the cabinet", "data-device", "data-state"
    )
    assert cabinets == [{"data-device": CABINET, "data-state": "dimmed"}]  # one lamp full, one dimmed
    meters = wait_for(browser, "#city-map [data-kind=meter]", "the meter", "data-device")
    assert meters == [{"data-device": "meter-depot"}]
    [meter] = read(browser, "#meters tbody tr", "cells")
    assert "totalActiveEnergyImport 1234.50" in meter["cells"][1]

    # Without a key: no agents, no command form, and the page says which key would show them.
    assert read(browser, "#agents tbody tr") == []
    assert "engineer" in read(browser, "#agents-note", "text")[0]["text"]
    assert not browser.find_element(By.ID, "dim-form").is_displayed()
    assert browser.find_element(By.ID, "key-state").get_attribute("data-role") == "none"

    asked = requests_of(browser, base_url)
    assert f"{base_url}/v1/transit/gtfs.zip" in asked.sent
    assert same_origin(asked.sent, base_url) == []
    assert asked.blocked == []
    # No script error; the one refusal is the meters' own values (telemetry needs a key here).
    assert [e for e in console_errors(browser) if "status of 401" not in e] == []
    if SCREENSHOT_ENV in os.environ:
        screenshot(browser, Path(os.environ[SCREENSHOT_ENV]) / "city-page.png")


def test_an_engineer_dims_a_lamp_group_from_the_page(
    browser: WebDriver, base_url: str, keys: dict[Role, str], registry: Registry
) -> None:
    browser.get(base_url + "/")
    wait_for(browser, "#city-map [data-kind=lamp-cabinet]", "the lamp cabinet")
    browser.find_element(By.ID, "key-input").send_keys(keys[Role.ENGINEER])
    browser.find_element(By.ID, "key-use").click()
    wait_for(browser, "#key-state[data-role=engineer]", "the engineer's view")
    agents = wait_for(browser, "#agents tbody tr", "the agents", "data-agent")
    assert agents == [{"data-agent": "edge-a"}]
    assert read(browser, "#city-map [data-kind=agent]", "data-agent") == [{"data-agent": "edge-a"}]
    # The key stays in this tab only, never in the page's address, local storage or a cookie.
    assert browser.execute_script("return sessionStorage.getItem('citygw.key')") == keys[Role.ENGINEER]
    assert browser.execute_script("return localStorage.length") == 0
    assert browser.get_cookies() == []
    assert browser.find_element(By.ID, "key-input").get_attribute("value") == ""

    wait_for(browser, "#dim-form:not([hidden])", "the dim form")
    Select(browser.find_element(By.ID, "dim-cabinet")).select_by_visible_text(f"{CABINET} (agent edge-a)")
    for field, value in (("dim-group", "2"), ("dim-level", "40")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "dim-send").click()
    [state] = wait_for(
        browser, "#command-state[data-status=scheduled]", "the command", "data-command", "text"
    )
    assert "accepted: dim group 2 of cab-rynok to 40 %" in state["text"]

    with registry.session() as session:
        command = session.scalars(select(Command)).one()
    assert command.id == state["data-command"]
    assert (command.device_id, command.target, command.action, command.level) == (
        CABINET,
        {"kind": "group", "address": 2},
        "dim",
        40,
    )
    assert command.created_by.startswith("key:")
    assert same_origin(requests_of(browser, base_url).sent, base_url) == []

    # A key that is not an engineer's: the page says so, and offers no command.
    browser.find_element(By.ID, "key-forget").click()
    wait_for(browser, "#key-state[data-role=none]", "the keyless view")
    browser.find_element(By.ID, "key-input").send_keys(keys[Role.UTILITY])
    browser.find_element(By.ID, "key-use").click()
    wait_for(browser, "#key-state[data-role=other]", "the utility's view")
    assert "engineer" in read(browser, "#key-state", "text")[0]["text"]
    assert not browser.find_element(By.ID, "dim-form").is_displayed()


@pytest.mark.parametrize(
    ("path", "rendered", "refused"),
    [
        ("/docs", ".swagger-ui .info .title", []),
        # ReDoc's sidebar shows its vendor's logo from their CDN; the page's policy refuses it.
        ("/redoc", ".api-info h1", ["https://cdn.redoc.ly/redoc/logo-mini.svg"]),
    ],
)
def test_the_docs_render_offline(
    browser: WebDriver, base_url: str, path: str, rendered: str, refused: list[str]
) -> None:
    browser.get(base_url + path)
    WebDriverWait(browser, WAIT_S).until(
        lambda b: any("CityGW API" in t["text"] for t in read(b, rendered, "text"))
    )
    asked = requests_of(browser, base_url)
    assert f"{base_url}/openapi.json" in asked.sent
    assert same_origin(asked.sent, base_url) == []
    assert asked.blocked == refused
