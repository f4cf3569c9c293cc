"""The agent's config: its schema (sections, lines, devices, overlays, vehicles) and the cross-checks
a schema cannot express (unique ids, profiles that exist, consoles, reporting by exception).

The agent reads it from its file (``edge.config_file``) and from pushed configs, the API checks a
config with it before pushing one; ``agent_config_check.validate_agent_config`` runs it all. Every
problem is reported as ``FILE: FIELD: what is wrong; fix: what to do``, where FIELD is a dotted path
such as ``devices[2].line``, so a field engineer can fix the file without reading this code.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citygw.contract import wire
from citygw.contract.errors import ConfigError
from citygw.contract.tls import client_context
from firmware_bridge.overlay import OverlayError, ProfileOverlay, apply_overlay
from firmware_bridge.profile import DeadbandSetting, Profile, Protocol

BROKER_URL_ENV = "CITYGW_BROKER_URL"
# Tags the agent sets on readings itself; a device's own tags may not use them.
AGENT_TAGS = frozenset({"site"})
VEHICLE_TAGS = frozenset({"vehicle", "vehicle_label", "route"})
# What an on-board console's profile reads: the GTFS ids of the driver's log-in (empty: nobody).
CONSOLE_FIELDS = ("route_id", "trip_id")
CONSOLE_PROFILE = "onboard_console"
DEFAULT_GPS_PROFILE = "gps_nmea"  # the profile of a GPS device that names none
# A steady device is heard at least this often: the API takes an air-quality reading older than
# 2 h as stale (api.settings aq_max_age_s) and the collector writes device health every 15 min.
MAX_HEARTBEAT_S = 3600.0
SOCKET_SCHEME = "socket://"  # an RTU line's port on a serial server (pyserial's URL form)

Label = wire.Label
Name = wire.Name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(_Section):
    """Where the agent publishes: ``mqtt://[user:pass@]host:port`` or ``mqtts://``."""

    url: str
    keepalive: int = Field(default=30, ge=5, le=3600)
    publish_timeout: float = Field(default=10.0, gt=0, description="seconds to wait for a PUBACK")
    reconnect_min: float = Field(default=0.5, gt=0, le=60, description="first reconnect delay, seconds")
    reconnect_max: float = Field(default=30.0, gt=0, le=600, description="longest reconnect delay, seconds")
    ca_file: Path | None = Field(default=None, description="CA bundle for mqtts:// (system CAs if unset)")
    cert_file: Path | None = Field(
        default=None, description="client certificate (PEM) for the broker's certificate listener"
    )
    key_file: Path | None = Field(default=None, description="the private key (PEM) of cert_file")

    @field_validator("url")
    @classmethod
    def _url_is_mqtt(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"scheme must be mqtt:// or mqtts://, not {parts.scheme or 'none'}://")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError("the port is not a number") from exc
        if not parts.hostname:
            raise ValueError("no host in the URL")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("the URL takes no path or query")
        return url

    @model_validator(mode="after")
    def _client_certificate(self) -> BrokerConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both, or neither")
        if self.cert_file is not None and not self.tls:
            raise ValueError("cert_file needs an mqtts:// URL (the broker's certificate listener)")
        return self

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def tls_files(self) -> dict[str, Path]:
        """The TLS files set, by field name."""
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        return {name: path for name, path in files.items() if path is not None}

    def tls_context(self) -> ssl.SSLContext | None:
        """A fresh TLS context from the files as they are now (None for mqtt://); raises OSError."""
        if not self.tls:
            return None
        return client_context(self.ca_file, self.cert_file, self.key_file)

    @property
    def hostname(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    @property
    def username(self) -> str | None:
        user = urlsplit(self.url).username
        return unquote(user) if user else None

    @property
    def password(self) -> str | None:
        password = urlsplit(self.url).password
        return unquote(password) if password is not None else None

    @property
    def redacted_url(self) -> str:
        """The URL without its password, safe for logs."""
        user = f"{self.username}@" if self.username else ""
        return f"{urlsplit(self.url).scheme}://{user}{self.hostname}:{self.port}"


class JournalConfig(_Section):
    """The on-disk journal.

    ``fsync: normal`` (SQLite synchronous=NORMAL in WAL mode) may lose the readings since the
    last WAL checkpoint on power loss but never corrupts the file; ``full`` syncs every commit,
    which costs SD-card wear and latency (measured: see ``edge.journal``, docs/interfaces.md).
    """

    path: Path
    fsync: Literal["normal", "full"] = "normal"
    quota_mb: float | None = Field(
        default=None, gt=0, description="disk quota of the backlog; none: the disk"
    )
    on_full: Literal["drop_oldest", "drop_newest", "stop_slow"] = Field(
        default="drop_oldest", description="what gives way when the quota is reached"
    )
    slow_poll_s: float = Field(
        default=60.0, gt=0, description="stop_slow: devices polled this rarely or less are refused first"
    )


class PublishConfig(_Section):
    batch_max_readings: int = Field(default=500, ge=1, le=wire.MAX_READINGS_PER_BATCH)
    interval: float = Field(
        default=1.0, gt=0, le=3600, description="seconds readings may wait to share a batch"
    )
    inflight: int = Field(default=4, ge=1, le=100, description="telemetry batches awaiting PUBACK at once")
    backlog_rate: float | None = Field(
        default=2000.0, gt=0, description="readings/s of backlog after an outage (live data is not capped)"
    )
    end_to_end_ack: bool = Field(
        default=True,
        description="keep a batch in the journal after the broker's PUBACK until a collector confirms it "
        "stored it (ack channel), and send it again if the broker lost it; false: the PUBACK is final",
    )
    ack_timeout: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="seconds a held batch waits for its confirmation before it is sent again (only once "
        "a later batch was confirmed); while no collector ever confirmed one, before it is let go",
    )


