"""The registry: API keys, audit log, agents, devices, config versions and commands.

SQLite by default, PostgreSQL by URL (``CITYGW_REGISTRY_URL``), through SQLAlchemy 2; the schema is
built by the alembic migrations in ``migrations/``, run by ``open_registry`` at start-up.
"""

from api.registry.database import Registry, RegistryError, open_registry

__all__ = ["Registry", "RegistryError", "open_registry"]
