"""An in-process MQTT broker (amqtt) so the demo runs with no external service.

For a newcomer's first run only: production uses Mosquitto or a clustered broker (deploy/).
It listens on loopback, takes any client that gives a user name and checks no password.
(amqtt keeps no queued messages for anonymous sessions, so anonymous clients are refused:
a persistent session must survive a collector restart, here as with Mosquitto.)
"""

from __future__ import annotations

import logging
from types import TracebackType

from amqtt.broker import Broker

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """An amqtt broker on ``host:port``, started and stopped inside the running event loop."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://citygw@{self.host}:{self.port}"

    async def start(self) -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False}},
        }
        self._broker = Broker(config)
        await self._broker.start()
        log.info("embedded MQTT broker listening on %s", self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