class HealthConfig(_Section):
    interval: float = Field(default=10.0, gt=0, le=3600, description="seconds between health messages")


class _Line(_Section):
    id: Label
    timeout: float = Field(default=1.0, gt=0, le=60, description="seconds to wait for an answer")


class TcpLine(_Line):
    """A Modbus TCP endpoint (a device or a serial gateway)."""

    kind: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)


class RtuLine(_Line):
    """An RS-485 Modbus RTU bus on a serial port (device path or pyserial URL), or behind a serial
    server that passes RTU frames through TCP (``socket://host:port``; baud and format its RS-485 side's)."""

    kind: Literal["rtu"]
    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    @field_validator("port")
    @classmethod
    def _socket_url(cls, port: str) -> str:
        if port.startswith(SOCKET_SCHEME):
            parts = urlsplit(port)
            try:
                number = parts.port
            except ValueError:
                number = None
            if not parts.hostname or number is None or parts.path not in ("", "/") or parts.query:
                raise ValueError(f"a serial server is {SOCKET_SCHEME}host:port, e.g. socket://10.0.4.7:4001")
        return port

    @property
    def socket_address(self) -> tuple[str, int] | None:
        """(host, port) of the serial server when the port is ``socket://``; None for a serial port."""
        if not self.port.startswith(SOCKET_SCHEME):
            return None
        parts = urlsplit(self.port)
        return parts.hostname or "", parts.port or 0

    @property
    def over_tcp(self) -> bool:
        return self.socket_address is not None


class NmeaLine(_Line):
    """A GPS receiver speaking NMEA 0183 on a serial port (device path or pyserial URL)."""

    kind: Literal["nmea"]
    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0)
    timeout: float = Field(default=5.0, gt=0, le=600, description="seconds of silence before a timeout")


class MbusLine(_Line):
    """An M-Bus line (EN 13757-2): a serial port through a level converter (device path or pyserial
    URL), or an M-Bus gateway on the network as ``socket://host:port``; 8E1 at ``baudrate``."""

    kind: Literal["mbus"]
    port: str = Field(min_length=1)
    baudrate: Literal[300, 600, 1200, 2400, 4800, 9600, 19200, 38400] = 2400
    retries: int = Field(default=1, ge=0, le=5, description="repeats of a request that got no usable answer")


class OpcUaLine(_Line):
    """An OPC UA server (a water utility's SCADA): its devices are objects in its address space.

    ``subscribe``: the server reports data changes (sampling and deadbands from the profile, published
    every device's ``poll_s``); false: the agent reads every ``poll_s``. Security policy None, or
    Basic256Sha256 signing (``sign``) or signing and encrypting (``sign_and_encrypt``) with the agent's
    certificate; a user name and password when the server asks for one.
    """

    kind: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://[^/:]+(:\d+)?(/.*)?$", description="opc.tcp://host:4840/path")
    timeout: float = Field(default=5.0, gt=0, le=60, description="seconds to wait for an answer")
    subscribe: bool = True
    security: Literal["none", "sign", "sign_and_encrypt"] = "none"
    certificate: Path | None = Field(default=None, description="the agent's certificate (DER or PEM)")
    private_key: Path | None = Field(default=None, description="the private key of certificate (PEM)")
    server_certificate: Path | None = Field(
        default=None, description="the server's certificate, to check it is the server it claims"
    )
    username: str | None = None
    password: str | None = None
    reconnect_min: float = Field(default=1.0, gt=0, le=60, description="first reconnect delay, seconds")
    reconnect_max: float = Field(default=60.0, gt=0, le=600, description="longest reconnect delay, seconds")

    @model_validator(mode="after")
    def _security_files(self) -> OpcUaLine:
        if self.security != "none" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security {self.security} needs certificate and private_key: add both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both, or neither")
        if self.reconnect_min > self.reconnect_max:
            raise ValueError(f"reconnect_min {self.reconnect_min} is above reconnect_max: lower it")
        return self


class LorawanLine(_Line):
    """A LoRaWAN network server's MQTT integration: its uplinks become readings, commands downlinks.

    ``server``: chirpstack (v4) or tts (The Things Stack v3); ``application``: the ChirpStack
    application id, or the TTS ``<application id>@<tenant id>`` (the id alone on TTS Open Source).
    ``broker`` is the network server's MQTT broker, not CityGW's (the password: a TTS API key).
    """

    kind: Literal["lorawan"]
    server: Literal["chirpstack", "tts"]
    application: str = Field(min_length=1, pattern=r"^[^/#+\s]+$")
    broker: BrokerConfig
    qos: Literal[0, 1] | None = Field(
        default=None,
        description="subscription QoS; default 1 for chirpstack, 0 for tts (it serves QoS 0 only)",
    )
    missed_uplinks: int = Field(
        default=3, ge=1, le=100, description="a device silent this many poll_s is reported as timeout"
    )
    password_env: str | None = Field(
        default=None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="the environment variable holding the broker password (a TTS API key), so that no "
        "config file or pushed config carries it",
    )

    @model_validator(mode="after")
    def _tts_qos(self) -> LorawanLine:
        if self.server == "tts" and self.qos == 1:
            raise ValueError("The Things Stack's MQTT server serves QoS 0 only: set qos 0 or remove it")
        if self.password_env is not None and self.broker.password is not None:
            raise ValueError(
                "a password in broker.url and password_env: keep the password in the environment only"
            )
        return self

    def password(self) -> str | None:
        """The broker password: ``password_env``'s (KeyError naming it when unset), else the URL's."""
        if self.password_env is None:
            return self.broker.password
        value = os.environ.get(self.password_env)
        if value is None:
            raise KeyError(
                f"environment variable {self.password_env} (password_env of line {self.id}) is not set"
            )
        return value

    @property
    def subscription_qos(self) -> int:
        return self.qos if self.qos is not None else (1 if self.server == "chirpstack" else 0)


