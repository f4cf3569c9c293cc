"""One active alert per rule and subject: a unique index over the alerts not ended.

Every API replica runs the alert rules; without it two could raise the same finding at once. Such
duplicates already there are ended first, all but the oldest, at their own start (they never were an
alert of their own), so the index can be built.

Revision ID: r0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "r0004"
down_revision: str | None = "r0003"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("ended_at IS NULL")
_END_DUPLICATES = sa.text(
    "UPDATE alerts SET state = 'ended', ended_at = started_at"
    " WHERE ended_at IS NULL AND id > (SELECT MIN(kept.id) FROM alerts AS kept"
    " WHERE kept.rule = alerts.rule AND kept.subject = alerts.subject AND kept.ended_at IS NULL)"
)


def upgrade() -> None:
    op.execute(_END_DUPLICATES)
    op.create_index(
        "uq_alerts_active",
        "alerts",
        ["rule", "subject"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_alerts_active", "alerts")
