"""LoRaWAN uplinks and downlinks as network servers publish them on their MQTT integrations.

ChirpStack v4 publishes ``application/<app>/device/<devEUI>/event/up`` (protobuf JSON mapping:
camelCase, ``object`` from the device profile's codec, ``rxInfo[]``), The Things Stack v3
``v3/<app>[@<tenant>]/devices/<device id>/up`` (``uplink_message.decoded_payload``,
``rx_metadata[]``). Both leave out fields at their default (an ``fCnt`` of 0 is absent). This
module turns either into one ``Uplink``, maps its decoded object through a LoRaWAN profile,
follows frame counters, and builds downlink messages; the MQTT sessions are the agent's
(``edge.lorawan``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Literal

from citygw.contract import wire
from firmware_bridge.profile import LorawanCommand, LorawanField, LorawanProfile

Server = Literal["chirpstack", "tts"]
DEV_EUI = re.compile(r"^[0-9a-fA-F]{16}$")
# Fields the bridge adds to every reading, besides the profile's.
RSSI_FIELD, SNR_FIELD, FCNT_FIELD, LOST_FIELD, RESET_FIELD = (
    "rssi_dbm",
    "snr_db",
    "f_cnt",
    "uplinks_lost",
    "f_cnt_reset",
)
_STRUCT: dict[str, str] = {
    "u8": ">B",
    "i8": ">b",
    "u16be": ">H",
    "u16le": "<H",
    "i16be": ">h",
    "i16le": "<h",
    "u32be": ">I",
    "u32le": "<I",
}


class UplinkError(ValueError):
    """A message from the network server that yields no reading; the message says what and why."""


@dataclass(frozen=True)
class Uplink:
    """One uplink, whichever server published it."""

    server: Server
    dev_eui: str  # lower-case hex
    device_id: str | None  # The Things Stack's device id (its downlink topic needs it)
    f_cnt: int
    f_port: int | None
    object: dict[str, Any] | None  # what the codec decoded; None when no codec ran
    rssi: float | None  # best gateway
    snr: float | None
    gateways: int
    received_ms: int | None


def subscription(server: Server, application: str) -> str:
    """The topic filter of every uplink of ``application`` (ChirpStack: its id; TTS: ``app@tenant``)."""
    if server == "chirpstack":
        return f"application/{application}/device/+/event/up"
    return f"v3/{application}/devices/+/up"


def downlink_topic(server: Server, application: str, device: str) -> str:
    """Where a downlink is queued: ChirpStack by devEUI, The Things Stack by device id."""
    if server == "chirpstack":
        return f"application/{application}/device/{device}/command/down"
    return f"v3/{application}/devices/{device}/down/push"


def downlink_message(server: Server, dev_eui: str, f_port: int, data: bytes, *, confirmed: bool) -> bytes:
    """The JSON a server takes on its downlink topic, ``data`` base64-encoded."""
    encoded = base64.b64encode(data).decode()
    if server == "chirpstack":
        body: dict[str, Any] = {"devEui": dev_eui, "confirmed": confirmed, "fPort": f_port, "data": encoded}
    else:
        item: dict[str, Any] = {"f_port": f_port, "frm_payload": encoded, "priority": "NORMAL"}
        if confirmed:
            item["confirmed"] = True
        body = {"downlinks": [item]}
    return json.dumps(body).encode()


def parse_uplink(server: Server, topic: str, payload: bytes) -> Uplink:
    """The uplink in a message of ``server``'s integration; UplinkError when it is none."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UplinkError(f"{topic}: not JSON ({exc}); {len(payload)} bytes dropped") from None
    if not isinstance(data, dict):
        raise UplinkError(f"{topic}: expected a JSON object, got {type(data).__name__}")
    return _chirpstack(topic, data) if server == "chirpstack" else _tts(topic, data)


def _chirpstack(topic: str, data: dict[str, Any]) -> Uplink:
    info = data.get("deviceInfo")
    if not isinstance(info, dict):
        raise UplinkError(f"{topic}: no deviceInfo: not a ChirpStack v4 uplink event")
    dev_eui = _eui(topic, info.get("devEui"))
    rx = [r for r in _list(data.get("rxInfo")) if isinstance(r, dict)]
    return Uplink(
        server="chirpstack",
        dev_eui=dev_eui,
        device_id=None,
        f_cnt=_count(topic, data.get("fCnt", 0), "fCnt"),
        f_port=_port(data.get("fPort")),
        object=_object(topic, data.get("object"), "object"),
        rssi=_best(rx, "rssi"),
        snr=_best(rx, "snr"),
        gateways=len(rx),
        received_ms=_time_ms(data.get("time")),
    )


def _tts(topic: str, data: dict[str, Any]) -> Uplink:
    ids = data.get("end_device_ids")
    message = data.get("uplink_message")
    if not isinstance(ids, dict) or not isinstance(message, dict):
        raise UplinkError(f"{topic}: no end_device_ids or uplink_message: not a The Things Stack v3 uplink")
    device_id = ids.get("device_id")
    rx = [r for r in _list(message.get("rx_metadata")) if isinstance(r, dict)]
    return Uplink(
        server="tts",
        dev_eui=_eui(topic, ids.get("dev_eui")),
        device_id=device_id if isinstance(device_id, str) else None,
        f_cnt=_count(topic, message.get("f_cnt", 0), "f_cnt"),
        f_port=_port(message.get("f_port")),
        object=_object(topic, message.get("decoded_payload"), "decoded_payload"),
        rssi=_best(rx, "rssi"),
        snr=_best(rx, "snr"),
        gateways=len(rx),
        received_ms=_time_ms(message.get("received_at") or data.get("received_at")),
    )