class Packet(_Section):
    """Bytes a modem sends of its own accord (a heartbeat), written as ``text`` or as ``hex``."""

    text: str | None = Field(default=None, min_length=1, max_length=80)
    hex: str | None = Field(default=None, min_length=2, max_length=160)

    @field_validator("hex")
    @classmethod
    def _hex_digits(cls, value: str | None) -> str | None:
        return None if value is None else parse_hex(value).hex()

    @model_validator(mode="after")
    def _one_form(self) -> Packet:
        if (self.text is None) == (self.hex is None):
            raise ValueError("give the bytes as text: ... or as hex: ..., one of the two")
        return self

    @property
    def data(self) -> bytes:
        return self.text.encode() if self.text is not None else bytes.fromhex(self.hex or "")


class Registration(_Section):
    """How a dial-in modem names itself in the first bytes it sends: each device's ``modem`` is that name.

    ``text``: ASCII text (a user-defined packet, "LOGIN:1001"); ``hex``: raw bytes, written as hex
    digits (a MAC, a binary id); ``imei``: the modem's 15-digit IMEI in ASCII.
    """

    kind: Literal["text", "hex", "imei"]
    timeout: float = Field(
        default=10.0, gt=0, le=300, description="seconds a new connection has to send its registration"
    )


class DialinLine(_Line):
    """Cellular modems (DTUs) that connect in to the agent and carry Modbus RTU or TCP frames.

    The agent listens on ``listen`` (host:port); each modem names itself by its ``registration``
    packet, or, without one, by the unit id that answers on its connection.
    """

    kind: Literal["dialin"]
    listen: str = Field(min_length=3, description="host:port the agent listens on (0.0.0.0:PORT for all)")
    framing: Literal["rtu", "tcp"] = Field(
        default="rtu", description="rtu: transparent RTU frames (CRC); tcp: Modbus TCP frames (MBAP)"
    )
    registration: Registration | None = None
    heartbeat: Packet | None = Field(default=None, description="bytes the modem sends while idle (dropped)")
    timeout: float = Field(default=3.0, gt=0, le=60, description="seconds to wait for an answer")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        listen_address(value)
        return value

    @property
    def address(self) -> tuple[str, int]:
        return listen_address(self.listen)


def parse_hex(value: str) -> bytes:
    """Hex digits, spaces and colons allowed between bytes ("4C 4F 47", "00:1a:2b"); ValueError else."""
    digits = value.replace(" ", "").replace(":", "")
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"{value!r} is not hex: write byte by byte, e.g. 4C4F47 or 4C 4F 47") from None
    if not data:
        raise ValueError("no bytes given")
    return data


def listen_address(value: str) -> tuple[str, int]:
    """(host, port) of ``host:port``; ValueError naming the form."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"listen is host:port, e.g. 0.0.0.0:9502 (got {value!r})")
    return host.strip("[]"), int(port)


def _luhn(digits: str) -> bool:
    """Whether the last digit is the Luhn check digit of the others (an IMEI's 15th digit)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        digit = int(char) * (2 if i % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


def modem_id(registration: Registration, value: str) -> bytes:
    """The registration packet a device's ``modem`` names, as the modem sends it; ValueError if malformed."""
    if registration.kind == "hex":
        return parse_hex(value)
    if registration.kind == "imei":
        if not (len(value) == 15 and value.isdigit()):
            raise ValueError(f"{value!r} is no IMEI: 15 digits (the modem's label, or AT+CGSN)")
        if not _luhn(value):
            raise ValueError(f"IMEI {value} fails its check digit (the last): a typo?")
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{value!r} is not ASCII text") from None


class DlmsLine(_Line):
    """A DLMS/COSEM line (IEC 62056): HDLC on a serial port (optical probe or RS-485; device path or
    pyserial URL) or over TCP (``socket://host:port``), or the IEC 62056-47 wrapper on TCP."""

    kind: Literal["dlms"]
    port: str = Field(min_length=1)
    transport: Literal["hdlc", "wrapper"] = "hdlc"
    baudrate: int = Field(default=9600, gt=0)
    timeout: float = Field(default=2.0, gt=0, le=60, description="seconds to wait for an answer")
    retries: int = Field(default=1, ge=0, le=5, description="repeats of a frame that got no usable answer")

    @model_validator(mode="after")
    def _wrapper_on_tcp(self) -> DlmsLine:
        if self.transport == "wrapper" and not self.port.startswith(SOCKET_SCHEME):
            raise ValueError(
                "the wrapper runs on TCP: write port: socket://host:4059, or use transport: hdlc"
            )
        return self


AnyLine = TcpLine | RtuLine | NmeaLine | MbusLine | OpcUaLine | LorawanLine | DialinLine | DlmsLine
Line = Annotated[
    AnyLine,
    Field(discriminator="kind"),
]


class DlmsAddress(_Section):
    """How a DLMS meter is reached: server (logical) address, HDLC physical address on a shared bus,
    client address, and the Low Level Security password (none: the public client, no security)."""

    logical: int = Field(default=1, ge=0, le=0x3FFF)
    physical: int | None = Field(default=None, ge=0, le=0x3FFF)
    client: int = Field(
        default=16, ge=0, le=0x7F, description="16: public client; 17 or as the meter says: LLS"
    )
    password: str | None = Field(default=None, min_length=1, max_length=64)

    @property
    def meter(self) -> Any:
        """The ``firmware_bridge.dlms.Meter`` this address stands for."""
        from firmware_bridge.dlms import Meter

        return Meter(logical=self.logical, physical=self.physical, client=self.client, password=self.password)


class Location(_Section):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Vehicle(_Section):
    """The vehicle a device rides in; becomes the tags of its readings (a GPS device's, a validator's).

    ``console`` names the device of this agent that is the vehicle's on-board console: the route
    and trip the driver logged in to there tag the readings of every device in the vehicle.
    """

    id: Label
    label: Label
    route: Label | None = Field(default=None, description="the route when the console names none")
    console: Label | None = Field(default=None, description="device id of the vehicle's on-board console")
    console_expiry_s: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="a console silent this long no longer says the route and trip (the trip may be over)",
    )

    @model_validator(mode="after")
    def _expiry_needs_console(self) -> Vehicle:
        if self.console is None and "console_expiry_s" in self.model_fields_set:
            raise ValueError("console_expiry_s is for a vehicle with a console: add console or remove it")
        return self


