"""Mosquitto started with deploy/mosquitto's files, a throwaway CA and users made by its script."""

from __future__ import annotations

import getpass
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY, Client, MQTTMessage, MQTTProtocolVersion
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from citygw.pki import Kind, Pki
from tests.services import Mosquitto, find_binary, free_port

DEPLOY = Path(__file__).parents[2] / "deploy" / "mosquitto"
PASSWORD = "correct horse battery staple"
ADMIN_PASSWORD = "admin-password-without-spaces"  # mosquitto_ctrl's options file splits on them
USERS_SCRIPT = DEPLOY / "citygw-broker-users"
# The dynamic-security plugin of Debian's package; the compose file names the image's.
DEBIAN_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


def kind_of(user: str) -> Kind:
    """The citygw-broker-users kind of a test user, from its name."""
    kinds: dict[str, Kind] = {"svc.collector": "collector", "svc.api": "api", "city.alerts": "alerts-reader"}
    for prefix, kind in kinds.items():
        if user.startswith(prefix):
            return kind
    return "agent"


def make_certificates(folder: Path, host: str = "127.0.0.1") -> Pki:
    """The CA (ca.crt, crl.pem) and the broker's server.crt and server.key, in ``folder``, by citygw pki."""
    pki = Pki(folder)
    pki.init(name="CityGW test CA", days=30)
    pki.server(host, days=2)
    return pki


