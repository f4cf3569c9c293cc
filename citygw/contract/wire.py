"""The MQTT wire contract: topics and payloads shared by edge agents, collector and API.

Version 1. Every payload is UTF-8 JSON. The JSON Schema of each payload is generated from
these models into ``docs/wire/`` (a test keeps it in step). This module depends on pydantic
only, so the collector and the API never import edge internals.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

SCHEMA_VERSION: Literal[1] = 1
TOPIC_ROOT = "citygw/v1"

AGENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Measurement, field and tag names: safe as InfluxDB identifiers and SQL column values.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
# Device ids and tag values: ASCII letters, digits and a few marks, no quotes, backslashes or control
# characters; no space first or last, and no look-alike of a letter from another script ("meter-a"
# with a Cyrillic a, U+0430, is another series nobody can tell apart): label_problem says which.
LABEL_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9 _.:/+-]{0,126}[A-Za-z0-9_.:/+-])?$"
LABEL_CHARACTERS = "A-Z a-z 0-9, space (not first or last) and _ . : / + -"
MAX_LABEL_CHARS = 128

AgentId = Annotated[str, Field(pattern=AGENT_ID_PATTERN)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Label = Annotated[str, Field(pattern=LABEL_PATTERN)]
FieldValue = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=256)]

MAX_READINGS_PER_BATCH = 10_000
MAX_FIELDS_PER_READING = 64
MAX_TAGS_PER_READING = 16
# Tags the collector adds itself; a reading may not set them.
RESERVED_TAGS = frozenset({"agent", "device"})
# Tag keys CityGW reads and filters by: the collector's, the agent's (site; a bus's vehicle,
# vehicle_label, route) and the district the API and the dashboards group by. No field may take one
# of these names: InfluxQL resolves an unqualified name to the field when a measurement has both.
CITYGW_TAGS = RESERVED_TAGS | {"site", "district", "vehicle", "vehicle_label", "route"}
# Keys InfluxDB keeps for itself (1.x: time; 2.x and Flux: the underscored columns): no tag or field.
INFLUXDB_RESERVED_KEYS = frozenset({"time", "_measurement", "_field", "_value", "_time", "_start", "_stop"})
NOT_FIELD_NAMES = CITYGW_TAGS | INFLUXDB_RESERVED_KEYS
NOT_TAG_NAMES = RESERVED_TAGS | INFLUXDB_RESERVED_KEYS
# Measurements CityGW writes itself (dead letters, agent health, the API's records): a reading in one
# would fix its fields' types in the store and make CityGW's own records refused.
RESERVED_MEASUREMENTS = frozenset({"dead_letter", "agent_health", "transit_vehicle", "command"})


class Channel(StrEnum):
    """The channels below ``citygw/v1/<agent_id>/``."""

    TELEMETRY = "telemetry"
    STATUS = "status"
    CONFIG = "config"
    CONFIG_STATE = "config/state"
    CMD = "cmd"
    CMD_RESULT = "cmd/result"
    HEALTH = "health"
    ACK = "ack"
    UPDATE = "update"
    UPDATE_STATE = "update/state"


# Whole-string checks with the models' verdicts: fullmatch, as ``$`` alone also matches before
# a trailing newline in Python (not in pydantic's regex engine).
is_agent_id = re.compile(AGENT_ID_PATTERN).fullmatch
is_name = re.compile(NAME_PATTERN).fullmatch
is_label = re.compile(LABEL_PATTERN).fullmatch


def label_problem(value: str) -> str | None:
    """Why ``value`` is not a label (device id, tag value), in words; None if it is one."""
    if is_label(value):
        return None
    allowed = f"a label has {LABEL_CHARACTERS}, at most {MAX_LABEL_CHARS} characters"
    if not value:
        return f"is empty; {allowed}"
    if len(value) > MAX_LABEL_CHARS:
        return f"is longer than {MAX_LABEL_CHARS} characters; {allowed}"
    for index, char in enumerate(value):
        if not is_label("a" + char + "a"):
            if ord(char) > 127:
                name = unicodedata.name(char, "unnamed")
                return f"character {char!r} (U+{ord(char):04X} {name}) at {index} is not ASCII; {allowed}"
            return f"character {char!r} at {index} is not allowed; {allowed}"
    where = "starts" if value[0] == " " else "ends"
    return f"{where} with a space; {allowed}"


def topic(agent_id: str, channel: Channel) -> str:
    """The topic of ``channel`` for ``agent_id``."""
    if not is_agent_id(agent_id):
        raise ValueError(f"agent id {agent_id!r} does not match {AGENT_ID_PATTERN}")
    return f"{TOPIC_ROOT}/{agent_id}/{channel.value}"


def parse_topic(name: str) -> tuple[str, Channel] | None:
    """Split a CityGW topic into (agent id, channel); None if it is not one."""
    prefix = TOPIC_ROOT + "/"
    if not name.startswith(prefix):
        return None
    agent_id, _, rest = name[len(prefix) :].partition("/")
    if not is_agent_id(agent_id):
        return None
    try:
        return agent_id, Channel(rest)
    except ValueError:
        return None


def alert_topic(rule: str) -> str:
    """Where the API announces a raised or ended alert: below ``_alerts``, which no agent id can be."""
    return f"{TOPIC_ROOT}/_alerts/{rule}"


# Where a collector checks, once connected, that the broker lets it publish acks: an ack topic of
# no agent (no agent id starts with ``_``), so nobody receives it.
ACK_PROBE_TOPIC = f"{TOPIC_ROOT}/_collectors/ack"


def subscription(channel: Channel, *, share_group: str | None = None) -> str:
    """Wildcard subscription to ``channel`` of every agent, optionally as an MQTT shared subscription."""
    pattern = f"{TOPIC_ROOT}/+/{channel.value}"
    return f"$share/{share_group}/{pattern}" if share_group else pattern


_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def _integer_only(value: Any) -> Any:
    """pydantic's Literal[1] also takes ``true`` and ``1.0`` (equal to 1 in Python): not a version."""
    if type(value) is not int:
        raise ValueError(f"schema must be the integer {SCHEMA_VERSION}, not {value!r}")
    return value