class Device(_Section):
    id: Label
    line: str
    profile: str | None = Field(
        default=None,
        description="device profile name (Modbus and OPC UA lines; GPS lines default to gps_nmea)",
    )
    unit: int | None = Field(default=None, ge=1, le=247, description="Modbus unit id (Modbus lines)")
    modem: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        description="dialin lines with a registration: the registration id of the modem the device is behind",
    )
    address: int | str | None = Field(
        default=None,
        description="M-Bus meter (mbus lines): primary address 0-250, or secondary address as 16 hex digits "
        "(id, manufacturer, version, medium; F for a wildcard)",
    )

    @field_validator("address")
    @classmethod
    def _mbus_address(cls, value: int | str | None) -> int | str | None:
        from firmware_bridge.mbus import parse_address

        return None if value is None else parse_address(value)

    poll_s: float = Field(gt=0, le=86400)
    tags: dict[Name, Label] = Field(
        default_factory=dict, max_length=wire.MAX_TAGS_PER_READING - len(AGENT_TAGS) - len(VEHICLE_TAGS)
    )
    location: Location | None = None
    vehicle: Vehicle | None = None
    heartbeat_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_HEARTBEAT_S,
        description="report by exception: a poll's reading is published when a field moved beyond its "
        "deadband, else once this long after the last published one (none: every poll is published)",
    )
    report: dict[Name, DeadbandSetting] = Field(
        default_factory=dict,
        description="per field: a deadband in its unit (0.5), a percentage of the last published value "
        "(5%) or on_change; replaces the profile's; needs heartbeat_s",
    )
    node: str | None = Field(
        default=None,
        min_length=1,
        description="OPC UA: the NodeId of the device's object (nsu=<URI>;s=PS1), the start of its "
        "profile's browse paths (default: the Objects folder)",
    )
    dlms: DlmsAddress | None = Field(
        default=None,
        description="DLMS meter (dlms lines): its addresses and password; none: logical 1, public",
    )
    overlay: ProfileOverlay | None = Field(
        default=None,
        description="what this device does differently from its profile: timing, max_registers, a subset "
        "of fields, per-field scale/offset/order/write_function (docs/profiles.md)",
    )
    dev_eui: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Fa-f]{16}$",
        description="LoRaWAN lines: the device's DevEUI (16 hex digits), how its uplinks are known",
    )
    ns_device_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9](?:[-]?[a-z0-9]){1,35}$",
        description="The Things Stack lines: the device id there (downlinks go to it); default: the id in "
        "the device's last uplink",
    )


class RemoteConfigSettings(_Section):
    """Configs pushed on the ``config`` topic."""

    enabled: bool = True
    grace_s: float = Field(
        default=30.0, gt=0, le=3600, description="seconds a changed line has to answer before rollback"
    )


class UpdateSettings(_Section):
    """Signed releases the API rolls out (docs/deploy.md, "Agent software updates")."""

    public_keys: list[str] = Field(
        min_length=1, description="release keys pinned: ed25519:<base64>, as citygw release keygen prints"
    )
    api_url: str = Field(
        description="the API as this agent reaches it, https://host[:port]: releases come from it"
    )
    ca_file: Path | None = Field(default=None, description="CA bundle for api_url (system CAs if unset)")
    staging_dir: Path = Field(
        default=Path("/var/lib/citygw/releases"), description="unpacked releases, current, trial, result"
    )
    health_deadline_s: float = Field(
        default=120.0, gt=0, le=3600, description="a new version must be healthy this soon, or goes back"
    )
    download_timeout_s: float = Field(
        default=3600.0, gt=0, le=86400, description="a download retried (resumed) this long, then failed"
    )

    @field_validator("public_keys")
    @classmethod
    def _keys_parse(cls, keys: list[str]) -> list[str]:
        from citygw.contract.release import parse_public_key

        for index, key in enumerate(keys):
            try:
                parse_public_key(key)
            except ValueError as exc:
                raise ValueError(f"public_keys[{index}]: {exc}") from None
        return keys

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("api_url is http(s)://host[:port], the API's address as this agent reaches it")
        return url.rstrip("/")


