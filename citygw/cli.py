"""The ``citygw`` command: demo, edge agent, collector and API.

Each subcommand imports its room only when it runs, so ``citygw --help`` stays fast on a Pi.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from citygw.contract.errors import ConfigError

if TYPE_CHECKING:
    from api.settings import ApiSettings
    from citygw.contract.settings import ServiceSettings
    from collector.settings import CollectorSettings
    from collector.store.base import Store
    from firmware_bridge.capture import Exchange
    from firmware_bridge.modbus import ModbusLine
    from firmware_bridge.profile import Profile

SettingsT = TypeVar("SettingsT", bound="ServiceSettings")
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_STORE = "sqlite:///var/citygw.sqlite"
DEFAULT_REGISTRY = "sqlite:///var/citygw-registry.sqlite"
KEY_ROLES = ("utility", "engineer", "transit", "admin")  # api.security.Role but public (not imported: slow)
EX_CONFIG = 2  # fix the settings first: systemd units say RestartPreventExitStatus=2
EX_TEMPFAIL = 75  # sysexits.h: down or unreachable for now; a restart later may succeed
EX_DEVICE = 1  # citygw probe: the device answered, but not usably (exception response, CRC, decoding)
BROKER_CHECK_TIMEOUT_S = 5.0
SCAN_TIMEOUT = 0.2  # citygw probe --scan-units: seconds a unit id gets to answer
REPLAY_ADDRESS = "127.0.0.1:5020"  # citygw serve --replay: where the replayed device listens
# Per command, loggers whose lines only repeat what the command says itself in one line (without -v).
QUIET_LOGGERS = {
    "keys": ("alembic.runtime.migration",),  # migrating the registry: not the command's output
    "demo": ("alembic.runtime.migration",),
    "probe": ("pymodbus",),  # "Failed to connect ... Repeating": the command's error line says it
}


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _port(value: str) -> int:
    """A TCP port number (0: any free port); argparse applies it to a string default (the env) too."""
    if not (value.isascii() and value.isdigit()) or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is no TCP port (0-65535)")
    return int(value)


class CommandFailed(Exception):
    """A known failure: main prints ``citygw: <what>: <why>`` (no traceback) and exits with ``code``."""

    def __init__(self, line: str, code: int) -> None:
        super().__init__(line)
        self.code = code


def _why(exc: BaseException) -> tuple[str, int] | None:
    """One line on why ``exc`` happened and the exit code, for failures the operator can act on.

    None for anything else: a bug, whose traceback is wanted.
    """
    from grafana_client.client import GrafanaClientError, GrafanaException
    from niquests.exceptions import ConnectionError as HttpConnectionError
    from niquests.exceptions import Timeout as HttpTimeout
    from sqlalchemy.exc import OperationalError

    from collector.store import StoreUnavailable

    if isinstance(exc, StoreUnavailable):
        return str(exc), EX_TEMPFAIL
    if isinstance(exc, OperationalError):  # the database (server or file) could not be used
        temporary = not type(exc.orig).__module__.startswith("sqlite3")
        return str(exc.orig).strip().splitlines()[0], EX_TEMPFAIL if temporary else EX_CONFIG
    if isinstance(exc, GrafanaException):
        hint = {
            401: ": the token was refused; set CITYGW_GRAFANA_TOKEN to a valid service account token",
            403: ": the token's service account needs the Editor role",
        }.get(exc.status_code, "")
        message = str(exc.message)
        status = f"HTTP {exc.status_code} " if exc.status_code and str(exc.status_code) not in message else ""
        temporary = not isinstance(exc, GrafanaClientError)  # 5xx, timeout
        return f"{status}{message}{hint}", EX_TEMPFAIL if temporary else EX_CONFIG
    if isinstance(exc, OSError):  # files, sockets, and every HTTP client error (niquests' are OSErrors)
        text = str(exc)
        errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)  # the cause, out of urllib3's wrappings
        why = errno.group(0) if errno and isinstance(exc, HttpConnectionError) else text
        temporary = isinstance(exc, ConnectionError | TimeoutError | HttpConnectionError | HttpTimeout)
        return why, EX_TEMPFAIL if temporary else EX_CONFIG
    return None


@contextlib.contextmanager
def _failing_as(what: str, *also: type[Exception]) -> Iterator[None]:
    """Known failures in the block become ``CommandFailed("<what>: <why>")``; ``also``: exit-2 kinds.

    ``what`` names the thing that failed, e.g. ``store at influxdb://host:8086/citygw``: pass its
    URL through a redaction first, it is printed as is.
    """
    try:
        yield
    except (ConfigError, CommandFailed):
        raise
    except Exception as exc:
        known = (str(exc), EX_CONFIG) if isinstance(exc, also) else _why(exc)
        if known is None:
            raise
        why, code = known
        raise CommandFailed(f"{what}: {why}", code) from exc


def _demo(args: argparse.Namespace) -> int:
    from citygw.demo import DemoOptions, run_demo
    from collector.service import BrokerAddress
    from collector.store import redact

    # A broker or store given on the command line is checked before anything starts: a demo that
    # cannot reach them would otherwise start, then fail with a traceback or retry in silence.
    if args.broker is not None:
        try:
            broker = BrokerAddress.parse(args.broker)
        except ValueError as exc:
            raise ConfigError(f"--broker: {exc}") from exc
        with _failing_as(f"broker at {redact(args.broker)}"):
            socket.create_connection((broker.host, broker.port), timeout=BROKER_CHECK_TIMEOUT_S).close()
    if args.store is not None:
        with _failing_as(f"store at {redact(args.store)}"):
            open_store_for_service(args.store, option="--store").close()
    options = DemoOptions(
        broker_url=args.broker,
        store_url=args.store,
        api_host=args.host,
        api_port=args.port,
        workdir=Path(args.workdir).resolve(),
        duration_s=args.duration,
    )
    return asyncio.run(run_demo(options))


def _settings(args: argparse.Namespace, model: type[SettingsT]) -> SettingsT:
    """The service's settings from its file, the environment and ``args``; their log level applies."""
    from citygw.contract.settings import load_from_args

    settings = load_from_args(args, model)
    if not args.verbose:
        logging.getLogger().setLevel(settings.log_level)
    return settings


