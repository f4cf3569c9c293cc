"""Alembic migrations of the registry schema, run by ``api.registry.open_registry``."""
