"""The API's one settings model: file, ``CITYGW_*`` environment and ``citygw api run`` flags
(citygw/contract/settings.py layers them; docs/configuration.md lists them), validated once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from citygw.contract import air_quality
from citygw.contract.settings import ServiceSettings, load
from citygw.contract.settings import SettingsError as SettingsError
from citygw.contract.water_quality import LIMITS, Limit
from firmware_bridge.catalogue import RoleCatalogue, catalogue
from firmware_bridge.profile import ProfileError
from firmware_bridge.roles import Role

STORE_SCHEMES = frozenset({"sqlite", "influxdb", "influxdb2", "influxdb+https", "influxdb2+https"})
_STORE_URL_HELP = "expected sqlite:///path.sqlite, influxdb://[user:pass@]host:port/db or influxdb2://host:port/?org=O&bucket=B"


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """``url`` for logs and error messages: without user, password, query and fragment (secrets).

    ``keep_path=False`` also hides the path, for webhooks whose path is their secret (Slack, Teams).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme or not parts.netloc:  # not a URL as urlsplit reads it: keep what follows any '@'
        rest = url.rpartition("@")[2].partition("?")[0]
        return rest if keep_path else rest.partition("/")[0] + "/…"
    path = parts.path if keep_path or parts.path in ("", "/") else "/…"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{path}"


