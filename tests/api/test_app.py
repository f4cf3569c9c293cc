"""The app as a whole: OpenAPI, the pages (city page, docs) from packaged assets only, CORS."""

from __future__ import annotations

from html.parser import HTMLParser
from importlib.metadata import version

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock


def test_openapi_and_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "CityGW API"
    assert schema["info"]["version"] == version("citygw")
    assert {
        "/health",
        "/v1/devices",
        "/v1/devices/{device}/latest",
        "/v1/telemetry/{measurement}",
        "/v1/summary",
        "/v1/transit/vehicle-positions",
        "/v1/transit/vehicle-positions.pb",
        "/v1/transit/vehicle-positions.json",
    } <= set(schema["paths"])


class _References(HTMLParser):
    """The src and href URLs of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize(
    ("path", "assets"),
    [
        ("/", {"/static/city.js", "/static/city.css", "/docs-assets/favicon.png"}),
        (
            "/docs",
            {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/docs-assets/favicon.png"},
        ),
        ("/redoc", {"/docs-assets/redoc.standalone.js", "/docs-assets/favicon.png"}),
    ],
)
def test_pages_reference_only_their_own_origin_and_it_serves_them(
    anonymous: TestClient, path: str, assets: set[str]
) -> None:
    page = anonymous.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = references(page.text)
    assert assets <= set(urls)
    assert [u for u in urls if not u.startswith("/") or u.startswith("//")] == []
    assert "://" not in page.text  # no CDN, no web font, no validator badge
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "://" not in policy
    for asset in assets:
        served = anonymous.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 1000, asset
    for url in urls:
        if url.startswith(("/v1/", "/openapi.json", "/health")):
            assert anonymous.get(url).status_code in (200, 404), url  # 404: no static GTFS here


def test_the_docs_are_not_in_the_api_description(anonymous: TestClient) -> None:
    paths = set(anonymous.get("/openapi.json").json()["paths"])
    assert not paths & {"/", "/docs", "/redoc", "/docs/oauth2-redirect"}


def test_cors_only_for_configured_origins(store: SqliteStore, registry: Registry) -> None:
    settings = ApiSettings(cors_origins=("https://maps.example.org",))
    with TestClient(create_app(store, settings=settings, clock=FakeClock(), registry=registry)) as client:
        allowed = client.get("/v1/transit/vehicle-positions", headers={"Origin": "https://maps.example.org"})
        assert allowed.headers["access-control-allow-origin"] == "https://maps.example.org"
        assert "etag" in allowed.headers["access-control-expose-headers"].lower()
        preflight = client.options(
            "/v1/transit/vehicle-positions",
            headers={
                "Origin": "https://maps.example.org",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "if-none-match",
            },
        )
        assert preflight.status_code == 200
        assert "if-none-match" in preflight.headers["access-control-allow-headers"].lower()
        other = client.get("/v1/transit/vehicle-positions", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_by_default(client: TestClient) -> None:
    response = client.get("/health", headers={"Origin": "https://maps.example.org"})
    assert "access-control-allow-origin" not in response.headers
