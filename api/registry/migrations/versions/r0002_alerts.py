"""Alerts raised by the rules (AQ band, lamp failure, water leak pattern, device and agent offline).

Revision ID: r0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0002"
down_revision: str | None = "r0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("site", sa.String(128)),
        sa.Column("district", sa.String(128)),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger),
        sa.Column("acknowledged_at", sa.BigInteger),
        sa.Column("acknowledged_by", sa.String(256)),
    )
    op.create_index("ix_alerts_open", "alerts", ["state", "rule", "subject"])
    op.create_index("ix_alerts_started_at", "alerts", ["started_at"])


def downgrade() -> None:
    op.drop_table("alerts")
