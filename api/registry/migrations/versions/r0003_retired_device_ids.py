"""Only active devices hold their id on an agent: a retired device id may be added there again.

The unique constraint (agent_id, device_id) becomes a unique index over the rows not retired; retired
rows stay as they are, for the record.

Revision ID: r0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0003"
down_revision: str | None = "r0002"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("retired_at IS NULL")
# r0001's constraint has no name of its own: PostgreSQL named it, SQLite did not (batch mode names it).
_POSTGRESQL_NAME = "devices_agent_id_device_id_key"
_SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s_%(column_1_name)s"}


def _unique_pair(create: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("devices", naming_convention=_SQLITE_NAMES) as batch:
            name = "uq_devices_agent_id_device_id"
            if create:
                batch.create_unique_constraint(name, ["agent_id", "device_id"])
            else:
                batch.drop_constraint(name, type_="unique")
    elif create:
        op.create_unique_constraint(_POSTGRESQL_NAME, "devices", ["agent_id", "device_id"])
    else:
        op.drop_constraint(_POSTGRESQL_NAME, "devices", type_="unique")


def upgrade() -> None:
    _unique_pair(create=False)
    op.create_index(
        "uq_devices_active",
        "devices",
        ["agent_id", "device_id"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    """Fails while an id is on an agent twice (retired and added again): that history has no place then."""
    op.drop_index("uq_devices_active", "devices")
    _unique_pair(create=True)