def _edge_run(args: argparse.Namespace) -> int:
    from edge.agent import run_agent
    from edge.settings import EdgeSettings

    settings = _settings(args, EdgeSettings)
    return asyncio.run(run_agent(settings.agent_config, broker_url=settings.broker_url))


def _edge_launch(args: argparse.Namespace) -> int:
    from edge.launcher import launch
    from edge.settings import EdgeSettings

    settings = _settings(args, EdgeSettings)
    return launch(settings.agent_config, env=settings.child_env())


def _release(args: argparse.Namespace) -> int:
    from citygw.contract import release

    if args.action == "keygen":
        path, public = release.keygen(Path(args.dir), args.name)
        print(f"{path}: the signing key; keep it off the servers and the agents (offline, 0600)")
        print(f"pin on every agent (update.public_keys) and in CITYGW_RELEASE_PUBLIC_KEYS:\n{public}")
    elif args.action == "build":
        key = release.load_private_key(Path(args.key))
        with _failing_as("release build", release.ReleaseError):
            bundle = release.build(
                key,
                args.version,
                out=Path(args.out),
                wheel=Path(args.wheel) if args.wheel else None,
                source=Path(args.source),
                min_agent_version=args.min_agent_version,
            )
        print(bundle)
    else:
        print(release.bundle_manifest_text(Path(args.bundle)))
    return 0


def open_store_for_service(
    url: str, *, option: str = "--store / CITYGW_STORE_URL", token: str | None = None
) -> Store:
    """Open the store at ``url`` and prepare it (an InfluxDB v1 database is created if missing).

    A store that cannot serve this user (no database, no privilege to create it) is a ConfigError;
    an unreachable one (StoreUnavailable) goes up as is: the commands exit 75 (EX_TEMPFAIL), and the
    supervisor restarts them.
    """
    from collector.store import StoreError, StoreUnavailable, open_store, prepare

    try:
        store = open_store(url, token=token)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from exc
    try:
        prepare(store)
    except StoreUnavailable:
        store.close()
        raise
    except StoreError as exc:
        store.close()
        raise ConfigError(f"{option}: {exc}") from exc
    return store


