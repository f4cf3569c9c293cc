"""The registry's tables: API keys, the audit log, agents, devices, config versions, commands.

Times are integers, milliseconds since the epoch (UTC), as everywhere else in CityGW.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, int: BigInteger, float: Float}


class ApiKey(Base):
    """A bearer key: only a hash of its secret is kept; ``id`` is the public prefix used to find it."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    sites: Mapped[list[str]] = mapped_column(default=list)
    secret_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int]
    created_by: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[int | None]
    revoked_at: Mapped[int | None]


class AuditEntry(Base):
    """One write through the API or the CLI, or one refused request (``access.refused``); rows are only
    ever inserted (triggers refuse the rest)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[int] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(256))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)


class Agent(Base):
    """An edge agent at a site; its base config (lines) and its last known live state."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(128), index=True)
    lat: Mapped[float | None]
    lon: Mapped[float | None]
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Publish, journal (but its path) and health sections pushed with the config; none: the agent's file's.
    settings: Mapped[dict[str, Any] | None]
    created_at: Mapped[int]
    # Live state, from the agent's own MQTT messages.
    state: Mapped[str | None] = mapped_column(String(16))
    version: Mapped[str | None] = mapped_column(String(64))
    last_seen: Mapped[int | None]
    applied_config_version: Mapped[int | None]
    journal_backlog: Mapped[int | None]
    journal_dropped: Mapped[int | None]
    device_health: Mapped[dict[str, Any] | None]
    # The last rollout the agent spoke of (update/state): which, its version, how it ended, why.
    update_rollout: Mapped[int | None]
    update_version: Mapped[str | None] = mapped_column(String(64))
    update_state: Mapped[str | None] = mapped_column(String(16))
    update_at: Mapped[int | None]
    update_reason: Mapped[str | None] = mapped_column(Text)


class Release(Base):
    """A signed agent release as uploaded: the manifest as signed, its signature and the wheel."""

    __tablename__ = "releases"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    manifest: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(256))
    wheel: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[int]
    uploaded_by: Mapped[str] = mapped_column(String(256))


class Rollout(Base):
    """A wave: one release ordered to a set of agents; ``token`` lets those agents download it."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(ForeignKey("releases.version"), index=True)
    selector: Mapped[dict[str, Any]]
    token: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int]
    created_by: Mapped[str] = mapped_column(String(256))


class RolloutAgent(Base):
    """One agent of a wave and where it is: pending (ordered), unsent, refused, failed, staged, applied,
    rolled_back."""

    __tablename__ = "rollout_agents"
    __table_args__ = (UniqueConstraint("rollout_id", "agent_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    state_at: Mapped[int]
    reason: Mapped[str | None] = mapped_column(Text)


ACTIVE_DEVICE = text("retired_at IS NULL")


class Device(Base):
    """A field device on one of an agent's lines; retired devices stay for the record.

    One active device per id on an agent; a retired id may be added (or moved) there again, as a new row.
    """

    __tablename__ = "devices"
    __table_args__ = (
        Index(
            "uq_devices_active",
            "agent_id",
            "device_id",
            unique=True,
            sqlite_where=ACTIVE_DEVICE,
            postgresql_where=ACTIVE_DEVICE,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[int]
    updated_at: Mapped[int]
    retired_at: Mapped[int | None]


class ConfigVersion(Base):
    """A desired config pushed to an agent, and what the agent said about it."""

    __tablename__ = "config_versions"
    __table_args__ = (UniqueConstraint("agent_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    version: Mapped[int]
    body: Mapped[dict[str, Any]]
    pushed_at: Mapped[int]
    pushed_by: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    state_at: Mapped[int | None]
    reason: Mapped[str | None] = mapped_column(Text)


class Command(Base):
    """A command to a lamp, group or cabinet, or a set_field (``target`` empty): sent now or on a
    schedule, then its result."""

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_due", "status", "due_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    device_id: Mapped[str] = mapped_column(String(128))
    target: Mapped[dict[str, Any]]
    action: Mapped[str] = mapped_column(String(16))
    level: Mapped[int | None]
    field: Mapped[str | None] = mapped_column(String(64))
    value: Mapped[bool | int | float | str | None] = mapped_column(JSON)  # wire.FieldValue
    schedule: Mapped[dict[str, Any] | None]
    due_at: Mapped[int]
    created_at: Mapped[int]
    created_by: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    sent_at: Mapped[int | None]
    result_at: Mapped[int | None]
    detail: Mapped[str | None] = mapped_column(Text)


ACTIVE_ALERT = text("ended_at IS NULL")


class Alert(Base):
    """A rule's finding about one subject (device, lamp, agent): active until the rule no longer finds it.

    One active alert per rule and subject, however many API replicas run the rules; ended ones stay.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_open", "state", "rule", "subject"),
        Index(
            "uq_alerts_active",
            "rule",
            "subject",
            unique=True,
            sqlite_where=ACTIVE_ALERT,
            postgresql_where=ACTIVE_ALERT,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16))
    site: Mapped[str | None] = mapped_column(String(128))
    district: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]]
    started_at: Mapped[int] = mapped_column(index=True)
    ended_at: Mapped[int | None]
    acknowledged_at: Mapped[int | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(256))