SchemaVersion = Annotated[Literal[1], BeforeValidator(_integer_only)]
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: beyond it no time is a time
Timestamp = Annotated[StrictInt, Field(ge=0, le=MAX_TS_MS)]
Fields = Annotated[dict[Name, FieldValue], Field(min_length=1, max_length=MAX_FIELDS_PER_READING)]
Tags = Annotated[dict[Name, Label], Field(max_length=MAX_TAGS_PER_READING)]


class _Payload(BaseModel):
    model_config = _CONFIG | ConfigDict(frozen=True, populate_by_name=True)


class Reading(_Payload):
    """One reading of one device: the values it reported at one instant."""

    device: Label = Field(description="device id, unique within the agent's fleet")
    measurement: Name = Field(description="measurement (device kind), e.g. air_quality, electricity")
    ts: Timestamp = Field(description="when the value was read: milliseconds since the Unix epoch, UTC")
    fields: Fields
    tags: Tags = Field(default_factory=dict)


class TelemetryBatch(_Payload):
    """Payload of ``citygw/v1/<agent>/telemetry`` (QoS 1)."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent: AgentId
    seq: StrictInt = Field(ge=0, description="per-agent message sequence number; a gap means lost messages")
    readings: list[Reading] = Field(min_length=1, max_length=MAX_READINGS_PER_BATCH)


# The same telemetry contract as plain dicts, for the collector's hot path: validating into
# TypedDicts costs about half of building a model per reading. Same field types and limits
# (shared aliases above); tests/collector/test_wire_fast.py checks that both accept and refuse
# the same payloads with the same error locations.
@with_config(_CONFIG)
class ReadingDict(TypedDict):
    """A validated Reading as a dict (``tags`` may be absent: no tags)."""

    device: Label
    measurement: Name
    ts: Timestamp
    fields: Fields
    tags: NotRequired[Tags]


@with_config(_CONFIG)
class TelemetryBatchDict(TypedDict):
    """A validated TelemetryBatch as a dict (``schema`` may be absent: version 1)."""

    schema: NotRequired[SchemaVersion]
    agent: AgentId
    seq: Annotated[StrictInt, Field(ge=0)]
    readings: Annotated[list[ReadingDict], Field(min_length=1, max_length=MAX_READINGS_PER_BATCH)]


TELEMETRY_BATCH_DICT: TypeAdapter[TelemetryBatchDict] = TypeAdapter(TelemetryBatchDict)


class AgentState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Status(_Payload):
    """Payload of ``citygw/v1/<agent>/status`` (retained; the last will says offline)."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent: AgentId
    state: AgentState
    version: str | None = None
    config_version: int | None = None
    started_at: StrictInt | None = Field(default=None, description="ms since epoch")


