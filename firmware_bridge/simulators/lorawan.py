"""A LoRaWAN network server's MQTT integration, as seen from an application: uplinks out, downlinks in.

Publishes uplink events in the server's own format (ChirpStack v4 ``event/up`` built with
ChirpStack's own protobuf definitions, The Things Stack v3 ``.../up`` as its documentation shows
it) to a real MQTT broker, leaving out what the servers leave out (an ``fCnt`` of 0), and records
what applications queue on the downlink topics. The decoded object is what
the vendor's codec makes of the frame (``tests/firmware_bridge/captures/lorawan``): the
servers run the codecs, the agent never sees raw bytes it must decode.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from firmware_bridge.lorawan import Server


@dataclass(frozen=True)
class Downlink:
    """A message an application queued on a downlink topic."""

    topic: str
    message: dict[str, Any]

    @property
    def data(self) -> bytes:
        """The FRMPayload queued (ChirpStack ``data``, TTS ``downlinks[0].frm_payload``)."""
        encoded = (
            self.message["data"] if "data" in self.message else self.message["downlinks"][0]["frm_payload"]
        )
        return base64.b64decode(encoded)

    @property
    def f_port(self) -> int:
        port = self.message["fPort"] if "fPort" in self.message else self.message["downlinks"][0]["f_port"]
        return int(port)


def uplink_message(
    server: Server,
    application: str,
    dev_eui: str,
    decoded: dict[str, Any] | None,
    *,
    f_cnt: int,
    f_port: int,
    frame: bytes = b"",
    rssi: int = -80,
    snr: float = 7.5,
    device_id: str | None = None,
    at: dt.datetime | None = None,
) -> tuple[str, bytes]:
    """(topic, payload) of one uplink as ``server`` publishes it; ``decoded`` None: no codec ran."""
    when = (at or dt.datetime.now(dt.UTC)).isoformat().replace("+00:00", "Z")
    data = base64.b64encode(frame).decode()
    if server == "chirpstack":
        body: dict[str, Any] = {
            "deduplicationId": str(uuid.uuid4()),
            "time": when,
            "deviceInfo": {
                "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
                "tenantName": "ChirpStack",
                "applicationId": application,
                "applicationName": "city sensors",
                "deviceProfileName": "sensor",
                "deviceName": device_id or dev_eui,
                "devEui": dev_eui,
            },
            "devAddr": "00189440",
            "dr": 5,
            "fCnt": f_cnt,
            "fPort": f_port,
            "data": data,
            "object": decoded,
            "rxInfo": [{"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": rssi, "snr": snr}],
        }
        if decoded is None:
            del body["object"]
        topic = f"application/{application}/device/{dev_eui}/event/up"
        return topic, chirpstack_json(body)
    else:
        ident = device_id or f"eui-{dev_eui.lower()}"
        message: dict[str, Any] = {
            "session_key_id": "AXA50tHUGUucuzS/bCGMNw==",
            "f_port": f_port,
            "f_cnt": f_cnt,
            "frm_payload": data,
            "decoded_payload": decoded,
            "rx_metadata": [
                {"gateway_ids": {"gateway_id": "gtw1", "eui": "9C5C8E00001A05C4"}, "rssi": rssi, "snr": snr}
            ],
            "received_at": when,
        }
        if decoded is None:
            del message["decoded_payload"]
        if f_cnt == 0:
            del message["f_cnt"]  # "Empty fields are omitted from payloads"
        body = {
            "end_device_ids": {
                "device_id": ident,
                "application_ids": {"application_id": application.split("@")[0]},
                "dev_eui": dev_eui.upper(),
            },
            "received_at": when,
            "uplink_message": message,
        }
        topic = f"v3/{application}/devices/{ident}/up"
    return topic, json.dumps(body).encode()


def chirpstack_json(event: dict[str, Any]) -> bytes:
    """An uplink event as ChirpStack encodes it: through its own ``UplinkEvent`` definition and the
    protobuf JSON mapping (defaults left out, ``object`` numbers as doubles); ParseError for a key
    ChirpStack has not. Needs the ``chirpstack-api`` package (a dev dependency)."""
    from chirpstack_api import integration
    from google.protobuf import json_format

    message = json_format.ParseDict(event, integration.UplinkEvent())
    return json_format.MessageToJson(message, indent=None).encode()


class NetworkServerSimulator:
    """The network server side of an MQTT integration, on a real broker (``mqtt://host:port``)."""

    def __init__(self, server: Server, application: str, url: str) -> None:
        parts = urlsplit(url)
        self.server = server
        self.application = application
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1883
        self.downlinks: list[Downlink] = []
        self._client: aiomqtt.Client | None = None

    @property
    def downlink_filter(self) -> str:
        if self.server == "chirpstack":
            return f"application/{self.application}/device/+/command/down"
        return f"v3/{self.application}/devices/+/down/push"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[NetworkServerSimulator]:
        """Connected and recording downlinks until the block ends."""
        async with aiomqtt.Client(
            self.host, self.port, identifier=f"ns-sim-{uuid.uuid4().hex[:8]}"
        ) as client:
            await client.subscribe(self.downlink_filter, qos=1)
            self._client = client
            task = asyncio.create_task(self._record(client), name="ns-sim-downlinks")
            try:
                yield self
            finally:
                self._client = None
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task

    async def _record(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes):
                self.downlinks.append(Downlink(str(message.topic), json.loads(payload)))

    async def uplink(
        self,
        dev_eui: str,
        decoded: dict[str, Any] | None,
        *,
        f_cnt: int,
        f_port: int,
        frame: bytes = b"",
        rssi: int = -80,
        snr: float = 7.5,
        device_id: str | None = None,
        at: dt.datetime | None = None,
    ) -> None:
        """Publish one uplink (QoS 1: the broker keeps it for a persistent subscriber that is away);
        ``at``: the server's receive time (default now)."""
        topic, payload = uplink_message(
            self.server,
            self.application,
            dev_eui,
            decoded,
            f_cnt=f_cnt,
            f_port=f_port,
            frame=frame,
            rssi=rssi,
            snr=snr,
            device_id=device_id,
            at=at,
        )
        await self.publish(topic, payload)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish anything on the integration's broker (bad frames for tests)."""
        assert self._client is not None, "use `async with simulator.running()`"
        await self._client.publish(topic, payload, qos=1)
