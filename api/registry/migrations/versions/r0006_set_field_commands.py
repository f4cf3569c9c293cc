"""Commands that set a device's field (``set_field``): the field and the value to write.

Revision ID: r0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0006"
down_revision: str | None = "r0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.add_column(sa.Column("field", sa.String(64)))
        batch.add_column(sa.Column("value", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("value")
        batch.drop_column("field")
