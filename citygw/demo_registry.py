"""The demo's registry: its agents and devices registered at their sites, and an admin key for this run.

Field engineers' flows (config pushes, commands, device health) need the agents in the registry as a
city would have them; the simulators' serial ports change every run, so each start writes the lines
and devices anew, retires what the demo no longer runs, and replaces the previous run's key.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.registry import audit, open_registry
from api.registry.fleet import active_devices
from api.registry.keys import create_key, list_keys, revoke_key
from api.registry.models import Agent, Device
from api.security import Role
from citygw.contract.agent_config import AgentConfig

DEMO_ACTOR = "citygw demo"
DEMO_KEY_NAME = "demo admin"


def register_city(registry_url: str, configs: list[AgentConfig], *, now_ms: int) -> str:
    """Register ``configs`` (agents, lines, devices) in the registry; the token of a new admin key."""
    registry = open_registry(registry_url)
    try:
        with registry.session() as session:
            for config in configs:
                _register(session, config, now_ms)
            audit.record(
                session,
                ts_ms=now_ms,
                actor=DEMO_ACTOR,
                role=Role.ADMIN.value,
                action="demo.register",
                target="demo",
                after={"agents": sorted(c.agent_id for c in configs)},
            )
            for key in list_keys(session):
                if key.name == DEMO_KEY_NAME:  # the previous run's: its printout may be anywhere
                    revoke_key(session, key.id, now_ms=now_ms, actor=DEMO_ACTOR, actor_role=Role.ADMIN.value)
            _, token = create_key(
                session,
                name=DEMO_KEY_NAME,
                role=Role.ADMIN,
                now_ms=now_ms,
                actor=DEMO_ACTOR,
                actor_role=Role.ADMIN.value,
            )
            session.commit()
    finally:
        registry.close()
    return token


def _register(session: Session, config: AgentConfig, now_ms: int) -> None:
    agent = session.get(Agent, config.agent_id) or Agent(id=config.agent_id, created_at=now_ms)
    agent.site = config.site
    agent.lines = [line.model_dump(mode="json") for line in config.lines]
    # Where the agent stands (sun-scheduled commands need it): its first located device's place.
    place = next((device.location for device in config.devices if device.location is not None), None)
    agent.lat, agent.lon = (place.lat, place.lon) if place is not None else (None, None)
    session.add(agent)
    running = {device.id: device for device in config.devices}
    for row in active_devices(session, config.agent_id):
        spec = running.pop(row.device_id, None)
        if spec is None:
            row.retired_at = now_ms
        else:
            row.spec, row.updated_at = spec.model_dump(mode="json", exclude_none=True), now_ms
    for spec in running.values():
        session.add(
            Device(
                agent_id=config.agent_id,
                device_id=spec.id,
                spec=spec.model_dump(mode="json", exclude_none=True),
                created_at=now_ms,
                updated_at=now_ms,
            )
        )
