"""Which devices and vehicles each agent may speak for, and its site: from the configs the API pushes.

An agent is not trusted to say whose readings it sends (issues 21.2, 22.3): an air-quality
station's agent could publish ``vehicle_position`` readings for a bus of another agent, or tag
another site's ``site``. The API publishes every agent's desired config, retained, on
``citygw/v1/<agent>/config`` (``wire.DesiredConfig``); the collector subscribes to them and holds
each agent to its own: a reading of a device not in it, or with a ``vehicle`` tag other than the
vehicle its device rides in, is a ``not_owned`` dead letter; the ``site`` tag is the config's.
``OwnerPolicy`` says what happens to agents without a pushed config.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from citygw.contract import wire


class OwnerPolicy(StrEnum):
    """Whom the collector holds to a pushed config (``citygw collector run --owners``)."""

    OFF = "off"  # nobody: every agent speaks for any device, vehicle and site (before 21.2)
    KNOWN = "known"  # agents with a pushed config; the others as under off (a city moving to pushed configs)
    STRICT = "strict"  # every agent: one without a pushed config owns nothing


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: hashed by identity, a cache key per config
class Owned:
    """What ``agent`` may speak for: its devices (each with the vehicle it rides in, or None) and site."""

    agent: str
    version: int | None  # of its pushed config; None: it has none (strict)
    site: str | None
    vehicles: Mapping[str, str | None]

    def problem(self, device: str, tags: Mapping[str, str] | None) -> str | None:
        """Why a reading of ``device`` with ``tags`` is not this agent's to send; None when it is."""
        if self.version is None:
            return (
                f"agent {self.agent!r} has no pushed config and the collector's ownership policy is strict: "
                "push its config from the API (or run the collector with --owners known)"
            )
        if device not in self.vehicles:
            return (
                f"device {device!r} is not in agent {self.agent!r}'s config (v{self.version}): "
                "add it to this agent in the registry and push"
            )
        claimed = tags.get("vehicle") if tags else None
        if claimed is not None and claimed != (rides := self.vehicles[device]):
            return (
                f"tag vehicle {claimed!r} is not the vehicle device {device!r} rides in per agent "
                f"{self.agent!r}'s config (v{self.version}): {rides or 'none'}"
            )
        return None


class Owners:
    """Every agent's pushed config as far as ownership goes, under ``policy``.

    ``take`` is called by the MQTT thread, ``of`` by the converter: each agent's entry is replaced
    whole (one dict assignment), never changed in place. ``ready`` is set once the retained configs
    the broker held at the first subscription have come in (``Collector`` sets it).
    """

    def __init__(self, policy: OwnerPolicy = OwnerPolicy.OFF) -> None:
        self.policy = policy
        self.ready = threading.Event()
        self._owned: dict[str, Owned] = {}

    def __len__(self) -> int:
        return len(self._owned)

    def of(self, agent: str) -> Owned | None:
        """What ``agent``'s readings are held to; None: taken as they come (off; known and no config)."""
        if self.policy is OwnerPolicy.OFF:
            return None
        owned = self._owned.get(agent)
        if owned is None and self.policy is OwnerPolicy.STRICT:
            return Owned(agent, None, None, {})
        return owned

    def take(self, agent: str, payload: bytes) -> str | None:
        """Take the ``config`` message of ``agent`` (the topic's); what was wrong with it, if anything.

        An empty payload (a retained config cleared) leaves the agent without a config; a payload
        that is no valid config leaves its previous one in force (the agent refuses it too).
        """
        if not payload:
            self._owned.pop(agent, None)
            return None
        try:
            config = wire.DesiredConfig.model_validate_json(payload)
        except ValidationError as exc:
            return f"not a valid config, the previous one stays in force: {exc.errors(include_url=False)[:3]}"
        if config.agent != agent:
            return f"config is for agent {config.agent!r}, on {agent!r}'s topic: ignored"
        vehicles: dict[str, str | None] = {}
        for device in config.devices:
            device_id, vehicle = device.get("id"), device.get("vehicle")
            if not isinstance(device_id, str):
                continue  # the agent refuses such a config; its devices are the valid ones
            vehicle_id = vehicle.get("id") if isinstance(vehicle, dict) else None
            vehicles[device_id] = vehicle_id if isinstance(vehicle_id, str) else None
        self._owned[agent] = Owned(agent, config.version, config.site, vehicles)
        return None


__all__ = ["Owned", "OwnerPolicy", "Owners"]