class AgentConfig(_Section):
    agent_id: wire.AgentId
    site: Label
    broker: BrokerConfig
    journal: JournalConfig
    publish: PublishConfig = PublishConfig()
    health: HealthConfig = HealthConfig()
    remote: RemoteConfigSettings = RemoteConfigSettings()
    update: UpdateSettings | None = None
    lines: list[Line] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)

    @field_validator("journal", mode="before")
    @classmethod
    def _journal_shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    def line(self, line_id: str) -> AnyLine:
        """The line called ``line_id``."""
        for line in self.lines:
            if line.id == line_id:
                return line
        raise KeyError(line_id)

    def devices_on(self, line_id: str) -> list[Device]:
        return [device for device in self.devices if device.line == line_id]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file."""

    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}; fix: {self.fix}"


class AgentConfigError(ConfigError, ValueError):
    """A config file that cannot be used; ``problems`` says where and how to fix each."""

    def __init__(self, file: Path, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = list(problems)
        super().__init__("\n".join(f"{file}: {problem}" for problem in self.problems))


ProfileCheck = Callable[[str], object]


def check_references(config: AgentConfig, profiles: ProfileCheck) -> list[Problem]:
    """What a schema cannot see: ids that must be unique, lines and profiles that must exist."""
    problems: list[Problem] = []
    line_ids = [line.id for line in config.lines]
    defined = ", ".join(line_ids) or "none"
    for i, line_id in enumerate(line_ids):
        if line_id in line_ids[:i]:
            problems.append(
                Problem(f"lines[{i}].id", f"line id {line_id!r} is used twice", "give each line its own id")
            )
    device_ids = [device.id for device in config.devices]
    units: dict[tuple[str, int], str] = {}
    vehicles: dict[str, str] = {}
    on_board: list[tuple[str, Vehicle]] = []  # Modbus devices riding in a vehicle (a bus's validator)
    gps_lines: dict[str, str] = {}
    meters: dict[tuple[str, int | str], str] = {}  # (M-Bus line, address) -> device id
    checked_profiles: dict[str, str | None] = {}
    lorawan_euis: dict[tuple[str, str], str] = {}
    for i, device in enumerate(config.devices):
        at = f"devices[{i}]"
        if device.id in device_ids[:i]:
            problems.append(
                Problem(f"{at}.id", f"device id {device.id!r} is used twice", "give each device its own id")
            )
        for tag in sorted(set(device.tags) & (wire.RESERVED_TAGS | AGENT_TAGS | VEHICLE_TAGS)):
            problems.append(
                Problem(f"{at}.tags.{tag}", f"tag {tag!r} is set by the agent or the collector", "remove it")
            )
        if device.line not in line_ids:
            problems.append(
                Problem(
                    f"{at}.line", f"unknown line {device.line!r}; defined lines: {defined}", "use one of them"
                )
            )
            continue
        line = config.line(device.line)
        problems += _modem_problems(at, device, line)
        if device.dev_eui is not None and line.kind != "lorawan":
            problems.append(
                Problem(f"{at}.dev_eui", f"line {line.id!r} is no LoRaWAN line", "remove dev_eui")
            )
        if isinstance(line, LorawanLine):
            problems += _lorawan_device_problems(at, device, line, lorawan_euis)
            continue
        if line.kind == "opcua":
            problems += _opcua_device_problems(at, device, line.id)
            continue
        if device.node is not None:
            problems.append(Problem(f"{at}.node", f"line {line.id!r} is no OPC UA line", "remove node"))
        if line.kind == "mbus":
            problems += _mbus_device_problems(at, device, line, meters)
            continue
        if isinstance(line, DlmsLine):
            problems += _dlms_device_problems(at, device, line, meters)
            continue
        if device.dlms is not None:
            problems.append(
                Problem(f"{at}.dlms", f"line {line.id!r} is no DLMS line", "remove dlms (DLMS meters only)")
            )
        if device.address is not None:
            problems.append(
                Problem(
                    f"{at}.address",
                    f"line {line.id!r} is no M-Bus line",
                    "remove address (M-Bus meters only)",
                )
            )
        if line.kind == "nmea":
            if device.vehicle is None:
                problems.append(
                    Problem(
                        f"{at}.vehicle",
                        f"line {line.id!r} is a GPS line",
                        "add vehicle: {id: ..., label: ...}",
                    )
                )
            elif device.vehicle.id in vehicles:
                problems.append(
                    Problem(
                        f"{at}.vehicle.id",
                        f"vehicle {device.vehicle.id!r} is already on device {vehicles[device.vehicle.id]!r}",
                        "give each vehicle its own id",
                    )
                )
            else:
                vehicles[device.vehicle.id] = device.id
            if device.unit is not None:
                problems.append(Problem(f"{at}.unit", f"line {line.id!r} is a GPS line", "remove unit"))
            if device.profile is not None:
                problems += _nmea_profile_problems(f"{at}.profile", device.profile)
            if line.id in gps_lines:
                problems.append(
                    Problem(
                        f"{at}.line",
                        f"GPS line {line.id!r} already feeds device {gps_lines[line.id]!r}",
                        "a GPS receiver reports one vehicle: give this device its own line",
                    )
                )
            gps_lines.setdefault(line.id, device.id)
            continue
        if device.vehicle is not None:
            on_board.append((at, device.vehicle))
        bus, key = _modem_bus(line, device)
        if device.unit is None:
            problems.append(Problem(f"{at}.unit", f"line {line.id!r} is a Modbus line", "add unit: <1-247>"))
        elif (key, device.unit) in units:
            problems.append(
                Problem(
                    f"{at}.unit",
                    f"unit {device.unit} on line {bus!r} is already {units[key, device.unit]!r}",
                    "set the unit id the device answers to (each device on a line has its own)",
                )
            )
        else:
            units[(key, device.unit)] = device.id
        if device.profile is None:
            problems.append(
                Problem(f"{at}.profile", "a Modbus device needs a profile", "add profile: <name>")
            )
            continue
        if device.profile not in checked_profiles:
            try:
                profiles(device.profile)
                checked_profiles[device.profile] = None
            except Exception as exc:
                checked_profiles[device.profile] = str(exc) or type(exc).__name__
        error = checked_profiles[device.profile]
        if error is not None:
            known = ", ".join(known_profiles()) or "none"
            problems.append(
                Problem(
                    f"{at}.profile",
                    f"cannot load profile {device.profile!r}: {error}",
                    f"use a profile name from firmware_bridge/profiles ({known}) or a path to a profile file",
                )
            )
    for at, vehicle in on_board:
        if vehicle.id not in vehicles:
            problems.append(
                Problem(
                    f"{at}.vehicle.id",
                    f"no GPS device of this agent rides in vehicle {vehicle.id!r}",
                    f"use the vehicle of the GPS device ({', '.join(sorted(vehicles)) or 'none defined'})",
                )
            )
    return problems


def device_profile(device: Device, profiles: ProfileCheck) -> Profile | None:
    """The device's profile with its overlay applied; None for a GPS device or a stand-in (tests)."""
    profile = profiles(device.profile) if device.profile is not None else None
    return apply_overlay(profile, device.overlay) if isinstance(profile, Profile) else None


