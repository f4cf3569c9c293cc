"""The registry's migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from api.registry import Registry, RegistryError, open_registry
from api.registry.database import migrate
from api.registry.models import Base
from tests.api.factories import on_every_registry


@on_every_registry
def test_migrations_build_the_models_schema(registry: Registry) -> None:
    with registry.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == "r0003"
        assert compare_metadata(context, Base.metadata) == []
    assert set(inspect(registry.engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}


@on_every_registry
def test_migrating_again_changes_nothing(registry: Registry) -> None:
    migrate(registry.engine)
    with registry.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == "r0003"


@pytest.mark.parametrize("url", ["not a url", "mysql+nosuchdriver://x/y", "oracle+nosuchdriver://host/db"])
def test_unusable_urls_are_refused_with_the_reason(url: str) -> None:
    with pytest.raises(RegistryError):
        open_registry(url)
