"""Initial registry: API keys, audit log, agents, devices, config versions, commands.

Revision ID: r0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

_REFUSE_CHANGES_SQLITE = """
CREATE TRIGGER audit_log_no_{what} BEFORE {what} ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
"""
_REFUSE_CHANGES_POSTGRESQL = [
    """
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$
    """,
    """
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()
    """,
]


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("sites", sa.JSON, nullable=False),
        sa.Column("secret_hash", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("revoked_at", sa.BigInteger),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.BigInteger, nullable=False, index=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False, index=True),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("before", sa.JSON),
        sa.Column("after", sa.JSON),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("site", sa.String(128), nullable=False, index=True),
        sa.Column("lat", sa.Float),
        sa.Column("lon", sa.Float),
        sa.Column("lines", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16)),
        sa.Column("version", sa.String(64)),
        sa.Column("last_seen", sa.BigInteger),
        sa.Column("applied_config_version", sa.BigInteger),
        sa.Column("journal_backlog", sa.BigInteger),
        sa.Column("journal_dropped", sa.BigInteger),
        sa.Column("device_health", sa.JSON),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id"), nullable=False, index=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("retired_at", sa.BigInteger),
        sa.UniqueConstraint("agent_id", "device_id"),
    )
    op.create_table(
        "config_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id"), nullable=False, index=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("pushed_at", sa.BigInteger, nullable=False),
        sa.Column("pushed_by", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_at", sa.BigInteger),
        sa.Column("reason", sa.Text),
        sa.UniqueConstraint("agent_id", "version"),
    )
    op.create_table(
        "commands",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id"), nullable=False, index=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("target", sa.JSON, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("level", sa.BigInteger),
        sa.Column("schedule", sa.JSON),
        sa.Column("due_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sent_at", sa.BigInteger),
        sa.Column("result_at", sa.BigInteger),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_commands_due", "commands", ["status", "due_at"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for what in ("UPDATE", "DELETE"):
            op.execute(_REFUSE_CHANGES_SQLITE.format(what=what))
    elif dialect == "postgresql":
        for statement in _REFUSE_CHANGES_POSTGRESQL:
            op.execute(statement)


def downgrade() -> None:
    for table in ("commands", "config_versions", "devices", "agents", "audit_log", "api_keys"):
        op.drop_table(table)
