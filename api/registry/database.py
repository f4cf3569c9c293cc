"""Opening the registry database and bringing its schema up to date."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from api.settings import redact_url

MIGRATIONS = Path(__file__).with_name("migrations")


class RegistryError(ValueError):
    """A registry URL that cannot be used."""


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Registry:
    """An engine and its sessions; one per process, closed with ``close()``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose uncommitted work is rolled back when the block ends."""
        with self.sessions() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()


def _engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise RegistryError(
            f"{redact_url(url)!r} is not a database URL; e.g. sqlite:///var/citygw-registry.sqlite"
            " or postgresql+psycopg://user@host/citygw"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except NoSuchModuleError:
        raise RegistryError(f"registry URL scheme {parsed.drivername!r} is not supported") from None
    except ModuleNotFoundError as exc:
        raise RegistryError(f"no database driver for {parsed.drivername!r} is installed: {exc}") from None


def alembic_config(connection: Connection) -> Config:
    """Alembic's config for the registry's migrations, run on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is already there)."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")


def open_registry(url: str, *, migrate_schema: bool = True) -> Registry:
    """The registry at ``url``, its schema migrated to the newest version."""
    engine = _engine(url)
    if migrate_schema:
        migrate(engine)
    return Registry(engine)
