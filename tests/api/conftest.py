"""A real SqliteStore in tmp_path and a TestClient of the API over it, on a clock tests control."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock, city


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
def settings() -> ApiSettings:
    return ApiSettings()


@pytest.fixture
def client(store: SqliteStore, settings: ApiSettings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(store, settings=settings, clock=clock)) as client:
        yield client


@pytest.fixture
def city_store(store: SqliteStore) -> SqliteStore:
    """The store seeded with ``factories.city()``."""
    store.write(city())
    return store