class ApiSettings(ServiceSettings):
    """Everything the API needs to know that is not code."""

    service = "api"
    cli_flags = {"store_url": "--store", "broker_url": "--broker", "api_host": "--host", "api_port": "--port"}

    store_url: str = Field(
        default="sqlite:///var/citygw.sqlite", description="where telemetry is read from (see open_store)"
    )
    influx_token: SecretStr | None = Field(
        default=None,
        description="InfluxDB v2 API token, for an influxdb2:// store_url without one in its password",
    )
    registry_url: str = Field(
        default="sqlite:///var/citygw-registry.sqlite",
        min_length=1,
        description="registry database (keys, audit, agents, devices): sqlite:///path or postgresql+psycopg://…",
    )
    broker_url: str | None = Field(
        default=None,
        description="MQTT broker of the agents, mqtt://[user:pass@]host:port; none: no config push",
    )
    broker_publish_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="how long a config push or command waits for the broker's PUBACK",
    )
    broker_ca_file: Path | None = Field(
        default=None, description="CA of the broker's certificate for mqtts:// (system CAs if unset)"
    )
    broker_cert_file: Path | None = Field(
        default=None, description="client certificate for the broker's certificate listener (citygw pki)"
    )
    broker_key_file: Path | None = Field(default=None, description="the key of broker_cert_file")
    command_ttl_s: int = Field(
        default=300,
        ge=10,
        le=86400,
        description="a command not started this long after it was due is answered expired",
    )
    open_telemetry: bool = Field(
        default=False, description="devices, summary and telemetry readable without a key (demo, open city)"
    )
    api_host: str = Field(default="127.0.0.1", min_length=1, description="address the API listens on")
    api_port: int = Field(default=8000, ge=1, le=65535, description="TCP port the API listens on")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="browser origins allowed to call the API, comma-separated; '*' for any"
    )
    release_public_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="release keys an upload must be signed by, comma-separated ed25519:<base64> "
        "(citygw release keygen); none: uploads are checked for size and hash only, agents check signatures",
    )
    release_max_mb: float = Field(default=64.0, gt=0, le=1024, description="largest release bundle taken")
    rate_limit_per_s: float = Field(
        default=10.0, ge=0, le=100_000, description="public requests a second per client address; 0: no limit"
    )
    rate_limit_burst: int = Field(default=60, ge=1, le=1_000_000, description="requests a client may burst")
    refusal_audit_per_min: int = Field(
        default=10,
        ge=1,
        le=100_000,
        description="refused requests (401/403) audited a minute per client address",
    )
    refusal_audit_total_per_min: int = Field(
        default=120, ge=1, le=1_000_000, description="refused requests (401/403) audited a minute in all"
    )
    feed_max_vehicle_age_s: float = Field(
        default=90.0, gt=0, le=3600, description="vehicles whose last fix is older are left out of the feed"
    )
    feed_max_clock_ahead_s: float = Field(
        default=30.0, ge=0, le=3600, description="fixes further in the future than this are left out"
    )
    feed_cache_max_age_s: int = Field(default=5, ge=0, le=300, description="Cache-Control max-age of feeds")
    query_default_range_s: int = Field(
        default=3600, gt=0, le=366 * 86400, description="range of a telemetry query without start"
    )
    query_max_points: int = Field(
        default=100_000,
        gt=0,
        le=10_000_000,
        description="most rows a telemetry query may return; windowed (groups too): windows times devices",
    )
    query_max_windows: int = Field(
        default=10_000, gt=0, le=1_000_000, description="most time windows one aggregated query may span"
    )
    export_max_range_s: int = Field(
        default=366 * 86400, gt=0, le=10 * 366 * 86400, description="longest range one export may span"
    )
    export_chunk_s: int = Field(
        default=86400,
        ge=60,
        le=31 * 86400,
        description="an export is read from the store this much at a time",
    )
    city: str = Field(
        default="lviv",
        pattern=r"^[a-z][a-z0-9-]{0,63}$",
        description="the city's name in open-data entity ids",
    )
    aq_table: str = Field(
        default=air_quality.CURRENT.version, description="air-quality index table: eea-2024 or eea-2017"
    )
    _roles: RoleCatalogue = PrivateAttr()
    profile_dirs: Annotated[tuple[Path, ...], NoDecode] = Field(
        default=(),
        description="folders of the site's own device profiles (*.yaml), comma-separated: their fields' "
        "roles count beside the shipped profiles' (docs/profiles.md)",
    )
    aq_max_age_s: int = Field(
        default=7200,
        gt=0,
        le=86400,
        description="a station whose newest reading is older has no current index",
    )
    alert_interval_s: float = Field(
        default=60, ge=0, le=3600, description="seconds between evaluations of the alert rules; 0: rules off"
    )
    alert_aq_band: int = Field(
        default=4, ge=2, le=6, description="an AQ station at this band or worse alerts"
    )
    alert_leak_window_s: int = Field(
        default=4 * 3600, ge=60, le=7 * 86400, description="flow that never stops this long is a leak"
    )
    alert_leak_min_flow: float = Field(
        default=0.02, gt=0, description="m³/h: the flow a leak never drops below in its window"
    )
    alert_no_flow_window_s: int = Field(
        default=86400,
        ge=60,
        le=30 * 86400,
        description="no flow at all this long alerts (stuck meter, closed main)",
    )
    alert_bin_full_percent: float = Field(
        default=90, gt=0, le=100, description="a bin at least this full (%) for the whole window alerts"
    )
    alert_bin_full_window_s: int = Field(
        default=1800, ge=60, le=7 * 86400, description="how long a bin stays that full before it alerts"
    )
    alert_ph_min: float | None = Field(
        default=LIMITS["water_ph"].low, ge=0, le=14, description="pH below this alerts (ДСанПіН 2.2.4-171-10)"
    )
    alert_ph_max: float | None = Field(
        default=LIMITS["water_ph"].high,
        ge=0,
        le=14,
        description="pH above this alerts (ДСанПіН 2.2.4-171-10: 8.5; EU 2020/2184 Annex I: 9.5)",
    )
    alert_turbidity_max: float | None = Field(
        default=LIMITS["turbidity"].high, gt=0, description="NTU: more turbid water alerts (ДСанПіН; WHO < 1)"
    )
    alert_chlorine_min: float | None = Field(
        default=LIMITS["free_chlorine"].low, ge=0, description="mg/L of free chlorine below this alerts"
    )
    alert_chlorine_max: float | None = Field(
        default=LIMITS["free_chlorine"].high, gt=0, description="mg/L of free chlorine above this alerts"
    )
    alert_silent_intervals: float = Field(
        default=3,
        ge=1,
        le=100,
        description="a parking sensor whose newest reading is this many of its reporting intervals old "
        "(heartbeat_s, else poll_s) alerts",
    )
    alert_webhook_url: str | None = Field(default=None, description="alerts are POSTed here as JSON")
    alert_webhook_secret: str | None = Field(
        default=None, description="HMAC-SHA256 key: the body's signature goes in X-CityGW-Signature"
    )
    alert_webhook_attempts: int = Field(
        default=4, ge=1, le=10, description="tries per alert before giving up"
    )
    export_max_rows: int = Field(
        default=5_000_000,
        gt=0,
        le=1_000_000_000,
        description="most rows (raw, or windows times devices) one export may stream",
    )
    oidc_issuer: str | None = Field(
        default=None, description="single sign-on: the tokens' issuer (iss); none: API keys only"
    )
    oidc_audience: str | None = Field(default=None, description="the tokens' audience (aud) for this API")
    oidc_jwks_url: str | None = Field(default=None, description="the issuer's JWKS, fetched and cached")
    oidc_jwks_file: Path | None = Field(
        default=None, description="the issuer's keys from a file instead: a JWKS document or a PEM public key"
    )
    oidc_jwks_cache_s: float = Field(default=600, ge=30, le=86400, description="keep fetched keys this long")
    oidc_role_claim: str = Field(
        default="citygw_role",
        pattern=r"^[A-Za-z0-9_:/-]+(\.[A-Za-z0-9_:/-]+)*$",
        description="claim naming the CityGW role (a string or a list; dots reach nested claims)",
    )
    oidc_sites_claim: str = Field(
        default="citygw_sites",
        pattern=r"^[A-Za-z0-9_:/-]+(\.[A-Za-z0-9_:/-]+)*$",
        description="claim listing an engineer's sites",
    )
    oidc_leeway_s: float = Field(default=30, ge=0, le=300, description="clock skew allowed on exp and nbf")
    record_interval_s: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="seconds between writes of what the API derives (transit delays and occupancy, how"
        " lighting commands ended) into the store, for the dashboards; 0: off",
    )
    transit_gtfs_max_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=64 * 1024,
        le=200 * 1024 * 1024,
        description="largest GTFS zip PUT /v1/transit/gtfs.zip takes (413 beyond, read no further)",
    )
    transit_gtfs_path: Path | None = Field(
        default=None, description="the static GTFS zip in use (replace the file to reload)"
    )
    transit_alerts_path: Path | None = Field(
        default=None, description="SQLite file of operator transit alerts (memory if unset)"
    )
    transit_rebuild_interval_s: float = Field(
        default=1.0, ge=0, le=60, description="reuse built transit feeds this long; 0: build per request"
    )
    transit_feed_wait_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="a feed request waits this long at most for a rebuild, then gets the previous feeds"
        " (the build goes on in the background)",
    )
    transit_match_window_s: float = Field(
        default=120.0, ge=10, le=900, description="seconds of fixes trip matching starts a bus from"
    )
    transit_stale_grace_s: float = Field(
        default=120.0,
        ge=0,
        le=3600,
        description="a vehicle silent past feed_max_vehicle_age_s stays in the transit feeds this long"
        " (its last position and time, its run's TripUpdate), then leaves them",
    )
    transit_vehicle_capacity: int = Field(
        default=90, ge=1, le=400, description="passengers per vehicle, for occupancy"
    )
    transit_ride_minutes: int = Field(
        default=20, ge=1, le=120, description="validator taps this recent count as on board"
    )
    transit_silent_route_alerts: bool = Field(
        default=True, description="alert when a running route has no bus reporting"
    )
    transit_missed_run_after_s: float = Field(
        default=900,
        ge=0,
        le=7200,
        description="a scheduled run this long past its start with no bus (and none that may be its bus)"
        " is published CANCELED, with an alert saying it was detected; 0: never",
    )
    transit_history_days: float = Field(
        default=14, gt=0, le=90, description="days of stored positions running times are learned from"
    )
    transit_history_refresh_s: float = Field(
        default=3600,
        ge=0,
        le=86400,
        description="learn running times at startup and then this often, in the background; 0: never"
        " (predictions carry the current delay along the schedule)",
    )
    transit_history_sample_s: int = Field(
        default=10, ge=1, le=60, description="positions are read back averaged over windows this long"
    )
    transit_history_min_samples: int = Field(
        default=5,
        ge=1,
        le=200,
        description="fewer runs than this over a segment at an hour: use the schedule",
    )
    transit_stream_period_s: float = Field(
        default=1.0, gt=0, le=60, description="how often the vehicle stream looks for changes"
    )
    transit_stream_max_clients: int = Field(
        default=500, ge=1, le=100_000, description="vehicle streams open at once; more are answered 503"
    )

    @field_validator("store_url")
    @classmethod
    def _known_store(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in STORE_SCHEMES:
            raise ValueError(
                f"unknown store scheme {parts.scheme!r} in {redact_url(url)!r}; {_STORE_URL_HELP}"
            )
        if parts.scheme == "sqlite" and not parts.path.strip("/"):
            raise ValueError(
                f"sqlite store URL {redact_url(url)!r} has no file path; e.g. sqlite:///var/citygw.sqlite"
            )
        if parts.scheme != "sqlite" and not parts.hostname:
            raise ValueError(f"store URL {redact_url(url)!r} has no host; {_STORE_URL_HELP}")
        return url

    @field_validator("profile_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(item.strip()) for item in value.split(",") if item.strip())
        return value

    @model_validator(mode="after")
    def _water_limits_ordered(self) -> ApiSettings:
        for low_name, high_name in (
            ("alert_ph_min", "alert_ph_max"),
            ("alert_chlorine_min", "alert_chlorine_max"),
        ):
            low, high = getattr(self, low_name), getattr(self, high_name)
            if low is not None and high is not None and low >= high:
                raise ValueError(f"{low_name} ({low:g}) must be below {high_name} ({high:g})")
        return self

    @model_validator(mode="after")
    def _profiles_load(self) -> ApiSettings:
        """The catalogue of fields by role, read at start-up (a profile changed later needs a restart)."""
        try:
            self._roles = catalogue(self.profile_dirs)
        except ProfileError as exc:
            raise ValueError(f"profile_dirs: {exc}") from exc
        return self

    @property
    def roles(self) -> RoleCatalogue:
        """Which stored field has which role, from the shipped profiles and ``profile_dirs``."""
        return self._roles

    @property
    def water_limits(self) -> dict[Role, Limit]:
        """The water-quality alert's limits per role, from the settings (unset bounds stay open; a
        parameter with neither bound is not checked)."""
        bounds = {
            Role.WATER_PH: (self.alert_ph_min, self.alert_ph_max),
            Role.TURBIDITY: (None, self.alert_turbidity_max),
            Role.FREE_CHLORINE: (self.alert_chlorine_min, self.alert_chlorine_max),
        }
        limits = {}
        for role, (low, high) in bounds.items():
            if low is not None or high is not None:
                base = LIMITS[role.value]
                source = base.source if (low, high) == (base.low, base.high) else "alert_* settings"
                limits[role] = Limit(low, high, base.unit, source)
        return limits

    @field_validator("aq_table")
    @classmethod
    def _known_table(cls, table: str) -> str:
        if table not in air_quality.TABLES:
            raise ValueError(f"no index table {table!r}; known: {', '.join(air_quality.TABLES)}")
        return table

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_is_http(cls, url: str | None) -> str | None:
        if url is not None and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname):
            raise ValueError(
                f"{redact_url(url, keep_path=False)!r} is not an http(s) URL; "
                "e.g. https://scada.example.org/citygw-alerts"
            )
        return url

    @field_validator("oidc_jwks_url")
    @classmethod
    def _jwks_is_https(cls, url: str | None) -> str | None:
        if url is not None and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname):
            raise ValueError(
                f"{redact_url(url)!r} is not an http(s) URL; e.g. https://sso.example.org/realms/city/certs"
            )
        return url

    @model_validator(mode="after")
    def _oidc_complete(self) -> ApiSettings:
        if self.oidc_issuer is None:
            return self
        if not self.oidc_audience:
            raise ValueError("oidc_issuer is set but not oidc_audience: both are checked")
        if (self.oidc_jwks_url is None) == (self.oidc_jwks_file is None):
            raise ValueError("with oidc_issuer, set exactly one of oidc_jwks_url and oidc_jwks_file")
        if self.oidc_jwks_file is not None and not self.oidc_jwks_file.is_file():
            raise ValueError(f"oidc_jwks_file {self.oidc_jwks_file} is not a readable file")
        return self

    @model_validator(mode="after")
    def _broker_tls_files(self) -> ApiSettings:
        files = {"ca": self.broker_ca_file, "cert": self.broker_cert_file, "key": self.broker_key_file}
        if (self.broker_cert_file is None) != (self.broker_key_file is None):
            raise ValueError("set both broker_cert_file and broker_key_file, or neither")
        given = {kind: path for kind, path in files.items() if path is not None}
        if given and (self.broker_url is None or urlsplit(self.broker_url).scheme != "mqtts"):
            raise ValueError(
                "broker_ca_file, broker_cert_file and broker_key_file need an mqtts:// broker_url"
            )
        for kind, path in given.items():
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                raise ValueError(
                    f"broker_{kind}_file {path}: cannot read it ({exc.strerror}); "
                    "give a PEM file the API's user can read"
                ) from None
        return self

    @field_validator("release_public_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("release_public_keys")
    @classmethod
    def _keys_are_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        from citygw.contract.release import parse_public_key

        for key in keys:
            parse_public_key(key)
        return keys

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
                raise ValueError(
                    f"{origin!r} is not an origin; write scheme://host[:port] without a path,"
                    " e.g. https://maps.example.org, or '*'"
                )
        return origins


def load_settings(**overrides: object) -> ApiSettings:
    """Settings from the environment (``overrides`` win), or SettingsError naming each bad setting."""
    return load(ApiSettings, overrides=overrides)