class DeviceState(StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    EXCEPTION = "exception"
    CRC_ERROR = "crc_error"
    DECODE_ERROR = "decode_error"
    NO_FIX = "no_fix"
    UNKNOWN = "unknown"


class DeviceHealth(_Payload):
    state: DeviceState
    last_ok: Timestamp | None = Field(
        default=None,
        description="ms since epoch of the last good read: the device answers (also when, reporting by "
        "exception, nothing was published)",
    )
    error: str | None = Field(default=None, max_length=512)
    reads: StrictInt = 0
    failures: StrictInt = 0
    exception_code: StrictInt | None = Field(
        default=None, description="the Modbus exception code of the last failure, when it was one"
    )
    last_error_at: Timestamp | None = Field(default=None, description="ms since epoch of the last failure")
    response_ms_buckets: dict[str, StrictInt] | None = Field(
        default=None,
        description="answers by response time since start, not cumulative: le_50, le_100, ..., gt_1000 (ms)",
    )
    quarantined: StrictBool | None = Field(
        default=None, description="not answering: tried once per backoff period, after the other devices"
    )
    counter_resets: StrictInt | None = Field(
        default=None, description="times a counter field went down (device reboot or wrap) since start"
    )
    skipped_polls: StrictInt | None = Field(
        default=None,
        description="polls not made since start: journal quota reached under policy stop_slow, a slow device",
    )
    last_published: Timestamp | None = Field(
        default=None,
        description="ms since epoch of the newest reading journaled (its own read time); older than last_ok "
        "for a steady device reporting by exception, never older than its heartbeat",
    )
    suppressed: StrictInt | None = Field(
        default=None,
        description="good reads not published since start: reporting by exception, no field moved beyond its "
        "deadband and no heartbeat was due",
    )
    fields_left_out: dict[Name, Annotated[StrictStr, Field(max_length=512)]] | None = Field(
        default=None,
        description="fields left out of the device's readings as last read (no measurement: NaN, infinity, "
        "outside the profile's min..max), each with why; a field leaves when it decodes again",
    )


class JournalHealth(_Payload):
    backlog: StrictInt = Field(ge=0, description="readings on disk not yet acknowledged by the broker")
    dropped: StrictInt = Field(ge=0, description="readings dropped by the quota policy since start")


class Health(_Payload):
    """Payload of ``citygw/v1/<agent>/health``."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent: AgentId
    ts: Timestamp
    devices: dict[Label, DeviceHealth]
    journal: JournalHealth


MAX_REASONS = 100
COMMAND_ID_PATTERN = r"^[A-Za-z0-9-]{8,64}$"


class DesiredConfig(_Payload):
    """Payload of ``citygw/v1/<agent>/config`` (retained, written by the API): lines and devices, and
    optionally publish, journal and health settings.

    Each is the section of the agent's YAML config of that name (see citygw/contract/agent_config.py); a
    settings section left out keeps the agent's file's. The broker and the journal's path stay local to
    the agent.
    """

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent: AgentId
    version: StrictInt = Field(
        ge=1, description="increases with every push; the same version twice is a no-op"
    )
    issued_at: StrictInt = Field(ge=0, description="ms since epoch")
    site: Label
    lines: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    publish: dict[str, Any] | None = Field(default=None, description="replaces the file's publish section")
    journal: dict[str, Any] | None = Field(
        default=None,
        description="replaces the file's journal settings but path (fsync, quota_mb, on_full...)",
    )
    health: dict[str, Any] | None = Field(default=None, description="replaces the file's health section")


class ConfigOutcome(StrEnum):
    APPLIED = "applied"
    REFUSED = "refused"
    ROLLED_BACK = "rolled_back"


class ConfigState(_Payload):
    """Payload of ``citygw/v1/<agent>/config/state``: what the agent did with a config version."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent: AgentId
    version: StrictInt = Field(ge=0)
    state: ConfigOutcome
    ts: StrictInt = Field(ge=0)
    reasons: list[Annotated[str, Field(max_length=512)]] = Field(
        default_factory=list,
        max_length=MAX_REASONS,
        description="why it was refused or rolled back: 'config vN: FIELD: what is wrong; fix: what to do'",
    )
    applied_version: StrictInt | None = Field(
        default=None, ge=0, description="the version the agent runs now (0: its local file)"
    )


class CommandAction(StrEnum):
    ON = "on"
    OFF = "off"
    DIM = "dim"
    SET_FIELD = "set_field"


class TargetKind(StrEnum):
    LAMP = "lamp"
    GROUP = "group"
    CABINET = "cabinet"


class CommandTarget(_Payload):
    """What in a lighting controller a command addresses: one lamp, a group, or the whole cabinet."""

    kind: TargetKind
    address: StrictInt | None = Field(
        default=None,
        ge=0,
        le=63,
        description="DALI short address (lamp, 0-63) or group (0-15); none for cabinet",
    )


class Command(_Payload):
    """Payload of ``citygw/v1/<agent>/cmd`` (QoS 1): one command to one device, idempotent by id."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent: AgentId
    id: str = Field(pattern=COMMAND_ID_PATTERN)
    device: Label
    target: CommandTarget | None = Field(
        default=None, description="on, off and dim: the lamp, group or cabinet"
    )
    action: CommandAction
    level: StrictInt | None = Field(default=None, ge=0, le=100, description="dim level in percent (dim only)")
    field: Name | None = Field(
        default=None, description="set_field: a writable field of the device's profile"
    )
    value: FieldValue | None = Field(default=None, description="set_field: the engineering value to write")
    issued_at: StrictInt = Field(ge=0)
    expires_at: StrictInt = Field(
        ge=0, description="ms since epoch; a command not started by then is answered expired"
    )
    requested_by: Label | None = Field(default=None, description="who asked, for the audit trail")

    @model_validator(mode="after")
    def _complete(self) -> Command:
        if self.action is CommandAction.SET_FIELD:
            if self.field is None or self.value is None:
                raise ValueError("set_field needs field and value")
        elif self.target is None:
            raise ValueError(f"{self.action.value} needs a target (lamp, group or cabinet)")
        if (self.action is CommandAction.DIM) != (self.level is not None):
            raise ValueError("level goes with dim, and dim needs a level")
        return self


class CommandOutcome(StrEnum):
    """How a command ended. A lamp command is judged by what the agent read at the lamp afterwards."""

    DONE = "done"
    DONE_BUT_DARK = "done_but_dark"  # written, but the lamp is dark: a lamp or ballast fault, or level 0
    FAILED = "failed"
    REFUSED = "refused"
    EXPIRED = "expired"


class CommandResult(_Payload):
    """Payload of ``citygw/v1/<agent>/cmd/result``: how a command ended."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent: AgentId
    id: str = Field(pattern=COMMAND_ID_PATTERN)
    outcome: CommandOutcome
    ts: StrictInt = Field(ge=0)
    level: StrictInt | None = Field(
        default=None, description="the light level read at the lamp after the write, percent"
    )
    value: FieldValue | None = Field(
        default=None, description="the engineering value read back after the write (a lamp's actual level)"
    )
    detail: str | None = Field(default=None, max_length=512, description="why it was refused or failed")
    read: Fields | None = Field(
        default=None,
        description="what the agent read at the device after the write (a lamp's actual level and status)",
    )


MAX_ACK_RANGES = 1000
SeqRange = Annotated[
    tuple[Annotated[StrictInt, Field(ge=0)], Annotated[StrictInt, Field(ge=0)]],
    Field(description="first and last seq of a run of consecutive seqs, both included"),
]


class Ack(_Payload):
    """Payload of ``citygw/v1/<agent>/ack`` (QoS 1, from a collector): the agent's batches now stored.

    End-to-end acknowledgement: a batch counts as taken once the store accepted its readings (or
    stored them as dead letters); until then the agent keeps it in its journal, past the broker's
    PUBACK, and sends it again (same seq) if the broker lost it.
    """

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent: AgentId
    seqs: list[SeqRange] = Field(min_length=1, max_length=MAX_ACK_RANGES)

    @model_validator(mode="after")
    def _ordered(self) -> Ack:
        if any(first > last for first, last in self.seqs):
            raise ValueError("each seq range is [first, last] with first <= last")
        return self


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Seqs as runs of consecutive ones, lowest first: the ``seqs`` of an Ack."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


class UpdateOrder(_Payload):
    """Payload of ``citygw/v1/<agent>/update`` (retained, written by the API): take this signed release.

    ``manifest`` is the exact text the release key signed (citygw/contract/release.py); the agent checks the
    signature against the keys its config pins, then fetches the wheel from its ``update.api_url``
    plus ``path`` (HTTP Range: a dropped link resumes), and checks size and sha256.
    """

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent: AgentId
    rollout: StrictInt = Field(ge=1, description="the wave's id; each is handled once, in increasing order")
    version: str = Field(max_length=64, description="the release's version, as the manifest says")
    manifest: str = Field(max_length=4096, description="manifest.json as signed")
    signature: str = Field(max_length=256, description="ed25519 signature of manifest, base64")
    path: str = Field(
        pattern=r"^/[A-Za-z0-9/._~?=&%-]{1,511}$", description="where the wheel is, below the API's URL"
    )
    issued_at: StrictInt = Field(ge=0)


class UpdateOutcome(StrEnum):
    """Where an agent is with a release: refused before anything changed, staged and restarting, running
    healthy (applied), or back on the version before (rolled_back); failed: the download never completed."""

    REFUSED = "refused"
    FAILED = "failed"
    STAGED = "staged"
    APPLIED = "applied"
    ROLLED_BACK = "rolled_back"


class UpdateState(_Payload):
    """Payload of ``citygw/v1/<agent>/update/state`` (retained): what the agent did with a rollout."""

    schema_version: SchemaVersion = Field(default=SCHEMA_VERSION, alias="schema")
    agent: AgentId
    rollout: StrictInt = Field(ge=0)
    version: str = Field(max_length=64, description="the release's version")
    state: UpdateOutcome
    ts: StrictInt = Field(ge=0)
    running: str | None = Field(default=None, max_length=64, description="the version the agent runs now")
    reasons: list[Annotated[str, Field(max_length=512)]] = Field(default_factory=list, max_length=MAX_REASONS)


PAYLOADS: dict[Channel, type[_Payload]] = {
    Channel.TELEMETRY: TelemetryBatch,
    Channel.STATUS: Status,
    Channel.HEALTH: Health,
    Channel.CONFIG: DesiredConfig,
    Channel.CONFIG_STATE: ConfigState,
    Channel.CMD: Command,
    Channel.CMD_RESULT: CommandResult,
    Channel.ACK: Ack,
    Channel.UPDATE: UpdateOrder,
    Channel.UPDATE_STATE: UpdateState,
}


def encode(payload: _Payload) -> bytes:
    """Serialise a payload the way it goes on the wire."""
    return payload.model_dump_json(by_alias=True, exclude_none=True).encode()


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every payload, keyed by file name (see docs/wire/)."""
    return {
        f"{channel.value.replace('/', '-')}-v{SCHEMA_VERSION}.schema.json": model.model_json_schema(
            by_alias=True
        )
        for channel, model in PAYLOADS.items()
    }


def write_json_schemas(folder: str = "docs/wire") -> list[str]:
    """Regenerate the JSON Schema files of the wire contract (``python -m citygw.contract.wire``)."""
    import json
    from pathlib import Path

    written = []
    for name, schema in json_schemas().items():
        path = Path(folder) / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(str(path))
    return written


if __name__ == "__main__":
    print("\n".join(write_json_schemas()))
