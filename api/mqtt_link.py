"""The API's MQTT session: hears agents (status, health, config/state, cmd/result), writes config and cmd.

One paho client per app, started and stopped by the app's lifespan. Paho's network thread only puts
what agents say into a bounded inbox (the newest status and health of each agent replace older ones);
a worker thread applies it to the registry, so no registry write or big payload delays the PUBACK of
the API's own publishes. Publishing waits for the broker's PUBACK, so "pushed" means the
broker has it (retained, for config). A message not acknowledged in time stays in paho's queue and
may still reach the broker (it is sent again after a reconnect): the caller answered "not sent",
so ``on_late_ack`` is called if its PUBACK comes after all, to record what really happened.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from api.registry import Registry, live
from citygw.contract import wire
from citygw.contract.agent_config import BrokerConfig

log = logging.getLogger(__name__)
LISTENED = (
    wire.Channel.STATUS,
    wire.Channel.HEALTH,
    wire.Channel.CONFIG_STATE,
    wire.Channel.CMD_RESULT,
    wire.Channel.UPDATE_STATE,
)
PUBLISH_TIMEOUT_S = 5.0
INBOX_MAX_BYTES = 64 * 1024 * 1024
"""Agents' messages waiting for the registry, in payload bytes; beyond it new ones are dropped (counted)."""
WARN_EVERY_S = 60.0
# Channels where only an agent's newest message matters: a newer one replaces the one waiting.
_NEWEST_ONLY = (wire.Channel.STATUS, wire.Channel.HEALTH)


class LinkUnavailable(RuntimeError):
    """The broker did not take a message (not connected, or no PUBACK in time)."""


@dataclass(slots=True)
class _Unacknowledged:
    on_late_ack: Callable[[], None] | None
    given_up: bool = False


class _Inbox:
    """Agents' messages for the registry in arrival order, bounded in bytes; newest-only ones coalesce."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._waiting: OrderedDict[Hashable, tuple[str, bytes]] = OrderedDict()
        self._bytes = 0
        self._serial = itertools.count()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, agent_id: str, channel: wire.Channel, topic: str, payload: bytes) -> bool:
        """False when the inbox is full and the message was not taken."""
        key: Hashable = (agent_id, channel) if channel in _NEWEST_ONLY else next(self._serial)
        with self._ready:
            replaced = self._waiting.get(key)
            size = len(payload) - (len(replaced[1]) if replaced else 0)
            if self._bytes + size > self._max_bytes:
                return False
            self._waiting[key] = (topic, payload)  # a replaced one keeps its place in the order
            self._bytes += size
            self._ready.notify()
            return True

    def take(self) -> tuple[str, bytes] | None:
        """The oldest message waiting; blocks until there is one; None once closed."""
        with self._ready:
            while not self._waiting and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            _key, message = self._waiting.popitem(last=False)
            self._bytes -= len(message[1])
            return message

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class _Warning:
    """A warning logged at most once per ``every_s``, with how many times it happened meanwhile."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._next_at = 0.0
        self._count = 0

    def __call__(self, message: str, *args: object) -> None:
        self._count += 1
        now = time.monotonic()
        if now < self._next_at:
            return
        log.warning(message + " (%d times in the last %g s at most)", *args, self._count, self._every_s)
        self._count = 0
        self._next_at = now + self._every_s


