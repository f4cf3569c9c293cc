"""Signed agent releases (``citygw release``): a wheel, its manifest, and an ed25519 signature of it.

A release bundle is one uncompressed tar file holding ``manifest.json`` (name, version, the wheel's
file name, sha256 and size, when it was made, the oldest agent that may take it), ``manifest.sig``
(the ed25519 signature of manifest.json's exact bytes, base64) and the wheel. Agents pin the public
keys (``ed25519:<base64 of the 32 raw bytes>``) in their config and take nothing another key signed;
the API checks uploads against the same keys. Releases are pure-Python wheels: an agent unpacks one
into a folder of its own and runs it with the interpreter and third-party packages already installed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from citygw.contract.errors import ConfigError

PACKAGE = "citygw"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
KEY_PREFIX = "ed25519:"
MAX_MANIFEST_BYTES = 4096
PACKAGES = ("citygw", "edge", "firmware_bridge", "collector", "api", "dashboards", "simulators")
_WHEEL_NAME = re.compile(r"^citygw-([^-]+)-py3-none-any\.whl$")


class ReleaseError(ConfigError):
    """A release that must not be taken or cannot be made; the message says which check failed."""


def _version(value: str) -> str:
    try:
        return str(Version(value))
    except InvalidVersion:
        raise ValueError(f"{value!r} is no version (PEP 440, e.g. 0.2.0)") from None


class Manifest(BaseModel):
    """What a release is; signed, so an agent believes every field of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: StrictInt = Field(default=1, alias="schema", ge=1, le=1)
    name: str = Field(default=PACKAGE, pattern=f"^{PACKAGE}$")
    version: str
    wheel: str = Field(pattern=_WHEEL_NAME.pattern, description="the wheel's file name")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: StrictInt = Field(gt=0)
    created: StrictInt = Field(ge=0, description="ms since epoch")
    min_agent_version: str = Field(description="agents older than this refuse the release")

    _check_versions = field_validator("version", "min_agent_version")(_version)

    def encode(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


# -- keys -------------------------------------------------------------------------------------------


def public_key_text(key: Ed25519PublicKey) -> str:
    """``ed25519:<base64>``: how configs and settings pin a key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The key of ``ed25519:<base64>``; ValueError naming what is wrong."""
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"a release key starts with {KEY_PREFIX} (citygw release keygen prints it)")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
    except ValueError:
        raise ValueError("a release key is base64 after ed25519:") from None
    if len(raw) != 32:
        raise ValueError(f"an ed25519 key is 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def keygen(directory: Path, name: str = "release") -> tuple[Path, str]:
    """A new signing key ``<name>.key`` (PEM, 0600, refuses to overwrite) and its public key text."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.key"
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ReleaseError(
            f"{path} exists: a new key would orphan every agent that pins the old one"
        ) from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public = public_key_text(key.public_key())
    (directory / f"{name}.pub").write_text(public + "\n")
    return path, public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ReleaseError(f"{path}: cannot read the signing key: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise ReleaseError(f"{path}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError(f"{path}: not an ed25519 key (citygw release keygen makes one)")
    return key


# -- signing and checking ---------------------------------------------------------------------------


def sign(manifest: Manifest, key: Ed25519PrivateKey) -> tuple[bytes, str]:
    """The manifest's bytes and their signature (base64)."""
    data = manifest.encode()
    return data, base64.b64encode(key.sign(data)).decode()


def verify(manifest_bytes: bytes, signature: str, keys: list[Ed25519PublicKey]) -> Manifest:
    """The manifest, if one of ``keys`` signed these exact bytes; ReleaseError otherwise."""
    if not keys:
        raise ReleaseError("no release key is pinned: refusing every release (update.public_keys)")
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        raise ReleaseError("the signature is not base64") from None
    for key in keys:
        try:
            key.verify(raw, manifest_bytes)
        except InvalidSignature:
            continue
        break
    else:
        raise ReleaseError("bad signature: no pinned release key signed this manifest")
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise ReleaseError(f"the manifest is over {MAX_MANIFEST_BYTES} bytes")
    try:
        return Manifest.model_validate_json(manifest_bytes)
    except ValidationError as exc:
        raise ReleaseError(f"the manifest does not validate: {exc.errors()[0]['msg']}") from None


def check_artefact(manifest: Manifest, data: bytes) -> None:
    """The wheel is the one the manifest names: its size and sha256."""
    if len(data) != manifest.size:
        raise ReleaseError(f"wrong size: {len(data)} bytes, the manifest says {manifest.size}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.sha256:
        raise ReleaseError(f"wrong hash: sha256 {digest}, the manifest says {manifest.sha256}")


def is_newer(candidate: str, running: str) -> bool:
    """Whether ``candidate`` is a later version than ``running`` (an unknown running version: yes)."""
    try:
        return Version(candidate) > Version(running)
    except InvalidVersion:
        return True


def at_least(running: str, minimum: str) -> bool:
    try:
        return Version(running) >= Version(minimum)
    except InvalidVersion:
        return False


# -- bundles --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A release as uploaded: the signed manifest and the wheel."""

    manifest_bytes: bytes
    signature: str
    wheel: bytes

    def manifest(self) -> Manifest:
        try:
            return Manifest.model_validate_json(self.manifest_bytes)
        except ValidationError as exc:
            raise ReleaseError(f"the manifest does not validate: {exc.errors()[0]['msg']}") from None

    def checked(self, keys: list[Ed25519PublicKey] | None) -> Manifest:
        """The manifest, its wheel checked against it; its signature too when ``keys`` are given."""
        manifest = verify(self.manifest_bytes, self.signature, keys) if keys is not None else self.manifest()
        check_artefact(manifest, self.wheel)
        return manifest

    def encode(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            name = self.manifest().wheel
            for member, data in (
                (MANIFEST, self.manifest_bytes),
                (SIGNATURE, self.signature.encode()),
                (name, self.wheel),
            ):
                info = tarfile.TarInfo(member)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Bundle:
        """Read a bundle; ReleaseError when it is not one."""
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                files = {
                    m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tar.getmembers()
                    if m.isfile()
                }
        except tarfile.TarError as exc:
            raise ReleaseError(
                f"not a release bundle (a tar file from citygw release build): {exc}"
            ) from None
        missing = {MANIFEST, SIGNATURE} - files.keys()
        if missing:
            raise ReleaseError(f"not a release bundle: {', '.join(sorted(missing))} missing")
        bundle = cls(files[MANIFEST], files[SIGNATURE].decode("ascii", "replace").strip(), b"")
        wheel = files.get(bundle.manifest().wheel)
        if wheel is None:
            raise ReleaseError(f"not a release bundle: {bundle.manifest().wheel} missing")
        return cls(bundle.manifest_bytes, bundle.signature, wheel)


def wheel_version(wheel: Path) -> str:
    match = _WHEEL_NAME.match(wheel.name)
    if match is None:
        raise ReleaseError(f"{wheel.name}: not a pure-Python citygw wheel (citygw-V-py3-none-any.whl)")
    return _version(match.group(1))


def build_wheel(source: Path, version: str, out: Path) -> Path:
    """The project's wheel at ``version``, built offline from a copy of ``source`` (a checkout)."""
    with tempfile.TemporaryDirectory(prefix="citygw-release-") as tmp:
        copy = Path(tmp) / "source"
        copy.mkdir()
        shutil.copy(source / "README.md", copy / "README.md")
        pyproject = (source / "pyproject.toml").read_text(encoding="utf-8")
        pyproject, found = re.subn(r'(?m)^version = "[^"]*"$', f'version = "{version}"', pyproject, count=1)
        if not found:
            raise ReleaseError(f'{source / "pyproject.toml"}: no version = "..." line to set')
        (copy / "pyproject.toml").write_text(pyproject, encoding="utf-8")
        for package in PACKAGES:
            shutil.copytree(source / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-qw", tmp, copy],
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise ReleaseError(f"building the wheel from {source} failed: {built.stderr.strip()[-2000:]}")
        (wheel,) = Path(tmp).glob("citygw-*.whl")
        out.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheel, out / wheel.name))


def build(
    key: Ed25519PrivateKey,
    version: str,
    *,
    out: Path,
    wheel: Path | None = None,
    source: Path | None = None,
    min_agent_version: str = "0.1.0",
    now_ms: int | None = None,
) -> Path:
    """Sign a release of ``wheel`` (or of the wheel built from ``source``); returns the bundle's path."""
    version = _version(version)
    if wheel is None:
        wheel = build_wheel(source or Path.cwd(), version, out)
    elif wheel_version(wheel) != version:
        raise ReleaseError(f"{wheel.name} is version {wheel_version(wheel)}, not {version}")
    data = wheel.read_bytes()
    check_pure_wheel(data, wheel.name)
    manifest = Manifest(
        version=version,
        wheel=wheel.name,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        created=now_ms if now_ms is not None else time.time_ns() // 1_000_000,
        min_agent_version=_version(min_agent_version),
    )
    manifest_bytes, signature = sign(manifest, key)
    path = out / f"citygw-{version}.release"
    out.mkdir(parents=True, exist_ok=True)
    path.write_bytes(Bundle(manifest_bytes, signature, data).encode())
    return path


def check_pure_wheel(data: bytes, name: str) -> None:
    """A wheel an agent can unpack and run: a zip, pure Python, no file outside its folder."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            names = wheel.namelist()
            metadata = [n for n in names if n.endswith(".dist-info/WHEEL")]
            text = wheel.read(metadata[0]).decode() if len(metadata) == 1 else ""
    except zipfile.BadZipFile as exc:
        raise ReleaseError(f"{name}: not a wheel: {exc}") from None
    if "Root-Is-Purelib: true" not in text:
        raise ReleaseError(f"{name}: not a pure-Python wheel (Root-Is-Purelib: true)")
    unsafe = [n for n in names if n.startswith("/") or ".." in Path(n).parts]
    if unsafe:
        raise ReleaseError(f"{name}: files outside the wheel's folder: {unsafe[:3]}")


def bundle_manifest_text(path: Path) -> str:
    """The manifest of a bundle file, pretty, for the CLI."""
    bundle = Bundle.decode(path.read_bytes())
    return json.dumps(json.loads(bundle.manifest_bytes), indent=2)
