"""Public endpoints: a token bucket per client address, 429 with Retry-After; CORS for browsers' calls."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api import create_app
from api.rate_limit import ClientRateLimiter
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock, bearer


class Seconds:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_at_the_rate_and_forgets_old_clients() -> None:
    clock = Seconds()
    limiter = ClientRateLimiter(2.0, 3, max_clients=2, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a") == 0.5
    clock.now += 0.5
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0
    limiter.take("b")
    limiter.take("c")  # "a" is forgotten and starts full again
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]


def test_public_endpoints_answer_429_per_client(
    store: SqliteStore, registry: Registry, settings: ApiSettings, keys: dict[Role, str]
) -> None:
    limited = settings.model_copy(update={"rate_limit_per_s": 0.01, "rate_limit_burst": 3})
    app = create_app(store, settings=limited, clock=FakeClock(), registry=registry)
    with (
        TestClient(app, client=("192.0.2.7", 40000)) as one,
        TestClient(app, client=("192.0.2.8", 40000)) as other,
    ):
        paths = ["/v1/open-data", "/v1/air-quality/city", "/v1/transit/vehicle-positions"]
        assert [one.get(path).status_code for path in paths] == [200, 200, 200]
        refused = one.get("/v1/open-data/air-quality")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert other.get("/v1/open-data").status_code == 200
        # Health checks and keyed endpoints are not counted against the public bucket.
        assert one.get("/health").status_code == 200
        assert one.get("/v1/summary", headers=bearer(keys[Role.UTILITY])).status_code == 200


def test_no_limit_when_off(store: SqliteStore, registry: Registry, settings: ApiSettings) -> None:
    off = settings.model_copy(update={"rate_limit_per_s": 0})
    with TestClient(create_app(store, settings=off, clock=FakeClock(), registry=registry)) as client:
        assert {client.get("/v1/open-data").status_code for _ in range(100)} == {200}


def test_cors_preflight_for_keyed_writes(
    store: SqliteStore, registry: Registry, settings: ApiSettings
) -> None:
    browser = settings.model_copy(update={"cors_origins": ("https://ops.lviv.example",)})
    with TestClient(create_app(store, settings=browser, clock=FakeClock(), registry=registry)) as client:
        preflight = client.options(
            "/v1/alerts/1/acknowledge",
            headers={
                "Origin": "https://ops.lviv.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in preflight.headers
        refused = client.options(
            "/v1/keys",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 400
        exported = client.get("/v1/open-data", headers={"Origin": "https://ops.lviv.example"})
        assert "retry-after" in exported.headers["access-control-expose-headers"].lower()