class AgentLink:
    """The API's connection to the agents through the broker."""

    def __init__(
        self,
        broker_url: str,
        registry: Registry,
        clock: Any,
        *,
        client_id: str = "citygw-api",
        publish_timeout_s: float = PUBLISH_TIMEOUT_S,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> None:
        self._broker = BrokerConfig(
            url=broker_url,
            reconnect_min=0.5,
            reconnect_max=10,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )
        self._registry = registry
        self._clock = clock
        self._connected = threading.Event()
        self._publish_timeout_s = publish_timeout_s
        # By message id: publishes not acknowledged yet, and PUBACKs that came before their publish
        # was registered here (paho may run on_publish before publish() returns to the caller).
        self._unacknowledged: dict[int, _Unacknowledged] = {}
        self._early_acks: set[int] = set()
        self._acks_lock = threading.Lock()
        self.rejected = 0
        self.inbox_dropped = 0
        """Agents' messages dropped because the inbox was full."""
        self.health_devices_left_out = 0
        """Devices left out of health messages: beyond the agent's config and ``UNKNOWN_DEVICES_KEPT``."""
        self._inbox = _Inbox(INBOX_MAX_BYTES)
        self._worker = threading.Thread(target=self._apply_inbox, name="agent-link-registry", daemon=True)
        self._warn_full = _Warning(WARN_EVERY_S)
        self._warn_left_out = _Warning(WARN_EVERY_S)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        if self._broker.username:
            client.username_pw_set(self._broker.username, self._broker.password)
        context = self._broker.tls_context()  # read once: rotating the API's pair takes a restart
        if context is not None:
            client.tls_set_context(context)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._client = client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._worker.start()
        self._client.connect_async(self._broker.hostname, self._broker.port, keepalive=self._broker.keepalive)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._inbox.close()
        if self._worker.is_alive():
            self._worker.join(10)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT link to %s refused: %s", self._broker.redacted_url, reason)
            return
        client.subscribe([(wire.subscription(channel), 1) for channel in LISTENED])
        self._connected.set()
        log.info("MQTT link to %s up", self._broker.redacted_url)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._connected.clear()
        log.info("MQTT link to %s down: %s", self._broker.redacted_url, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        parsed = wire.parse_topic(message.topic)
        if parsed is None or parsed[1] not in LISTENED:
            return
        if not message.payload:
            return  # a cleared retained message
        if not self._inbox.put(parsed[0], parsed[1], message.topic, bytes(message.payload)):
            self.inbox_dropped += 1
            self._warn_full(
                "agents' messages dropped: more than %d bytes wait for the registry; %s is one",
                INBOX_MAX_BYTES,
                message.topic,
            )

    def _apply_inbox(self) -> None:
        while (message := self._inbox.take()) is not None:
            try:
                self._apply(*message)
            except Exception:
                log.exception("%s: could not record it in the registry", message[0])

    def _apply(self, topic: str, raw: bytes) -> None:
        parsed = wire.parse_topic(topic)
        assert parsed is not None  # checked before it entered the inbox
        agent_id, channel = parsed
        try:
            payload = wire.PAYLOADS[channel].model_validate_json(raw)
        except ValidationError as exc:
            self.rejected += 1
            log.warning("%s: invalid %s payload: %s", topic, channel.value, exc.errors()[:3])
            return
        if getattr(payload, "agent", None) != agent_id:
            self.rejected += 1
            log.warning("%s: payload names another agent; ignored", topic)
            return
        now_ms = self._clock()
        left_out = 0
        with self._registry.session() as session:
            if isinstance(payload, wire.Status):
                live.apply_status(session, payload, now_ms=now_ms)
            elif isinstance(payload, wire.Health):
                left_out = live.apply_health(session, payload, now_ms=now_ms)
            elif isinstance(payload, wire.ConfigState):
                live.apply_config_state(session, payload, now_ms=now_ms)
            elif isinstance(payload, wire.CommandResult):
                live.apply_command_result(session, payload, now_ms=now_ms)
            elif isinstance(payload, wire.UpdateState):
                live.apply_update_state(session, payload, now_ms=now_ms)
            session.commit()
        if left_out:
            self.health_devices_left_out += left_out
            self._warn_left_out(
                "%s: %d devices left out: not in the agent's config, beyond the %d others kept",
                topic,
                left_out,
                live.UNKNOWN_DEVICES_KEPT,
            )

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        with self._acks_lock:
            waiting = self._unacknowledged.pop(mid, None)
            if waiting is None:
                self._early_acks.add(mid)
                return
            late = waiting.on_late_ack if waiting.given_up else None
        if late is not None:
            try:
                late()
            except Exception:
                log.exception("recording a late PUBACK (message %d) failed", mid)

    def _publish(
        self, topic: str, payload: bytes, *, retain: bool, on_late_ack: Callable[[], None] | None = None
    ) -> None:
        if not self.connected:
            raise LinkUnavailable(f"not connected to the broker at {self._broker.redacted_url}")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        with self._acks_lock:
            acknowledged = info.mid in self._early_acks
            self._early_acks.discard(info.mid)
            if not acknowledged:
                self._unacknowledged[info.mid] = _Unacknowledged(on_late_ack)
        failure = None
        if not acknowledged:
            try:
                info.wait_for_publish(self._publish_timeout_s)
            except (RuntimeError, ValueError) as exc:
                failure = f"the broker did not take {topic}: {exc}"
        with self._acks_lock:
            waiting = self._unacknowledged.get(info.mid)
            if acknowledged or waiting is None or info.is_published():
                self._unacknowledged.pop(info.mid, None)
                return
            waiting.given_up = True  # from now on a PUBACK calls on_late_ack
        raise LinkUnavailable(failure or f"no PUBACK for {topic} within {self._publish_timeout_s:g} s")

    def push_config(
        self, config: wire.DesiredConfig, *, on_late_ack: Callable[[], None] | None = None
    ) -> None:
        """Publish the desired config, retained, so the agent gets it whenever it connects.

        ``on_late_ack``: called (on paho's thread) if the broker acknowledges it after this raised.
        """
        topic = wire.topic(config.agent, wire.Channel.CONFIG)
        self._publish(topic, wire.encode(config), retain=True, on_late_ack=on_late_ack)

    def restore_config(self, config: wire.DesiredConfig) -> None:
        """Publish ``config`` retained again without waiting (paho's thread may call this): after an
        older version's late PUBACK, the broker must keep the newest one for agents that connect."""
        self._client.publish(
            wire.topic(config.agent, wire.Channel.CONFIG), wire.encode(config), qos=1, retain=True
        )

    def order_update(self, order: wire.UpdateOrder) -> None:
        """Publish the update order retained, so an agent offline now takes it when it connects."""
        self._publish(wire.topic(order.agent, wire.Channel.UPDATE), wire.encode(order), retain=True)

    def send_command(self, command: wire.Command) -> None:
        self._publish(wire.topic(command.agent, wire.Channel.CMD), wire.encode(command), retain=False)

    def publish_alert(self, topic: str, payload: bytes) -> None:
        """An alert event on ``citygw/v1/alerts/<rule>`` (QoS 1, not retained)."""
        self._publish(topic, payload, retain=False)