def _eui(topic: str, value: object) -> str:
    if not isinstance(value, str) or not DEV_EUI.match(value):
        raise UplinkError(f"{topic}: devEUI {value!r} is not 16 hex digits")
    return value.lower()


def _count(topic: str, value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UplinkError(f"{topic}: {name} {value!r} is not a frame counter")
    return value


def _port(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _object(topic: str, value: object, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UplinkError(f"{topic}: {name} is a {type(value).__name__}, not an object")
    return value


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _best(rx: list[dict[str, Any]], key: str) -> float | None:
    """The strongest gateway's value (a frame heard by several gateways has one RSSI per gateway)."""
    values = [v for r in rx if isinstance(v := r.get(key), int | float) and not isinstance(v, bool)]
    return float(max(values)) if values else None


def _time_ms(value: object) -> int | None:
    """Milliseconds since the epoch of an RFC 3339 time (nanoseconds cut to microseconds)."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return int(when.timestamp() * 1000)


def lookup(obj: dict[str, Any], path: str) -> object:
    """The value at a dotted ``path`` (a number indexes a list); KeyError when it is not there."""
    node: object = obj
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(path)
    return node


def field_value(spec: LorawanField, raw: object) -> wire.FieldValue:
    """The engineering value of one decoded value; ValueError saying why it is none."""
    if spec.kind == "bool":
        if not isinstance(raw, bool):
            raise ValueError(f"{spec.path} is {raw!r}, not true or false")
        return raw
    if spec.kind == "string":
        if not isinstance(raw, str):
            raise ValueError(f"{spec.path} is {raw!r}, not a string")
        return raw
    number: float
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"{spec.path} is {raw!r}, not a number")
    if isinstance(raw, int | float):
        number = float(raw)
    elif isinstance(raw, str):
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"{spec.path} is {raw!r}, not a number") from None
    else:
        raise ValueError(f"{spec.path} is a {type(raw).__name__}, not a number")
    value = number * spec.scale + spec.offset
    if not math.isfinite(value):
        raise ValueError(f"{spec.path} is {raw!r}, not a finite number")
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        raise ValueError(f"{spec.path} = {value:g} is outside {_range(spec.min, spec.max)}")
    return value


def _range(low: float | None, high: float | None) -> str:
    if high is None:
        return f"{low:g} or more"
    return f"at most {high:g}" if low is None else f"{low:g}..{high:g}"


@dataclass(frozen=True)
class Mapped:
    """A decoded object through a profile: the fields found, and why the others were left out."""

    fields: dict[str, wire.FieldValue]
    left_out: dict[str, str]


def map_object(profile: LorawanProfile, obj: dict[str, Any] | None) -> Mapped:
    """The profile's fields in a decoded object. A field absent from this uplink is simply not in it
    (devices send different messages on different ports); one present but unusable is left out with
    why. UplinkError when no field of the profile is found."""
    if obj is None:
        raise UplinkError(
            f"no decoded object: the network server ran no codec for this uplink; set the {profile.model} "
            "codec in its device profile (ChirpStack) or payload formatter (The Things Stack)"
        )
    fields: dict[str, wire.FieldValue] = {}
    left_out: dict[str, str] = {}
    for spec in profile.fields:
        try:
            raw = lookup(obj, spec.path)
        except KeyError:
            continue
        try:
            fields[spec.field] = field_value(spec, raw)
        except ValueError as exc:
            left_out[spec.field] = str(exc)
    if not fields:
        keys = ", ".join(sorted(obj)) or "none"
        why = f"; left out: {left_out}" if left_out else ""
        raise UplinkError(f"no field of profile {profile.model} in the decoded object (keys: {keys}){why}")
    return Mapped(fields, left_out)


def encode_command(command: LorawanCommand, value: object) -> bytes:
    """The downlink payload that sets ``command.field`` to ``value``; ValueError when it cannot."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{command.field} takes a number, not {value!r}")
    if (command.min is not None and value < command.min) or (command.max is not None and value > command.max):
        raise ValueError(f"{command.field}={value} is outside {_range(command.min, command.max)}")
    raw = value / command.scale
    if not float(raw).is_integer():
        raise ValueError(f"{command.field}={value} is not a whole number of {command.scale:g} steps")
    try:
        encoded = struct.pack(_STRUCT[command.encoding], int(raw))
    except struct.error:
        raise ValueError(f"{command.field}={value} does not fit in a {command.encoding}") from None
    text = command.template.replace("{value}", encoded.hex().upper())
    return text.encode("ascii") if command.payload == "ascii_hex" else bytes.fromhex(text)


@dataclass(frozen=True)
class Count:
    """What one frame counter says against the last: uplinks lost in between, a reset, a repeat."""

    lost: int = 0
    reset: bool = False
    repeat: bool = False


class FrameCounters:
    """The last uplink frame counter of each device (in memory, from the agent's start).

    A counter that skips ahead means lost uplinks; one that goes back means the device
    rejoined or restarted (its counter starts again at 0); the same counter again is the same
    frame delivered twice (a retransmission, or a redelivery after a reconnect).
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def observe(self, dev_eui: str, f_cnt: int) -> Count:
        last = self._last.get(dev_eui)
        if last is not None and f_cnt == last:
            return Count(repeat=True)
        self._last[dev_eui] = f_cnt
        if last is None:
            return Count()
        if f_cnt < last:
            return Count(reset=True)
        return Count(lost=f_cnt - last - 1)
