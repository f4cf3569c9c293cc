"""The registry's migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from api.registry import Registry, RegistryError, open_registry
from api.registry.database import alembic_config, migrate
from api.registry.models import Alert, Base
from tests.api.factories import on_every_registry

HEAD = "r0006"


@on_every_registry
def test_migrations_build_the_models_schema(registry: Registry) -> None:
    with registry.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == HEAD
        assert compare_metadata(context, Base.metadata) == []
    assert set(inspect(registry.engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}


@on_every_registry
def test_migrating_again_changes_nothing(registry: Registry) -> None:
    migrate(registry.engine)
    with registry.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == HEAD


@on_every_registry
def test_alerts_raised_twice_before_r0004_keep_the_first_active(registry: Registry) -> None:
    with registry.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "r0003")
    with registry.session() as session:
        for subject, started_at, ended_at in [
            ("m-1", 1, None),
            ("m-1", 2, None),
            ("m-1", 0, 1),
            ("m-2", 3, None),
        ]:
            session.add(
                Alert(
                    rule="device_offline",
                    subject=subject,
                    state="active" if ended_at is None else "ended",
                    detail="",
                    data={},
                    started_at=started_at,
                    ended_at=ended_at,
                )
            )
        session.commit()
    migrate(registry.engine)
    with registry.session() as session:
        alerts = session.execute(select(Alert.subject, Alert.state, Alert.started_at, Alert.ended_at)).all()
    assert sorted(alerts) == [
        ("m-1", "active", 1, None),
        ("m-1", "ended", 0, 1),
        ("m-1", "ended", 2, 2),  # the duplicate: ended as it began
        ("m-2", "active", 3, None),
    ]


@pytest.mark.parametrize("url", ["not a url", "mysql+nosuchdriver://x/y", "oracle+nosuchdriver://host/db"])
def test_unusable_urls_are_refused_with_the_reason(url: str) -> None:
    with pytest.raises(RegistryError):
        open_registry(url)