def check_overlays(config: AgentConfig, profiles: ProfileCheck) -> list[Problem]:
    """Each device's overlay applies to its profile (known fields, values a profile may hold), and
    TCP-only timing is not set on a device on a serial port."""
    problems: list[Problem] = []
    for i, device in enumerate(config.devices):
        if device.overlay is None:
            continue
        at = f"devices[{i}].overlay"
        line = config.line(device.line)
        if line.kind in ("nmea", "mbus", "opcua", "lorawan", "dlms"):
            what = {
                "nmea": "a GPS device",
                "mbus": "an M-Bus meter",
                "opcua": "an OPC UA device",
                "lorawan": "a LoRaWAN device",
                "dlms": "a DLMS meter",
            }[line.kind]
            problems.append(
                Problem(at, f"device {device.id!r} is {what}, it has no register map", "remove overlay")
            )
            continue
        tcp_only = sorted({"connect_delay_s", "close_between_polls"} & set(device.overlay.timing or {}))
        if isinstance(line, DialinLine) and "close_between_polls" in tcp_only:
            problems.append(
                Problem(
                    f"{at}.timing.close_between_polls",
                    f"device {device.id!r} is behind a dialin modem: the modem opens the connection, "
                    "the agent cannot open it again",
                    "remove close_between_polls",
                )
            )
        if isinstance(line, RtuLine) and not line.over_tcp and tcp_only:
            problems.append(
                Problem(
                    f"{at}.timing.{tcp_only[0]}",
                    f"device {device.id!r} is on serial port {line.port}: {tcp_only[0]} is for a TCP "
                    "connection",
                    "remove it (it applies on tcp lines and socket:// serial servers)",
                )
            )
        try:
            device_profile(device, profiles)
        except OverlayError as exc:
            problems += [
                Problem(f"{at}.{p.where}", f"device {device.id!r}: {p.what}", p.fix) for p in exc.problems
            ]
    return problems


def check_consoles(config: AgentConfig, profiles: ProfileCheck) -> list[Problem]:
    """Each ``vehicle.console`` names a Modbus device of this agent reading the route and trip.

    One console per vehicle (named alike on every device of the vehicle that names it) and one
    vehicle per console; a console that rides in a vehicle rides in that one.
    """
    devices = {device.id: device for device in config.devices}
    problems: list[Problem] = []
    of_vehicle: dict[str, tuple[str, Vehicle]] = {}  # vehicle id -> (where it was named, its block)
    serves: dict[str, str] = {}  # console device id -> vehicle id
    for i, device in enumerate(config.devices):
        vehicle = device.vehicle
        if vehicle is None or vehicle.console is None:
            continue
        at = f"devices[{i}].vehicle.console"
        named_at, named = of_vehicle.setdefault(vehicle.id, (at, vehicle))
        if (named.console, named.console_expiry_s) != (vehicle.console, vehicle.console_expiry_s):
            problems.append(
                Problem(
                    at,
                    f"vehicle {vehicle.id!r} already has console {named.console!r} "
                    f"(expiry {named.console_expiry_s:g} s) at {named_at}",
                    "give the vehicle one console, named alike on each of its devices",
                )
            )
            continue
        if serves.setdefault(vehicle.console, vehicle.id) != vehicle.id:
            problems.append(
                Problem(
                    at,
                    f"device {vehicle.console!r} is the console of vehicle {serves[vehicle.console]!r}",
                    "a console serves one vehicle: name the console of this vehicle",
                )
            )
            continue
        console = devices.get(vehicle.console)
        fix = (
            f"name the device of this agent that is the vehicle's on-board console "
            f"(a Modbus device whose profile reads {' and '.join(CONSOLE_FIELDS)}, e.g. {CONSOLE_PROFILE})"
        )
        if console is None:
            problems.append(Problem(at, f"no device {vehicle.console!r} on this agent", fix))
        elif console.profile is None or config.line(console.line).kind in (
            "nmea",
            "mbus",
            "opcua",
            "lorawan",
            "dlms",
        ):
            problems.append(Problem(at, f"device {console.id!r} is not a Modbus device", fix))
        elif console.vehicle is not None and console.vehicle.id != vehicle.id:
            problems.append(
                Problem(
                    at,
                    f"device {console.id!r} rides in vehicle {console.vehicle.id!r}, not {vehicle.id!r}",
                    f"name the console riding in {vehicle.id!r}, or set that device's vehicle to it",
                )
            )
        else:
            profile = device_profile(console, profiles)  # a stand-in (tests) is taken on trust
            read = {spec.field for spec in profile.select()} if profile is not None else CONSOLE_FIELDS
            missing = [name for name in CONSOLE_FIELDS if name not in read]
            if missing:
                problems.append(
                    Problem(
                        at,
                        f"device {console.id!r} has profile {console.profile!r}, "
                        f"which reads no {', '.join(missing)}",
                        fix,
                    )
                )
    return problems


