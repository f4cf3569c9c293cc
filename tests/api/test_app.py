"""The app as a whole: OpenAPI docs, CORS."""

from __future__ import annotations

from importlib.metadata import version

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
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


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
