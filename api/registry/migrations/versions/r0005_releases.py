"""Agent software updates: releases, rollouts (waves) and their agents; each agent's last update result;
the publish, journal and health settings pushed with an agent's config.

Revision ID: r0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0005"
down_revision: str | None = "r0004"
branch_labels = None
depends_on = None

_AGENT_COLUMNS = (
    sa.Column("settings", sa.JSON),
    sa.Column("update_rollout", sa.BigInteger),
    sa.Column("update_version", sa.String(64)),
    sa.Column("update_state", sa.String(16)),
    sa.Column("update_at", sa.BigInteger),
    sa.Column("update_reason", sa.Text),
)


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("signature", sa.String(256), nullable=False),
        sa.Column("wheel", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("uploaded_at", sa.BigInteger, nullable=False),
        sa.Column("uploaded_by", sa.String(256), nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(64), sa.ForeignKey("releases.version"), nullable=False, index=True),
        sa.Column("selector", sa.JSON, nullable=False),
        sa.Column("token", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.create_table(
        "rollout_agents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=False, index=True),
        sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id"), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_at", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text),
        sa.UniqueConstraint("rollout_id", "agent_id"),
    )
    with op.batch_alter_table("agents") as batch:
        for column in _AGENT_COLUMNS:
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        for column in _AGENT_COLUMNS:
            batch.drop_column(column.name)
    op.drop_table("rollout_agents")
    op.drop_table("rollouts")
    op.drop_table("releases")