def _pki(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from citygw.pki import Pki

    pki = Pki(Path(args.dir))
    with _failing_as(f"pki {args.dir}"):
        if args.action == "init":
            print(pki.init(args.name, days=args.days))
        elif args.action == "issue":
            cert, key = pki.issue(args.kind, args.name, days=args.days)
            print(f"{cert}\n{key}")
            print(
                f"next: citygw-broker-users add {args.kind} {args.name} (once per name; its password is "
                "not used on the certificate listener)",
                file=sys.stderr,
            )
        elif args.action == "server":
            cert, key = pki.server(*args.hostname, days=args.days)
            print(f"{cert}\n{key}")
        elif args.action == "revoke":
            for issued in pki.revoke(args.what, crl_days=args.crl_days):
                print(f"revoked {issued.serial_hex} {issued.name}")
            print(f"{pki.root / 'crl.pem'}: copy it to the broker, then: systemctl reload mosquitto")
        elif args.action == "crl":
            print(pki.crl(days=args.days))
        else:
            now = datetime.now(UTC)
            for issued in pki.issued():
                state = "revoked" if issued.revoked else "expired" if issued.not_after <= now else "valid"
                print(f"{issued.serial_hex}\t{issued.name}\t{issued.not_after:%Y-%m-%dT%H:%M:%SZ}\t{state}")
    return 0


def _service_store(settings: ApiSettings | CollectorSettings) -> Store:
    """The store of a service's settings, opened and prepared; errors name the setting and its source."""
    from collector.store import redact

    token = settings.influx_token.get_secret_value() if settings.influx_token is not None else None
    with _failing_as(f"store at {redact(settings.store_url)}"):
        return open_store_for_service(settings.store_url, option=settings.describe("store_url"), token=token)


def _collector_run(args: argparse.Namespace) -> int:
    from collector.service import Collector, TlsFiles
    from collector.settings import CollectorSettings
    from collector.tuning import tune_process

    settings = _settings(args, CollectorSettings)
    store = _service_store(settings)
    files = TlsFiles(settings.broker_ca_file, settings.broker_cert_file, settings.broker_key_file)
    tls_settings = [
        name for name in ("broker_ca_file", "broker_cert_file", "broker_key_file") if getattr(settings, name)
    ]
    try:
        collector = Collector(
            settings.broker_url,
            store,
            client_id=settings.collector_id,
            share_group=settings.share_group,
            metrics_port=settings.metrics_port,
            metrics_host=settings.metrics_host,
            max_series_per_agent=settings.max_series_per_agent,
            tls_files=files,
            owners=settings.collector_owners,
            acks=settings.acks,
        )
    except ValueError as exc:  # ssl.SSLError is an OSError, not one of these
        named = ", ".join(settings.describe(name) for name in ["broker_url", *tls_settings])
        raise ConfigError(f"{named}: {exc}") from exc
    except OSError as exc:
        named = ", ".join(f"{settings.describe(name)}: {getattr(settings, name)}" for name in tls_settings)
        raise ConfigError(f"{named or 'the system CAs'}: {exc}") from exc
    # The process is the collector's: its GIL switch interval and GC threshold (0: Python's own).
    tune_process(settings.gil_switch_interval_s or None, settings.gc_young_threshold or None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with collector, contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    store.close()
    return 0


def _keys(args: argparse.Namespace) -> int:
    """citygw keys create|list|revoke: API keys in the registry, audited as the local OS user."""
    from api.settings import redact_url

    with _failing_as(f"registry at {redact_url(args.registry)}"):
        return _keys_in_registry(args)


def _keys_in_registry(args: argparse.Namespace) -> int:
    import getpass

    from api.registry import RegistryError, open_registry
    from api.registry.keys import UnknownKey, create_key, list_keys, revoke_key
    from api.security import Role
    from api.timespec import iso

    try:
        registry = open_registry(args.registry)
    except RegistryError as exc:
        raise ConfigError(f"--registry / CITYGW_REGISTRY_URL: {exc}") from exc
    actor = f"cli:{getpass.getuser()}"
    now_ms = int(time.time() * 1000)
    try:
        with registry.session() as session:
            if args.action == "create":
                expires = now_ms + args.expires_days * 86_400_000 if args.expires_days else None
                try:
                    key, token = create_key(
                        session,
                        name=args.name,
                        role=Role(args.role),
                        sites=args.site,
                        expires_at=expires,
                        now_ms=now_ms,
                        actor=actor,
                        actor_role="admin",
                    )
                except ValueError as exc:
                    raise ConfigError(str(exc)) from exc
                session.commit()
                print(f"created key {key.id} ({key.role}) for {key.name}; the token is shown only now:")
                print(token)
            elif args.action == "list":
                for key in list_keys(session, include_revoked=args.all):
                    revoked = f" revoked {iso(key.revoked_at)}" if key.revoked_at is not None else ""
                    sites = f" sites={','.join(key.sites)}" if key.sites else ""
                    print(
                        f"{key.id}  {key.role:<8} {key.name}{sites}  created {iso(key.created_at)}{revoked}"
                    )
            else:
                try:
                    revoke_key(session, args.key_id, now_ms=now_ms, actor=actor, actor_role="admin")
                except UnknownKey as exc:
                    raise ConfigError(str(exc)) from exc
                session.commit()
                print(f"revoked key {args.key_id}")
    finally:
        registry.close()
    return 0


def _api_run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.settings import ApiSettings

    settings = _settings(args, ApiSettings)
    store = _service_store(settings)
    app = create_app(store, settings=settings)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level=settings.log_level.lower())
    return 0


def _profile_dirs(args: argparse.Namespace) -> tuple[Path, ...]:
    """The site's profile folders (``--profiles``, else $CITYGW_PROFILE_DIRS, comma-separated), checked:
    ConfigError naming the file and the fix when their profiles cannot be catalogued."""
    from firmware_bridge.catalogue import catalogue
    from firmware_bridge.profile import ProfileError

    text = _env("CITYGW_PROFILE_DIRS", "")
    dirs = tuple(args.profiles or (Path(part.strip()) for part in text.split(",") if part.strip()))
    try:
        catalogue(dirs)
    except ProfileError as exc:
        raise ConfigError(str(exc)) from exc
    return dirs


def _dashboards_push(args: argparse.Namespace) -> int:
    from collector.store import redact
    from dashboards.push import URL_ENV
    from dashboards.push import main as push

    with _failing_as(f"Grafana at {redact(os.environ.get(URL_ENV, ''))}"):
        return push(dry_run=args.dry_run, profiles=_profile_dirs(args))


def _dashboards_preview(args: argparse.Namespace) -> int:
    from collector.store import open_store, redact
    from collector.store.influx_v1 import InfluxV1Store
    from collector.store.influx_v2 import InfluxV2Store
    from dashboards import build_all
    from dashboards.preview import last_hours, preview_all
    from firmware_bridge.catalogue import catalogue

    with _failing_as(f"store at {redact(args.store)}"):
        store = open_store(args.store)
        try:
            if not isinstance(store, InfluxV1Store | InfluxV2Store):
                raise ConfigError(
                    f"--store {redact(args.store)}: the dashboards' queries are InfluxQL: use influxdb://"
                )
            window = last_hours(args.hours, int(time.time() * 1000))
            boards = build_all(catalogue(_profile_dirs(args)))
            previews = preview_all(boards, store.reader.query, window, args.out)
        finally:
            store.close()
    for preview in previews:
        empty = f"; no data in: {', '.join(preview.empty_panels)}" if preview.empty_panels else ""
        print(f"{preview.path}{empty}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from firmware_bridge.probe import (
        format_strings,
        format_table,
        format_values,
        format_wide_table,
        interpretations,
        parse_units,
        probe_profile,
        probe_registers,
        scan_units,
        wide_interpretations,
    )
    from firmware_bridge.profile import ProfileError, load_profile

    if args.mbus:
        return _probe_mbus(args)
    if args.dlms:
        return _probe_dlms(args)
    if args.capture and not args.profile:
        raise ConfigError("--capture needs --profile: the profile says which ranges to read")
    if args.scan_units and (args.profile or args.capture):
        raise ConfigError("--scan-units finds unit ids; run --profile or --capture on one of them afterwards")
    try:
        units = parse_units(args.scan_units) if args.scan_units else []
    except ValueError as exc:
        raise ConfigError(f"--scan-units: {exc}") from exc
    timeout = args.timeout if args.timeout is not None else SCAN_TIMEOUT if units else 1.0
    line = _probe_line(args, timeout)
    try:
        profile = load_profile(args.profile) if args.profile else None
    except ProfileError as exc:
        raise ConfigError(str(exc)) from exc
    if args.capture:
        assert profile is not None
        return _capture(args, line, profile)

    async def probe() -> str:
        async with line:
            if units:
                found = await scan_units(line, units)
                if not found:
                    raise CommandFailed(
                        f"no unit id of {args.scan_units} answers on {line.name} within {timeout:g} s",
                        EX_TEMPFAIL,
                    )
                listed = ", ".join(str(answer) for answer in found)
                return f"{len(found)} of {len(units)} unit ids answer on {line.name}: {listed}"
            if profile is not None:
                return format_values(profile, await probe_profile(line, args.unit, profile))
            words = await probe_registers(line, args.unit, args.table, args.address, args.count)
            views = [format_table(interpretations(words, args.address))]
            if args.table not in ("coil", "discrete"):
                if len(words) >= 4:
                    views.append(format_wide_table(wide_interpretations(words, args.address)))
                views.append(format_strings(words, args.address))
            return "\n\n".join(views)

    with _device_failures():
        print(asyncio.run(probe()))
    return 0


@contextlib.contextmanager
def _device_failures() -> Iterator[None]:
    """A device's failures as the probe reports them: 75 for silence or a line down, 1 for a bad answer."""
    from firmware_bridge.errors import DeviceError, DeviceTimeout

    try:
        with _failing_as("probe", ValueError):  # a count or address outside what one read may ask
            yield
    except DeviceTimeout as exc:  # no answer, or the line itself down (LineUnavailable)
        raise CommandFailed(str(exc), EX_TEMPFAIL) from exc
    except DeviceError as exc:  # an answer, but not a usable one: a fact about the device
        raise CommandFailed(str(exc), EX_DEVICE) from exc


def _probe_line(args: argparse.Namespace, timeout: float) -> ModbusLine:
    from firmware_bridge.modbus import ModbusLine

    if args.tcp:
        host, port = _host_port("--tcp", args.tcp)
        _resolve(host, port)
        return ModbusLine.tcp(host=host, port=port, timeout=timeout)
    if not Path(args.serial).exists():
        raise ConfigError(f"--serial {args.serial}: no such port; serial ports here: {_serial_ports()}")
    return ModbusLine.rtu(
        port=args.serial, baudrate=args.baudrate or 9600, parity=args.parity, timeout=timeout
    )


def _host_port(option: str, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{option} {value!r}: expected HOST:PORT, e.g. 10.20.0.15:502")
    return host, int(port)


def _capture(args: argparse.Namespace, line: ModbusLine, profile: Profile) -> int:
    """``probe --capture``: every mapped range of the device into DIR/testcases/<case>/."""
    import getpass
    from datetime import UTC, datetime
    from importlib.metadata import version

    from firmware_bridge.capture import (
        CaptureInfo,
        capture_device,
        decode_capture,
        profile_digest,
        write_case,
    )
    from firmware_bridge.errors import DecodeError
    from firmware_bridge.probe import format_values
    from firmware_bridge.profile import profile_file

    folder = Path(args.capture) / "testcases" / (args.case or profile.model)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"--capture: {folder} already holds a case; choose --case NAME or another folder")
    source = profile_file(args.profile)
    try:
        operator = args.operator or getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        operator = "unknown"

    async def read() -> list[Exchange]:
        async with line:
            return await capture_device(line, args.unit, profile)

    with _device_failures():
        exchanges = asyncio.run(read())
    decoded = decode_capture(profile, exchanges)
    info = CaptureInfo(
        profile=profile.model,
        profile_file=args.profile,
        profile_sha256=profile_digest(source),
        profile_verified=profile.verified,
        origin=args.origin,
        line=line.name,
        unit=args.unit,
        captured_at=datetime.now(UTC),
        tool=f"citygw {version('citygw')}",
        operator=operator,
        note=args.note or "",
    )
    with _failing_as(f"--capture {folder}"):
        write_case(folder, info, profile, exchanges, decoded)
    refused = sum(e.exception is not None for e in exchanges)
    silent = sum(e.timeout for e in exchanges)
    failed = sum(isinstance(v, DecodeError) for v in decoded.values())
    print(format_values(profile, dict(decoded)))
    print(
        f"wrote {folder}: {len(exchanges)} reads ({refused} refused, {silent} unanswered), "
        f"{len(decoded) - failed} fields decoded, {failed} not"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Replay a capture case as a Modbus TCP device or an RTU device behind a pseudo-terminal."""
    if args.mbus:
        return _serve_mbus(args)
    if args.dlms:
        return _serve_dlms(args)
    from firmware_bridge.capture import CaptureError, load_case
    from firmware_bridge.profile import ProfileError, load_profile
    from firmware_bridge.simulators import CaptureReplay, serve_serial_pty, serve_tcp

    try:
        case = load_case(Path(args.replay))
        profile = load_profile(args.profile) if args.profile else None
        device = CaptureReplay(case, profile=profile, unit=args.unit)
    except (CaptureError, ProfileError) as exc:
        raise ConfigError(str(exc)) from exc
    host, port = _host_port("--tcp", args.tcp)

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as stack:
            if args.pty:
                where = await stack.enter_async_context(serve_serial_pty([device]))
            else:
                endpoint = await stack.enter_async_context(serve_tcp([device], host=host, port=port))
                where = f"tcp://{endpoint.host}:{endpoint.port}"
            info = case.info
            print(
                f"replaying {case.folder} ({info.profile}, {info.origin} capture of "
                f"{info.captured_at:%Y-%m-%d}) as unit {device.unit} on {where}",
                flush=True,
            )
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)

    with _failing_as(f"serve on {args.tcp}"), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def _serve_mbus(args: argparse.Namespace) -> int:
    """Recorded M-Bus meters answering on a pseudo-terminal (``citygw probe --mbus --port`` it)."""
    from firmware_bridge.mbus_frames import decode
    from firmware_bridge.simulators.mbus import meter_from_spec, serve_mbus_pty

    try:
        meters = [meter_from_spec(spec) for spec in args.mbus]
    except (OSError, ValueError) as exc:  # a missing file, bad hex, no valid telegram
        raise ConfigError(f"--mbus: {exc}") from exc

    async def serve() -> None:
        async with serve_mbus_pty(meters) as port:
            addresses = ", ".join(f"{m.primary} ({decode(m.telegrams[0]).secondary})" for m in meters)
            print(f"M-Bus meters at {addresses} on {port}", flush=True)
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def _serve_dlms(args: argparse.Namespace) -> int:
    """A simulated DLMS meter (Gurux' server): HDLC on a pty, or on TCP (HDLC or the wrapper)."""
    from firmware_bridge.dlms import Transport
    from firmware_bridge.simulators.dlms import (
        DlmsMeterSimulator,
        demo_registers,
        serve_dlms_pty,
        serve_dlms_tcp,
        ticking,
    )

    transport: Transport = "wrapper" if args.transport == "wrapper" and not args.pty else "hdlc"
    meter = DlmsMeterSimulator(
        demo_registers(),
        physical=args.physical,
        password=args.password,
        transport=transport,
        capture_period_s=args.capture_period,
    )
    host, port = _host_port("--tcp", args.tcp)

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as stack:
            if args.pty:
                where = await stack.enter_async_context(serve_dlms_pty([meter]))
            else:
                where = await stack.enter_async_context(serve_dlms_tcp(meter, host=host, port=port))
            await stack.enter_async_context(ticking([meter]))
            security = "LLS password" if args.password else "no security"
            address = "" if args.physical is None else f", physical address {args.physical}"
            print(f"DLMS meter ({transport}{address}, {security}) on {where}", flush=True)
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)

    with _failing_as(f"serve on {args.tcp}"), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def _probe_dlms(args: argparse.Namespace) -> int:
    """``citygw probe --dlms --port P --profile NAME``: a meter's fields, clock and recent load profile."""
    from datetime import UTC, datetime

    from firmware_bridge.dlms import DlmsLine, Meter
    from firmware_bridge.errors import DeviceError, DeviceTimeout
    from firmware_bridge.profile import ProfileError, load_dlms_profile

    if not args.port:
        raise ConfigError(
            "--dlms needs --port: a serial port (/dev/ttyUSB0) or socket://HOST:PORT of a meter"
        )
    if "://" not in args.port and not Path(args.port).exists():
        raise ConfigError(f"--port {args.port}: no such port; serial ports here: {_serial_ports()}")
    if args.transport == "wrapper" and not args.port.startswith("socket://"):
        raise ConfigError("--transport wrapper runs on TCP: --port socket://HOST:4059")
    if not args.profile:
        raise ConfigError("--dlms needs --profile: the dlms profile naming the OBIS codes to read")
    try:
        profile = load_dlms_profile(args.profile)
    except ProfileError as exc:
        raise ConfigError(f"--profile: {exc}") from exc
    meter = Meter(
        logical=args.logical,
        physical=args.physical,
        client=args.client if args.client is not None else (17 if args.password else 16),
        password=args.password,
    )
    line = DlmsLine(
        args.port,
        transport=args.transport,
        baudrate=args.baudrate or 9600,
        timeout=args.timeout if args.timeout is not None else 2.0,
    )

    async def probe() -> str:
        async with line:
            fields = await line.read(meter, profile)
            shown = [f"{name} = {value!r}" for name, value in fields.items()]
            shown += [f"{name}: {error}" for name, error in line.field_errors(meter).items()]
            clock = await line.read_clock(meter)
            shown.append(f"clock: {datetime.fromtimestamp(clock / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC")
            if args.load_profile and profile.load_profile:
                until = int(time.time() * 1000)
                rows = await line.read_load_profile(
                    meter, profile, until - int(args.load_profile * 3600e3), until
                )
                shown.append(f"load profile {profile.load_profile}: {len(rows)} row(s)")
                for stamp, row in rows:
                    values = ", ".join(f"{name}={value!r}" for name, value in row.items())
                    shown.append(f"  {datetime.fromtimestamp(stamp / 1000, UTC):%Y-%m-%d %H:%M:%S} {values}")
            return "\n".join(shown)

    try:
        print(asyncio.run(probe()))
    except DeviceTimeout as exc:
        raise CommandFailed(str(exc), EX_TEMPFAIL) from exc
    except DeviceError as exc:
        raise CommandFailed(str(exc), EX_DEVICE) from exc
    return 0


def _probe_mbus(args: argparse.Namespace) -> int:
    """``citygw probe --mbus --port P``: scan the line, or show a meter's records (or a profile's fields)."""
    from firmware_bridge.errors import DeviceError, DeviceTimeout
    from firmware_bridge.mbus import MbusLine, parse_address
    from firmware_bridge.mbus_frames import MAX_PRIMARY
    from firmware_bridge.mbus_probe import format_found, format_records
    from firmware_bridge.profile import ProfileError, load_mbus_profile

    if not args.port:
        raise ConfigError(
            "--mbus needs --port: a serial port (/dev/ttyUSB0) or socket://HOST:PORT of a gateway"
        )
    if "://" not in args.port and not Path(args.port).exists():
        raise ConfigError(f"--port {args.port}: no such port; serial ports here: {_serial_ports()}")
    if (args.scan is None) == (args.meter is None):
        raise ConfigError(
            "--mbus: give --scan primary|secondary, or --meter ADDRESS (0-250 or 16 hex digits)"
        )
    first, _, last = args.addresses.partition("-")
    if not (first.isdigit() and last.isdigit() and int(first) <= int(last) <= MAX_PRIMARY):
        raise ConfigError(
            f"--addresses {args.addresses!r}: write FIRST-LAST within 0-{MAX_PRIMARY}, e.g. 0-20"
        )
    try:
        address = None if args.meter is None else parse_address(args.meter)
        profile = load_mbus_profile(args.profile) if args.profile else None
    except (ValueError, ProfileError) as exc:
        raise ConfigError(f"--meter/--profile: {exc}") from exc
    line = MbusLine(
        args.port, baudrate=args.baudrate or 2400, timeout=args.timeout if args.timeout is not None else 1.0
    )

    async def probe() -> str:
        async with line:
            if args.scan == "primary":
                return format_found(await line.scan_primary(range(int(first), int(last) + 1)))
            if args.scan == "secondary":
                return format_found(await line.scan_secondary())
            assert address is not None
            if profile is not None:
                fields = await line.read(address, profile)
                missing = line.field_errors(address)
                shown = [f"{name} = {value!r}" for name, value in fields.items()]
                return "\n".join(shown + [f"{name}: {error}" for name, error in missing.items()])
            return format_records(await line.read_telegrams(address))

    try:
        print(asyncio.run(probe()))
    except DeviceTimeout as exc:
        raise CommandFailed(str(exc), EX_TEMPFAIL) from exc
    except DeviceError as exc:
        raise CommandFailed(str(exc), EX_DEVICE) from exc
    return 0


def _resolve(host: str, port: int) -> None:
    """A host name that does not resolve is a setting to fix (exit 2); a DNS that did not answer, 75."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        temporary = exc.errno == socket.EAI_AGAIN
        line = f"--tcp {host}:{port}: {exc.strerror}"
        raise CommandFailed(line, EX_TEMPFAIL) if temporary else ConfigError(line) from exc


def _serial_ports() -> str:
    patterns = ("/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyAMA*", "/dev/ttyS[0-3]", "/dev/serial/by-id/*")
    found = sorted(str(path) for pattern in patterns for path in Path("/").glob(pattern.lstrip("/")))
    return ", ".join(found) or "none"


def _settings_flags(argv: Sequence[str] | None, command: str) -> Callable[[argparse.ArgumentParser], None]:
    """Adds the flags of ``command``'s settings model (``"api run"``) to its parser, if ``argv`` runs
    that command (None: every command): importing a model imports its room, which ``citygw --help``
    and the other commands need not wait for on a Pi."""
    from citygw.contract.settings import add_arguments

    words = [word for word in argv if not word.startswith("-")][:2] if argv is not None else None

    def add(parser: argparse.ArgumentParser) -> None:
        if words is not None and words != command.split():
            return
        if command.startswith("api"):
            from api.settings import ApiSettings

            add_arguments(parser, ApiSettings)
        elif command.startswith("collector"):
            from collector.settings import CollectorSettings

            add_arguments(parser, CollectorSettings)
        else:
            from edge.settings import EdgeSettings

            add_arguments(parser, EdgeSettings)

    return add


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line; with ``argv``, only the settings flags of the service it runs are made."""
    parser = argparse.ArgumentParser(prog="citygw", description="CityGW smart-city telemetry gateway")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run simulated devices, agents, collector and API on this machine")
    demo.add_argument("--broker", help="MQTT broker URL (mqtt://HOST:PORT); default: an embedded broker")
    demo.add_argument("--store", help="store URL (influxdb://HOST:PORT/DB, ...); default: embedded SQLite")
    demo.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=8000, help="API port (default 8000)")
    demo.add_argument("--workdir", default="var/demo", help="folder for journals, store and configs")
    demo.add_argument("--duration", type=float, help="stop after this many seconds (default: at Ctrl-C)")
    demo.set_defaults(func=_demo)

    probe = sub.add_parser(
        "probe", help="read a live device's registers and show every plausible decoding (or decode a profile)"
    )
    where = probe.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="Modbus TCP device or gateway")
    where.add_argument("--serial", metavar="PORT", help="Modbus RTU serial port (e.g. /dev/ttyUSB0)")
    where.add_argument("--mbus", action="store_true", help="an M-Bus line on --port (8E1)")
    where.add_argument("--dlms", action="store_true", help="a DLMS/COSEM meter on --port (needs --profile)")
    probe.add_argument("--port", help="--mbus: serial port (/dev/ttyUSB0) or socket://HOST:PORT of a gateway")
    probe.add_argument(
        "--scan",
        choices=("primary", "secondary"),
        help="--mbus: list the meters (addresses 0-250, or search)",
    )
    probe.add_argument("--meter", help="--mbus: read this meter: primary address 0-250 or 16-digit secondary")
    probe.add_argument(
        "--addresses", default="0-250", help="--mbus --scan primary: FIRST-LAST (default 0-250)"
    )
    probe.add_argument("--baudrate", type=int, help="default 9600 (Modbus RTU, DLMS), 2400 (M-Bus)")
    dlms = probe.add_argument_group("DLMS/COSEM (--dlms)")
    dlms.add_argument("--transport", choices=("hdlc", "wrapper"), default="hdlc", help="default hdlc")
    dlms.add_argument("--logical", type=int, default=1, help="server (logical) address, default 1")
    dlms.add_argument("--physical", type=int, help="HDLC physical address of a meter on a shared bus")
    dlms.add_argument("--client", type=int, help="client address (default 16 public, 17 with --password)")
    dlms.add_argument("--password", help="Low Level Security password")
    dlms.add_argument("--load-profile", type=float, metavar="HOURS", help="also show the last HOURS of rows")
    probe.add_argument("--parity", choices=("N", "E", "O"), default="N")
    probe.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    probe.add_argument("--table", choices=("holding", "input", "coil", "discrete"), default="holding")
    probe.add_argument(
        "--address", type=lambda v: int(v, 0), default=0, help="first register, 0-based (0x.. ok)"
    )
    probe.add_argument("--count", type=int, default=10, help="how many registers (default 10)")
    probe.add_argument("--profile", help="decode through this profile (name or file) instead")
    probe.add_argument(
        "--timeout",
        type=float,
        help=f"seconds to wait for an answer (default 1, with --scan-units {SCAN_TIMEOUT:g})",
    )
    probe.add_argument(
        "--scan-units", metavar="RANGE", help="list the unit ids that answer, e.g. 1-247 or 1,3,10-20"
    )
    capture = probe.add_argument_group("field capture (a golden test case from the device)")
    capture.add_argument(
        "--capture", metavar="DIR", help="read every range --profile maps; write DIR/testcases/<case>/"
    )
    capture.add_argument("--case", help="the case folder's name (default: the profile's model)")
    capture.add_argument(
        "--origin",
        choices=("field", "simulator", "published"),
        default="field",
        help="what was read: a live device (default), a simulator, or someone else's dump",
    )
    capture.add_argument("--operator", help="who ran the capture (default: the login name)")
    capture.add_argument("--note", help="a line for the provenance file: site, meter serial, firmware")
    probe.set_defaults(func=_probe)

    serve = sub.add_parser("serve", help="answer as a captured Modbus device (replay a probe --capture case)")
    serving = serve.add_mutually_exclusive_group(required=True)
    serving.add_argument("--replay", metavar="CASE_DIR", help="a DIR/testcases/<case> folder")
    serving.add_argument(
        "--mbus",
        nargs="+",
        metavar="CAPTURE.hex[:PRIMARY[:SPLIT]]",
        help="M-Bus meters answering recorded telegrams on a pty (SPLIT: two telegrams after N records)",
    )
    serve_where = serve.add_mutually_exclusive_group()
    serve_where.add_argument(
        "--tcp", metavar="HOST:PORT", default=REPLAY_ADDRESS, help=f"listen here (default {REPLAY_ADDRESS})"
    )
    serving.add_argument("--dlms", action="store_true", help="a simulated DLMS/COSEM meter (Gurux' server)")
    serve_where.add_argument(
        "--pty", action="store_true", help="Modbus RTU or DLMS HDLC on a pseudo-terminal (path printed)"
    )
    serve.add_argument("--transport", choices=("hdlc", "wrapper"), default="wrapper", help="--dlms on TCP")
    serve.add_argument("--physical", type=int, help="--dlms: HDLC physical address")
    serve.add_argument("--password", help="--dlms: Low Level Security password (none: no security)")
    serve.add_argument(
        "--capture-period", type=float, default=900.0, help="--dlms: load profile period, s (default 900)"
    )
    serve.add_argument("--unit", type=int, help="answer as this unit id (default: the captured one)")
    serve.add_argument("--profile", help="profile naming the device (default: the capture's)")
    serve.add_argument("--duration", type=float, help="stop after this many seconds (default: at Ctrl-C)")
    serve.set_defaults(func=_serve)

    edge = sub.add_parser("edge", help="edge agent").add_subparsers(dest="action", required=True)
    edge_run = edge.add_parser("run", help="run an edge agent")
    _settings_flags(argv, "edge run")(edge_run)
    edge_run.set_defaults(func=_edge_run)
    edge_launch = edge.add_parser(
        "launch", help="run the agent of the current release; roll a release that fails its trial back"
    )
    _settings_flags(argv, "edge launch")(edge_launch)
    edge_launch.set_defaults(func=_edge_launch)
    _add_release_parser(sub)

    keys = sub.add_parser("keys", help="API keys (stored hashed in the registry)").add_subparsers(
        dest="action", required=True
    )
    registry_url = _env("CITYGW_REGISTRY_URL", DEFAULT_REGISTRY)
    keys_create = keys.add_parser("create", help="make a key and print its token once")
    keys_create.add_argument("--name", required=True, help="who holds it, e.g. 'Lvivvodokanal SCADA'")
    keys_create.add_argument(
        "--role",
        required=True,
        choices=KEY_ROLES,
        help="utility (telemetry), engineer (its --site only), transit (static GTFS, transit alerts), admin",
    )
    keys_create.add_argument(
        "--site", action="append", default=[], help="a site an engineer manages (repeat)"
    )
    keys_create.add_argument("--expires-days", type=int, default=None)
    keys_list = keys.add_parser("list", help="keys without their secrets")
    keys_list.add_argument("--all", action="store_true", help="revoked keys too")
    keys_revoke = keys.add_parser("revoke", help="revoke a key at once")
    keys_revoke.add_argument("key_id")
    for keys_parser in (keys_create, keys_list, keys_revoke):
        keys_parser.add_argument("--registry", default=registry_url, help="registry database URL")
        keys_parser.set_defaults(func=_keys)

    _add_pki_parser(sub)

    collector = sub.add_parser("collector", help="MQTT → store collector").add_subparsers(
        dest="action", required=True
    )
    collector_run = collector.add_parser("run", help="run a collector")
    _settings_flags(argv, "collector run")(collector_run)
    collector_run.set_defaults(func=_collector_run)

    api = sub.add_parser("api", help="HTTP API").add_subparsers(dest="action", required=True)
    api_run = api.add_parser("run", help="serve the HTTP API")
    _settings_flags(argv, "api run")(api_run)
    api_run.set_defaults(func=_api_run)

    dashboards = sub.add_parser("dashboards", help="Grafana dashboards").add_subparsers(
        dest="action", required=True
    )
    push = dashboards.add_parser(
        "push", help="create or update the dashboards in $CITYGW_GRAFANA_URL (token: $CITYGW_GRAFANA_TOKEN)"
    )
    push.add_argument("--dry-run", action="store_true", help="print the diff against Grafana, change nothing")
    push.set_defaults(func=_dashboards_push)
    preview = dashboards.add_parser(
        "preview", help="draw each dashboard's panels from InfluxDB into PNGs, without Grafana"
    )
    for command in (push, preview):
        command.add_argument(
            "--profiles",
            type=Path,
            action="append",
            help="a folder of the site's own device profiles (repeatable); default $CITYGW_PROFILE_DIRS, "
            "comma-separated, as the API reads it",
        )
    preview.add_argument("--store", default=_env("CITYGW_STORE_URL", DEFAULT_STORE), help="influxdb://...")
    preview.add_argument("--out", type=Path, default=Path("var/dashboards"), help="folder of the PNGs")
    preview.add_argument("--hours", type=float, default=3.0, help="time range: the last N hours (3)")
    preview.set_defaults(func=_dashboards_preview)
    return parser


