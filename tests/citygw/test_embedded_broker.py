"""The embedded broker delivers QoS 1 and keeps a persistent session's messages while it is away."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from citygw.embedded_broker import EmbeddedBroker
from tests.services import free_port


async def test_persistent_session_gets_messages_published_while_offline() -> None:
    async with EmbeddedBroker(port=free_port()) as broker:
        async with aiomqtt.Client(
            broker.host, broker.port, identifier="sub", username="collector", clean_session=False
        ) as sub:
            await sub.subscribe("citygw/v1/+/telemetry", qos=1)
        async with aiomqtt.Client(broker.host, broker.port, identifier="pub", username="agent") as pub:
            for i in range(3):
                await pub.publish(f"citygw/v1/a{i}/telemetry", f"m{i}".encode(), qos=1)
        async with aiomqtt.Client(
            broker.host, broker.port, identifier="sub", username="collector", clean_session=False
        ) as sub:
            got = []
            async with asyncio.timeout(5):
                async for message in sub.messages:
                    got.append(bytes(message.payload))  # type: ignore[arg-type]
                    if len(got) == 3:
                        break
    assert got == [b"m0", b"m1", b"m2"]


async def test_anonymous_client_is_refused() -> None:
    async with EmbeddedBroker(port=free_port()) as broker:
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(broker.host, broker.port, identifier="anon"):
                pass