class SecuredMosquitto(Mosquitto):
    """The production configuration with test ports and paths; ``port`` is the loopback listener."""

    config_file = DEPLOY / "mosquitto.conf"
    # The services' listener as written in config_file, and as the test runs it.
    services_listener = "listener 1883 127.0.0.1\n"
    services_listener_address = " 127.0.0.1"
    mtls_listener = "listener 8884\n"
    persistence_location = "persistence_location /var/lib/mosquitto/"
    plugin = DEBIAN_PLUGIN
    dynsec_location = "/var/lib/mosquitto/dynamic-security.json"

    def __init__(self, workdir: Path, users: list[str]) -> None:
        super().__init__(workdir)
        self.users = users
        self.sessions: list[Session] = []

    def choose_ports(self) -> None:
        super().choose_ports()
        self.tls_port = free_port()
        self.mtls_port = free_port()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Close every session the test opened (their network threads would retry for ever), then stop."""
        for session in self.sessions:
            session.close()
        super().stop(sig)

    def command(self) -> list[str]:
        files = self.workdir / "citygw"
        if not files.exists():
            files.mkdir()
            make_certificates(files)
            (files / "acl").write_text((DEPLOY / "acl").read_text())
            done = self.users_script("init", str(self.dynsec_file), "admin", password=ADMIN_PASSWORD)
            assert done.returncode == 0, f"citygw-broker-users init: {done.stderr}"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(f"user {getpass.getuser()}\n" + self.production_config())
        return [find_binary("mosquitto"), "-c", str(conf)]

    def start(self) -> None:
        """Start; the first time, make the roles and users with deploy/mosquitto/citygw-broker-users."""
        provisioned = self._started
        super().start()
        if not provisioned:
            try:
                done = self.users_script("roles")
                assert done.returncode == 0, f"citygw-broker-users roles: {done.stderr}"
                for user in self.users:
                    self.add_user(kind_of(user), user)
            except BaseException:
                self.stop()
                raise

    def users_script(self, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        """Run citygw-broker-users as the plugin's admin; returns its outcome (exit code, messages)."""
        ctrl = self.workdir / "ctrl"
        ctrl.mkdir(exist_ok=True)
        (ctrl / "mosquitto_ctrl").write_text(f"-h 127.0.0.1\n-p {self.port}\n-u admin\n-P {ADMIN_PASSWORD}\n")
        env = {**os.environ, "XDG_CONFIG_HOME": str(ctrl), "CITYGW_BROKER_PASSWORD": password}
        return subprocess.run(
            ["sh", str(USERS_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
        )

    def mosquitto_ctrl(self, *args: str) -> str:
        """``mosquitto_ctrl dynsec ARGS`` as the plugin's admin; its answer."""
        self.users_script("roles")  # writes mosquitto_ctrl's options file (nothing else changes)
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.workdir / "ctrl")}
        done = subprocess.run(
            [find_binary("mosquitto_ctrl"), "dynsec", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout + done.stderr

    def add_user(self, kind: str, user: str) -> None:
        done = self.users_script("add", kind, user)
        assert done.returncode == 0, f"citygw-broker-users add {kind} {user}: {done.stderr}"

    @property
    def dynsec_file(self) -> Path:
        return self.workdir / "dynamic-security.json"

    def production_config(self) -> str:
        """config_file with only ports, paths and the log destination changed."""
        text = self.config_file.read_text()
        changes = {
            self.services_listener: f"listener {self.port}{self.services_listener_address}\n",
            "listener 8883\n": f"listener {self.tls_port} 127.0.0.1\n",
            "/etc/mosquitto/citygw/": f"{self.workdir}/citygw/",
            self.persistence_location: f"persistence_location {self.workdir}/",
            f"plugin {self.plugin}\n": f"plugin {DEBIAN_PLUGIN}\n",
            f"plugin_opt_config_file {self.dynsec_location}": f"plugin_opt_config_file {self.dynsec_file}",
            self.mtls_listener: f"listener {self.mtls_port} 127.0.0.1\n",
        }
        for old, new in changes.items():
            assert old in text, f"{self.config_file} no longer has {old!r}"
            text = text.replace(old, new)
        return text

    @property
    def ca_file(self) -> str:
        return str(self.workdir / "citygw" / "ca.crt")

    @property
    def pki(self) -> Pki:
        """The city's CA, in the folder the broker reads ca.crt, crl.pem and its own certificate from."""
        return Pki(self.workdir / "citygw")

    def reload(self) -> None:
        """SIGHUP, as ``systemctl reload mosquitto``: Mosquitto reads its certificates and CRL again."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def client_cert(self, name: str) -> tuple[str, str]:
        """(certificate, key) files of ``name`` issued by the broker's CA; issued now if missing."""
        cert, key = self.pki.root / f"{name}.crt", self.pki.root / f"{name}.key"
        if not cert.exists():
            self.pki.issue(kind_of(name), name, days=2)
        return str(cert), str(key)


class ComposeMosquitto(SecuredMosquitto):
    """deploy/compose/mosquitto.conf: its services' listener on every interface, as in the container."""

    config_file = DEPLOY.parent / "compose" / "mosquitto.conf"
    services_listener = "listener 1883\n"
    services_listener_address = ""
    persistence_location = "persistence_location /mosquitto/data/"
    plugin = "/usr/lib/mosquitto_dynamic_security.so"
    dynsec_location = "/mosquitto/data/dynamic-security.json"


class Session:
    """One MQTT client: connects (raising with the broker's reason when refused) and collects messages.

    With ``cert``, it connects to the certificate listener with the certificate issued to that name.
    """

    def __init__(
        self,
        broker: SecuredMosquitto,
        username: str | None,
        password: str = PASSWORD,
        *,
        tls: bool = False,
        client_id: str | None = None,
        host: str = "127.0.0.1",
        mqtt5: bool = False,
        clean: bool = True,
        will: tuple[str, bytes] | None = None,
        cert: str | None = None,
    ) -> None:
        self.messages: queue.Queue[MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self.dropped = threading.Event()
        self.reason: Any = None
        protocol = MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{username}",
            protocol=protocol,
            clean_session=None if mqtt5 else clean,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(*will, qos=1, retain=True)
        if cert is not None:  # the certificate listener, as the user ``cert``
            certfile, keyfile = broker.client_cert(cert)
            self.client.tls_set(ca_certs=broker.ca_file, certfile=certfile, keyfile=keyfile)
        elif tls:
            self.client.tls_set(ca_certs=broker.ca_file)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_args: self.dropped.set()
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        broker.sessions.append(self)
        properties = None
        if mqtt5 and not clean:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
        self.client.connect(
            host,
            broker.mtls_port if cert is not None else broker.tls_port if tls else broker.port,
            clean_start=clean if mqtt5 else MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("no CONNACK")
        reason: Any = self.reason
        if reason.is_failure:
            self.close()
            raise PermissionError(str(reason))

    def _on_connect(self, _client: Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.reason = reason
        self._connected.set()

    def subscribe(self, *topics: str) -> None:
        """Subscribe, asserting the broker granted each topic."""
        for topic, granted in zip(topics, self.try_subscribe(*topics), strict=True):
            assert granted, f"{topic}: the broker refused the subscription"

    def try_subscribe(self, *topics: str) -> list[bool]:
        """Subscribe to each topic in turn; whether its SUBACK granted it."""
        outcome: list[bool] = []
        subscribed = threading.Event()

        def on_subscribe(_client: Client, _userdata: Any, _mid: int, codes: list[Any], _props: Any) -> None:
            outcome.append(not codes[0].is_failure)
            subscribed.set()

        self.client.on_subscribe = on_subscribe
        for topic in topics:
            subscribed.clear()
            self.client.subscribe(topic, qos=1)
            assert subscribed.wait(5), f"no SUBACK for {topic}"
        return outcome

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def publish_refused(self, topic: str, payload: bytes) -> None:
        """Publish where this user may not; Mosquitto 2.0 answers by closing the connection (measured)."""
        self.client.reconnect_delay_set(60, 60)  # stay down, so the test sees the refusal
        self.client.publish(topic, payload, qos=1)
        assert self.dropped.wait(5), f"{topic}: the broker neither refused nor closed the connection"
        self.close()

    def received(self, timeout: float = 5.0) -> tuple[str, bytes]:
        message = self.messages.get(timeout=timeout)
        return message.topic, bytes(message.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
