"""A real SqliteStore and registry in tmp_path and TestClients of the API over them, on a clock tests control.

``client`` calls with a utility's key (telemetry reads); ``anonymous`` with none; ``keys`` holds a
bearer token per role (the engineer is granted the site ``lviv-depot``; transit has no sites). The
registry is SQLite; tests marked ``factories.on_every_registry`` run once on SQLite and once on a
fresh PostgreSQL database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry, open_registry
from api.security import Role
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import ENGINEER_SITE, FakeClock, bearer, city, insert_key
from tests.services import PostgreSQL


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "citygw.sqlite")
    yield store
    store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def no_citygw_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CITYGW_* variable in the developer's shell must not change what the tests see."""
    for name in list(os.environ):
        if name.startswith("CITYGW_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tmp_path: Path) -> ApiSettings:
    return ApiSettings(registry_url=f"sqlite:///{tmp_path}/registry.sqlite")


@pytest.fixture
def registry(request: pytest.FixtureRequest, settings: ApiSettings) -> Iterator[Registry]:
    """The migrated registry: SQLite in tmp_path, or (param ``postgresql``) a new PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        registry = open_registry(settings.registry_url)
        yield registry
        registry.close()
        return
    server: PostgreSQL = request.getfixturevalue("postgresql")
    database = f"registry_{uuid.uuid4().hex[:12]}"
    registry = open_registry(server.create_database(database))
    yield registry
    registry.close()
    server.drop_database(database)


@pytest.fixture
def keys(registry: Registry) -> dict[Role, str]:
    """A bearer token per role with a key; the engineer's key is granted ENGINEER_SITE."""
    with registry.session() as session:
        tokens = {
            Role.UTILITY: insert_key(session, Role.UTILITY),
            Role.ENGINEER: insert_key(session, Role.ENGINEER, sites=[ENGINEER_SITE]),
            Role.TRANSIT: insert_key(session, Role.TRANSIT),
            Role.ADMIN: insert_key(session, Role.ADMIN),
        }
        session.commit()
    return tokens


@pytest.fixture
def anonymous(
    store: SqliteStore, settings: ApiSettings, clock: FakeClock, registry: Registry
) -> Iterator[TestClient]:
    """The API as a resident's app sees it: no key."""
    with TestClient(create_app(store, settings=settings, clock=clock, registry=registry)) as client:
        yield client


@pytest.fixture
def client(anonymous: TestClient, keys: dict[Role, str]) -> TestClient:
    """The API called with a utility's key."""
    anonymous.headers.update(bearer(keys[Role.UTILITY]))
    return anonymous


@pytest.fixture
def city_store(store: SqliteStore) -> SqliteStore:
    """The store seeded with ``factories.city()``."""
    store.write(city())
    return store