def _add_release_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rel = sub.add_parser("release", help="signed agent releases (docs/deploy.md, agent software updates)")
    actions = rel.add_subparsers(dest="action", required=True)
    keygen = actions.add_parser("keygen", help="a new ed25519 signing key; prints the public key to pin")
    keygen.add_argument("--dir", default="release-keys", help="folder of NAME.key and NAME.pub")
    keygen.add_argument("--name", default="release", help="file names: NAME.key, NAME.pub")
    build = actions.add_parser("build", help="the project's wheel at VERSION, signed: citygw-VERSION.release")
    build.add_argument("--key", required=True, help="the signing key (citygw release keygen)")
    build.add_argument("--version", required=True, help="the release's version (PEP 440), above the fleet's")
    build.add_argument("--source", default=".", help="the checkout to build the wheel from (default .)")
    build.add_argument("--wheel", help="sign this pure-Python wheel instead of building one")
    build.add_argument("--min-agent-version", default="0.1.0", help="older agents refuse the release")
    build.add_argument("--out", default="dist", help="folder of the bundle (default dist)")
    show = actions.add_parser("show", help="print a bundle's manifest")
    show.add_argument("bundle")
    rel.set_defaults(func=_release)


def _add_pki_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from citygw.pki import DEFAULT_DAYS, KINDS

    pki = sub.add_parser("pki", help="the CA of the MQTT client certificates (docs/deploy.md)")
    pki.add_argument(
        "--dir", default=_env("CITYGW_PKI_DIR", "pki"), help="the CA folder, $CITYGW_PKI_DIR (default ./pki)"
    )
    actions = pki.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="a new CA key and certificate, and an empty CRL")
    init.add_argument("--name", default="CityGW CA", help="the CA's CN")
    init.add_argument("--days", type=int, default=DEFAULT_DAYS["ca"])
    issue = actions.add_parser(
        "issue", help="a client key and certificate, CN = NAME (rotation: issue again)"
    )
    issue.add_argument("kind", choices=KINDS)
    issue.add_argument("name", help="the agent id, or the service user (svc.collector-1)")
    issue.add_argument("--days", type=int, default=DEFAULT_DAYS["client"])
    server = actions.add_parser("server", help="the broker's key and certificate")
    server.add_argument(
        "hostname",
        nargs="+",
        help="each name or IP address clients connect to (e.g. broker.city.example 127.0.0.1)",
    )
    server.add_argument("--days", type=int, default=DEFAULT_DAYS["server"])
    revoke = actions.add_parser("revoke", help="revoke a name's certificates or one serial; writes the CRL")
    revoke.add_argument("what", metavar="NAME|SERIAL")
    revoke.add_argument("--crl-days", type=int, default=DEFAULT_DAYS["crl"], help="validity of the new CRL")
    crl = actions.add_parser("crl", help="sign the CRL anew (before its next update: the broker refuses all)")
    crl.add_argument("--days", type=int, default=DEFAULT_DAYS["crl"])
    actions.add_parser("list", help="serial, name, expiry and state (valid, expired, revoked) of each")
    pki.set_defaults(func=_pki)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Chatty libraries: their INFO lines drown the demo's own output.
        for name in ("transitions", "pymodbus", "httpx", "alembic.runtime.plugins"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("amqtt").setLevel(logging.ERROR)
        for name in QUIET_LOGGERS.get(args.command, ()):
            logging.getLogger(name).setLevel(logging.ERROR)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return EX_CONFIG
    except CommandFailed as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
