"""The CityGW edge agent: polls field devices, journals Readings on disk, publishes them over MQTT."""

from edge.agent import Agent, run_agent
from edge.config_file import load_agent_config
from edge.journal import Journal
from edge.publisher import Publisher

__all__ = [
    "Agent",
    "Journal",
    "Publisher",
    "load_agent_config",
    "run_agent",
]
