"""The edge agent's process settings: which agent config file, the broker URL, the log level.

Environment (``CITYGW_*``) and ``citygw edge run|launch`` flags (citygw/contract/settings.py layers them;
docs/configuration.md lists them). What the agent polls and publishes is its agent config file
(edge/config.py, ``--config``), not these: the broker URL is the one setting of both, the file's
``broker.url``, which the environment and then ``--broker`` replace.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from citygw.contract.settings import ServiceSettings

BROKER_FILE_KEY = "broker.url"  # in the agent config file (--config)


class EdgeSettings(ServiceSettings):
    """What ``citygw edge run`` and ``citygw edge launch`` need besides the agent config file."""

    service = "edge"
    has_file = False  # its file is the agent config, whose schema is edge/config.py's
    cli_flags = {"agent_config": "--config", "broker_url": "--broker"}
    file_keys = {"broker_url": BROKER_FILE_KEY}

    agent_config: Path = Field(
        description="the agent config file, YAML (edge/examples/agent.yaml; docs/reference.md, "
        "Edge agent configuration)",
    )
    broker_url: str | None = Field(
        default=None,
        description="replaces the agent config's broker.url, so a URL with a password need not sit in the "
        "file: mqtt://[user:pass@]host:port or mqtts://",
    )

    @field_validator("broker_url")
    @classmethod
    def _broker_is_mqtt(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("mqtt", "mqtts"):
            raise ValueError(
                "scheme must be mqtt:// or mqtts://, e.g. mqtts://agent:PASS@broker.example:8883"
            )
        return url

    def child_env(self) -> dict[str, str]:
        """The settings given to ``edge launch``, as the environment of the agent it starts (which may
        be an older release: it reads the environment, and ``--config``, the same way)."""
        env = {self.env_name("log_level"): self.log_level}
        if self.broker_url is not None:
            env[self.env_name("broker_url")] = self.broker_url
        return env
