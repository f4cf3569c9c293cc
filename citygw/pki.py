"""The city's own small CA for MQTT client certificates (``citygw pki``).

The broker's mTLS listener takes a certificate's CN as the MQTT user name, so a certificate is an
identity: CN = the agent id, or the service user (``svc.collector-1``). One folder holds the CA key,
every certificate issued (``certs/<serial>.pem``, for ``list`` and ``revoke``), the current key and
certificate of each name and the CRL the broker reads. Keys are ECDSA P-256 (cheap on a Pi), 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from citygw.contract import wire
from citygw.contract.errors import ConfigError

# As citygw-broker-users names them; the kind only decides which names are valid.
Kind = Literal["agent", "collector", "api", "alerts-reader"]
KINDS: tuple[Kind, ...] = ("agent", "collector", "api", "alerts-reader")
CA_KEY, CA_CERT, CRL = "ca.key", "ca.crt", "crl.pem"
CERTS = "certs"
SERVER = "server"
# Clocks of field devices drift: a certificate is valid from a little before it was made.
BACKDATE = dt.timedelta(minutes=5)
HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
DEFAULT_DAYS = {"ca": 3650, "client": 365, "server": 825, "crl": 365}


class PkiError(ConfigError):
    """What cannot be done, naming the file or name, and the fix (the CLI exits 2)."""


@dataclass(frozen=True, slots=True)
class Issued:
    """One certificate the CA signed."""

    serial: int
    name: str
    not_after: dt.datetime
    revoked: bool
    path: Path

    @property
    def serial_hex(self) -> str:
        return f"{self.serial:x}"


def check_name(kind: Kind, name: str) -> None:
    """The broker user the CN becomes must be one citygw-broker-users would create for ``kind``."""
    if kind == "agent":
        if not wire.is_agent_id(name):
            raise PkiError(f"'{name}' is no agent id ({wire.AGENT_ID_PATTERN}): the CN is the agent's user")
    elif "." not in name or not name.isprintable() or "/" in name or name.startswith("."):
        raise PkiError(f"{kind} name '{name}' needs a dot (svc.{name}): no agent id has one")


class Pki:
    """The CA folder ``root``; every method works on files there."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- files ---------------------------------------------------------------------------------

    def _write(self, path: Path, data: bytes, *, secret: bool) -> None:
        """Write atomically; a secret is 0600 from its first byte."""
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)

    def _ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key_path, cert_path = self.root / CA_KEY, self.root / CA_CERT
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except FileNotFoundError as exc:
            raise PkiError(f"{exc.filename}: no CA here; fix: citygw pki --dir {self.root} init") from exc
        except (OSError, ValueError) as exc:
            raise PkiError(f"{self.root}: cannot read the CA: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{key_path}: not the EC key citygw pki makes")
        return key, cert

    # -- commands ------------------------------------------------------------------------------

    def init(
        self, name: str = "CityGW CA", *, days: int = DEFAULT_DAYS["ca"], now: dt.datetime | None = None
    ) -> Path:
        """A new CA key and self-signed certificate, and an empty CRL; refuses to replace a CA."""
        if (self.root / CA_KEY).exists():
            raise PkiError(f"{self.root / CA_KEY} exists: a new CA would orphan every certificate it signed")
        now = now or _now()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / CERTS).mkdir(exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        self._write(self.root / CA_KEY, _pem_key(key), secret=True)
        self._write(self.root / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), secret=False)
        self.crl(now=now)
        return self.root / CA_CERT

    def issue(
        self, kind: Kind, name: str, *, days: int = DEFAULT_DAYS["client"], now: dt.datetime | None = None
    ) -> tuple[Path, Path]:
        """A client key and certificate, CN = ``name``, EKU clientAuth: ``<name>.crt``, ``<name>.key``.

        Issuing a name again is the rotation: the new pair replaces the files, the old certificate
        stays valid until it expires or is revoked, so the agent keeps working until it reconnects.
        """
        check_name(kind, name)
        return self._sign(name, x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), [], days, now)

    def server(
        self, *hostnames: str, days: int = DEFAULT_DAYS["server"], now: dt.datetime | None = None
    ) -> tuple[Path, Path]:
        """The broker's key and certificate (``server.crt``, ``server.key``): CN the first name, one
        SAN each (the name agents use, and 127.0.0.1 for services on the broker's machine)."""
        if not hostnames:
            raise PkiError("which host name or IP address do clients connect to?")
        sans: list[x509.GeneralName] = []
        for hostname in hostnames:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(hostname)))
            except ValueError:
                if not all(HOST_LABEL.fullmatch(label) for label in hostname.split(".")):
                    raise PkiError(f"'{hostname}' is neither a host name nor an IP address") from None
                sans.append(x509.DNSName(hostname))
        eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
        return self._sign(hostnames[0], eku, sans, days, now, files=SERVER)

    def _sign(
        self,
        name: str,
        eku: x509.ExtendedKeyUsage,
        sans: list[x509.GeneralName],
        days: int,
        now: dt.datetime | None,
        files: str | None = None,
    ) -> tuple[Path, Path]:
        if days < 1:
            raise PkiError(f"--days {days}: a certificate must be valid for a day at least")
        ca_key, ca_cert = self._ca()
        now = now or _now()
        not_after = now + dt.timedelta(days=days)
        if not_after > ca_cert.not_valid_after_utc:
            raise PkiError(
                f"--days {days}: would outlive the CA (until {ca_cert.not_valid_after_utc:%Y-%m-%d}); "
                "fix: fewer days"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(eku, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        pem = cert.public_bytes(serialization.Encoding.PEM)
        self._write(self.root / CERTS / f"{cert.serial_number:x}.pem", pem, secret=False)
        stem = files or name
        key_path, cert_path = self.root / f"{stem}.key", self.root / f"{stem}.crt"
        self._write(key_path, _pem_key(key), secret=True)
        self._write(cert_path, pem, secret=False)
        return cert_path, key_path

    def revoke(
        self, what: str, *, now: dt.datetime | None = None, crl_days: int = DEFAULT_DAYS["crl"]
    ) -> list[Issued]:
        """Revoke the certificate of serial ``what`` (hex), or all of CN ``what``; writes the CRL."""
        issued = list(self.issued())
        chosen = [c for c in issued if c.name == what or c.serial_hex == what.lower().removeprefix("0x")]
        if not chosen:
            raise PkiError(f"no certificate has the name or serial '{what}'; fix: see citygw pki list")
        fresh = [c for c in chosen if not c.revoked]
        if not fresh:
            raise PkiError(f"'{what}': already revoked")
        self.crl(now=now, days=crl_days, more={c.serial for c in fresh})
        return fresh

    def crl(
        self, *, now: dt.datetime | None = None, days: int = DEFAULT_DAYS["crl"], more: set[int] | None = None
    ) -> Path:
        """Sign the CRL anew (the revoked serials, plus ``more``), valid ``days``; returns its path.

        Each CRL is dated at least a second after the one it replaces (waiting for the clock if
        need be): an OpenSSL store holding both uses the latest lastUpdate. (Mosquitto 2.0.11
        builds its listener's store anew on reload, so there only the file counts.)
        """
        ca_key, ca_cert = self._ca()
        revoked: dict[int, dt.datetime] = {}
        number = 1
        old = self._read_crl()
        if old is not None:
            revoked = {entry.serial_number: entry.revocation_date_utc for entry in old}
            number = _crl_number(old) + 1
            # Not dated ahead instead: OpenSSL refuses a CRL from the future ("not yet valid").
            while now is None and _now() <= old.last_update_utc:
                time.sleep(0.1)
        now = now or _now()
        for serial in more or set():
            revoked.setdefault(serial, now)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        for serial, when in sorted(revoked.items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        crl = builder.sign(ca_key, hashes.SHA256())
        self._write(self.root / CRL, crl.public_bytes(serialization.Encoding.PEM), secret=False)
        return self.root / CRL

    def _read_crl(self) -> x509.CertificateRevocationList | None:
        try:
            return x509.load_pem_x509_crl((self.root / CRL).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise PkiError(
                f"{self.root / CRL}: not a PEM CRL ({exc}); fix: restore it from a backup"
            ) from exc

    def issued(self) -> Iterator[Issued]:
        """Every certificate signed here, oldest expiry first."""
        self._ca()
        crl = self._read_crl()
        revoked = {entry.serial_number for entry in crl} if crl is not None else set()
        found = []
        for path in (self.root / CERTS).glob("*.pem"):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            found.append(
                Issued(
                    cert.serial_number, str(cn), cert.not_valid_after_utc, cert.serial_number in revoked, path
                )
            )
        yield from sorted(found, key=lambda c: (c.not_after, c.name))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0