def check_reporting(config: AgentConfig, profiles: ProfileCheck) -> list[Problem]:
    """Report by exception: a heartbeat no shorter than the poll, deadbands on fields the profile reads."""
    from firmware_bridge.profile import (
        DlmsField,
        MbusField,
        RegisterSpec,
        deadband_problem,
        load_dlms_profile,
        load_mbus_profile,
    )

    problems: list[Problem] = []
    for i, device in enumerate(config.devices):
        at = f"devices[{i}]"
        if device.heartbeat_s is None:
            if device.report:
                problems.append(
                    Problem(
                        f"{at}.report",
                        "deadbands without a heartbeat: a steady device would never be heard",
                        "add heartbeat_s: <seconds> (e.g. 900), or remove report",
                    )
                )
            continue
        reports_itself = _REPORTS_ITSELF.get(config.line(device.line).kind)
        if reports_itself is not None:
            problems.append(Problem(f"{at}.heartbeat_s", reports_itself, "remove heartbeat_s and report"))
            continue
        if device.heartbeat_s < device.poll_s:
            problems.append(
                Problem(
                    f"{at}.heartbeat_s",
                    f"heartbeat_s {device.heartbeat_s:g} is shorter than poll_s {device.poll_s:g}: "
                    "a heartbeat is a poll's own reading",
                    f"set heartbeat_s to {device.poll_s:g} or more (e.g. 900), or remove it to publish "
                    "every poll",
                )
            )
        fields: dict[str, RegisterSpec | MbusField | DlmsField]
        if config.line(device.line).kind == "mbus":  # its profile was checked by check_references
            fields = {spec.field: spec for spec in load_mbus_profile(device.profile or "").field_specs}
        elif config.line(device.line).kind == "dlms":
            fields = {spec.field: spec for spec in load_dlms_profile(device.profile or "").field_specs}
        else:
            profile = device_profile(device, profiles)  # a stand-in (tests) is taken on trust
            if profile is None:
                continue
            fields = {spec.field: spec for spec in profile.select()}
        for name, setting in device.report.items():
            spec = fields.get(name)
            if spec is None:
                problems.append(
                    Problem(
                        f"{at}.report.{name}",
                        f"profile {device.profile!r} reads no field {name!r}",
                        f"use one of its fields: {', '.join(fields)}",
                    )
                )
                continue
            problem = deadband_problem(spec, setting)
            if problem is not None:
                problems.append(Problem(f"{at}.report.{name}", problem.what, problem.fix))
    return problems


# Line kinds whose devices report by exception on their own: why a heartbeat_s does not apply.
_REPORTS_ITSELF = {
    "lorawan": "a LoRaWAN device reports when it transmits; each uplink is published",
    "opcua": "an OPC UA device reports by exception through its subscription (profile deadbands)",
    "nmea": "a GPS device already reports by exception (every poll_s, at once on a stop or a turn)",
}


def known_profiles() -> list[str]:
    """Names of the Modbus profiles shipped in ``firmware_bridge/profiles``."""
    from firmware_bridge.profile import available_profiles

    return available_profiles()


_REMOVE_UNIT_ADDRESS = {"unit": "remove unit", "address": "remove address"}
# Per profile kind of a line of its own: (the kind's name, what a device of it is, an article for the kind).
_LINE_PROFILE_KINDS: dict[Protocol, tuple[str, str, str]] = {
    "opcua": ("OPC UA", "an OPC UA device", "an"),
    "mbus": ("M-Bus", "an M-Bus meter", "an"),
    "dlms": ("DLMS", "a DLMS meter", "a"),
    "lorawan": ("LoRaWAN", "a LoRaWAN device", "a"),
}


def _keys_of_other_lines(at: str, device: Device, why: str, fixes: dict[str, str]) -> list[Problem]:
    """A problem for each of ``fixes``' device keys that is set, though it belongs to other line kinds."""
    return [
        Problem(f"{at}.{key}", why, fix) for key, fix in fixes.items() if getattr(device, key) is not None
    ]


def _line_profile_problems(at: str, device: Device, kind: Protocol) -> list[Problem]:
    """The device names a loadable profile of ``kind`` (its line's protocol)."""
    from firmware_bridge import profile

    name, a_device, article = _LINE_PROFILE_KINDS[kind]
    known = ", ".join(profile.available_profiles(kind)) or "none"
    if device.profile is None:
        return [Problem(f"{at}.profile", f"{a_device} needs a profile", f"add profile: ({known})")]
    try:
        getattr(profile, f"load_{kind}_profile")(device.profile)
    except Exception as exc:
        return [
            Problem(
                f"{at}.profile",
                f"cannot load {name} profile {device.profile!r}: {exc}",
                f"use {article} {kind} profile ({known}) or a path to one",
            )
        ]
    return []


def _opcua_device_problems(at: str, device: Device, line_id: str) -> list[Problem]:
    """An OPC UA device names an opcua profile and no Modbus unit; its node is a NodeId."""
    from firmware_bridge.profile import NODE_ID_PATTERN

    problems = _keys_of_other_lines(at, device, f"line {line_id!r} is an OPC UA line", _REMOVE_UNIT_ADDRESS)
    if device.node is not None and not re.match(NODE_ID_PATTERN, device.node):
        problems.append(
            Problem(f"{at}.node", f"{device.node!r} is no NodeId", "write nsu=<namespace URI>;s=<name>")
        )
    return problems + _line_profile_problems(at, device, "opcua")


def _mbus_device_problems(
    at: str, device: Device, line: MbusLine, meters: dict[tuple[str, int | str], str]
) -> list[Problem]:
    """An M-Bus meter names an address (unique on its line) and an mbus profile, and no Modbus unit."""
    from firmware_bridge.mbus import parse_address

    problems = _keys_of_other_lines(
        at, device, f"line {line.id!r} is an M-Bus line", {"unit": "remove unit; use address"}
    )
    if device.address is None:
        problems.append(
            Problem(
                f"{at}.address",
                f"line {line.id!r} is an M-Bus line",
                "add address: <primary 0-250> or <16-digit secondary address>",
            )
        )
    else:
        try:
            address = parse_address(device.address)
        except ValueError as exc:
            problems.append(Problem(f"{at}.address", str(exc), "write 0-250, or 16 hex digits"))
        else:
            other = meters.setdefault((line.id, address), device.id)
            if other != device.id:
                problems.append(
                    Problem(
                        f"{at}.address",
                        f"address {address} on line {line.id!r} is already {other!r}",
                        "give each meter its own address (scan: citygw probe --mbus --scan secondary)",
                    )
                )
    return problems + _line_profile_problems(at, device, "mbus")


def _modem_bus(line: Any, device: Device) -> tuple[str, str]:
    """Where a device's unit must be unique: its line, or the modem it is behind (named, and as bytes)."""
    if device.modem is None or not isinstance(line, DialinLine) or line.registration is None:
        return line.id, line.id
    try:
        packet = modem_id(line.registration, device.modem).hex()
    except ValueError:  # reported on its own
        packet = device.modem
    return f"{line.id} modem {device.modem}", f"{line.id} modem {packet}"


def _modem_problems(at: str, device: Device, line: Any) -> list[Problem]:
    """``modem`` names a registration id on a dialin line that has a registration, and nowhere else."""
    if not isinstance(line, DialinLine):
        if device.modem is None:
            return []
        return [Problem(f"{at}.modem", f"line {line.id!r} is no dialin line", "remove modem")]
    if line.registration is None:
        if device.modem is None:
            return []
        return [
            Problem(
                f"{at}.modem",
                f"dialin line {line.id!r} has no registration: its modems are known by unit id",
                f"remove modem, or add registration: {{kind: text|hex|imei}} to line {line.id!r}",
            )
        ]
    kind = line.registration.kind
    if device.modem is None:
        example = {"text": "LOGIN:1001", "hex": "001A2B3C4D5E", "imei": "356307042441013"}[kind]
        return [
            Problem(
                f"{at}.modem",
                f"dialin line {line.id!r} knows its modems by their {kind} registration",
                f"add modem: <the registration the modem sends, e.g. {example}>",
            )
        ]
    try:
        modem_id(line.registration, device.modem)
    except ValueError as exc:
        return [
            Problem(f"{at}.modem", str(exc), f"write the modem's {kind} registration as it is configured")
        ]
    return []


def _dlms_device_problems(
    at: str, device: Device, line: DlmsLine, meters: dict[tuple[str, int | str], str]
) -> list[Problem]:
    """A DLMS meter: a dlms profile, addresses of its own on its line; no Modbus unit, no M-Bus address."""
    problems = _keys_of_other_lines(
        at,
        device,
        f"line {line.id!r} is a DLMS line",
        {key: f"remove {key}; use dlms: {{physical: N}}" for key in ("unit", "address")},
    )
    address = device.dlms or DlmsAddress()
    key = f"{address.logical}/{address.physical}"
    other = meters.setdefault((line.id, key), device.id)
    if other != device.id:
        problems.append(
            Problem(
                f"{at}.dlms",
                f"meter address {key} (logical/physical) on line {line.id!r} is already {other!r}",
                "give each meter on a shared bus its own dlms.physical address",
            )
        )
    return problems + _line_profile_problems(at, device, "dlms")


def _nmea_profile_problems(at: str, name: str) -> list[Problem]:
    """A problem when ``name`` is not an NMEA (GPS receiver) profile."""
    from firmware_bridge.profile import available_profiles, load_nmea_profile

    try:
        load_nmea_profile(name)
    except Exception as exc:
        known = ", ".join(available_profiles("nmea")) or "none"
        fix = f"use an nmea profile ({known}) or a path to one; without profile: {DEFAULT_GPS_PROFILE}"
        return [Problem(at, f"cannot load GPS profile {name!r}: {exc}", fix)]
    return []


def _lorawan_device_problems(
    at: str, device: Device, line: LorawanLine, euis: dict[tuple[str, str], str]
) -> list[Problem]:
    """A device on a LoRaWAN line: a DevEUI of its own on the line, a lorawan profile, no Modbus unit."""
    problems = _keys_of_other_lines(
        at, device, f"line {line.id!r} is a LoRaWAN line", {**_REMOVE_UNIT_ADDRESS, "node": "remove node"}
    )
    if device.dev_eui is None:
        problems.append(
            Problem(f"{at}.dev_eui", f"line {line.id!r} is a LoRaWAN line", "add dev_eui: <16 hex digits>")
        )
    else:
        key = (line.id, device.dev_eui.lower())
        if key in euis:
            problems.append(
                Problem(
                    f"{at}.dev_eui",
                    f"DevEUI {device.dev_eui} on line {line.id!r} is already {euis[key]!r}",
                    "give each device its own DevEUI",
                )
            )
        euis.setdefault(key, device.id)
    if device.ns_device_id is not None and line.server != "tts":
        problems.append(
            Problem(f"{at}.ns_device_id", "ChirpStack addresses devices by DevEUI", "remove ns_device_id")
        )
    return problems + _line_profile_problems(at, device, "lorawan")
