"""Release manifests and signatures: what an agent believes, and everything it must refuse."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citygw.contract import release
from citygw.contract.release import Bundle, Manifest, ReleaseError


def _wheel(version: str = "0.2.0", *, pure: bool = True) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("edge/__init__.py", "")
        wheel.writestr(
            f"citygw-{version}.dist-info/WHEEL",
            f"Wheel-Version: 1.0\nRoot-Is-Purelib: {'true' if pure else 'false'}\nTag: py3-none-any\n",
        )
    return buffer.getvalue()


def _manifest(data: bytes, version: str = "0.2.0") -> Manifest:
    return Manifest(
        version=version,
        wheel=f"citygw-{version}-py3-none-any.whl",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        created=1,
        min_agent_version="0.1.0",
    )


def test_a_signed_manifest_verifies_with_its_key_and_with_no_other() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    data = _wheel()
    manifest_bytes, signature = release.sign(_manifest(data), key)
    both = [other.public_key(), key.public_key()]
    assert release.verify(manifest_bytes, signature, both).version == "0.2.0"
    with pytest.raises(ReleaseError, match="bad signature"):
        release.verify(manifest_bytes, signature, [other.public_key()])
    with pytest.raises(ReleaseError, match="no release key is pinned"):
        release.verify(manifest_bytes, signature, [])


def test_a_manifest_changed_after_signing_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    manifest_bytes, signature = release.sign(_manifest(_wheel()), key)
    tampered = manifest_bytes.replace(b'"0.2.0"', b'"9.9.9"', 1)
    assert tampered != manifest_bytes
    with pytest.raises(ReleaseError, match="bad signature"):
        release.verify(tampered, signature, [key.public_key()])
    with pytest.raises(ReleaseError, match="not base64"):
        release.verify(manifest_bytes, "%%%", [key.public_key()])


def test_a_wheel_of_another_size_or_hash_is_refused() -> None:
    data = _wheel()
    manifest = _manifest(data)
    release.check_artefact(manifest, data)
    with pytest.raises(ReleaseError, match="wrong size"):
        release.check_artefact(manifest, data + b"x")
    flipped = bytes([data[0] ^ 1]) + data[1:]
    with pytest.raises(ReleaseError, match="wrong hash"):
        release.check_artefact(manifest, flipped)


def test_public_keys_round_trip_and_bad_ones_say_why() -> None:
    key = Ed25519PrivateKey.generate()
    text = release.public_key_text(key.public_key())
    assert text.startswith("ed25519:")
    assert release.public_key_text(release.parse_public_key(text)) == text
    with pytest.raises(ValueError, match="starts with ed25519:"):
        release.parse_public_key("ssh-ed25519 AAAA")
    with pytest.raises(ValueError, match="32 bytes"):
        release.parse_public_key("ed25519:" + base64.b64encode(b"short").decode())


def test_versions_compare_as_versions_not_strings() -> None:
    assert release.is_newer("0.10.0", "0.9.0")
    assert not release.is_newer("0.9.0", "0.10.0")
    assert not release.is_newer("0.2.0", "0.2.0")
    assert release.at_least("0.2.0", "0.1.0")
    assert not release.at_least("0.1.0", "0.2.0")
    with pytest.raises(ValueError, match="no version"):
        _manifest(b"x", version="latest")


def test_keygen_then_build_makes_a_bundle_that_checks_out(tmp_path: Path) -> None:
    key_path, public = release.keygen(tmp_path / "keys")
    assert key_path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ReleaseError, match="exists"):
        release.keygen(tmp_path / "keys")
    wheel = tmp_path / "citygw-0.2.0-py3-none-any.whl"
    wheel.write_bytes(_wheel())
    signing = release.load_private_key(key_path)
    bundle_path = release.build(signing, "0.2.0", out=tmp_path / "dist", wheel=wheel)
    bundle = Bundle.decode(bundle_path.read_bytes())
    manifest = bundle.checked([release.parse_public_key(public)])
    assert (manifest.version, manifest.size) == ("0.2.0", len(wheel.read_bytes()))
    with pytest.raises(ReleaseError, match=r"not 0\.3\.0"):
        release.build(release.load_private_key(key_path), "0.3.0", out=tmp_path / "dist", wheel=wheel)


def test_a_platform_wheel_or_a_non_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="not a pure-Python wheel"):
        release.check_pure_wheel(_wheel(pure=False), "citygw-0.2.0-py3-none-any.whl")
    with pytest.raises(ReleaseError, match="not a release bundle"):
        Bundle.decode(b"not a tar file at all" * 30)


def test_the_cli_makes_a_key_signs_a_wheel_and_shows_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from citygw.cli import main

    assert main(["release", "keygen", "--dir", str(tmp_path / "keys")]) == 0
    public = capsys.readouterr().out.strip().splitlines()[-1]
    wheel = tmp_path / "citygw-0.4.0-py3-none-any.whl"
    wheel.write_bytes(_wheel("0.4.0"))
    key = str(tmp_path / "keys" / "release.key")
    argv = ["release", "build", "--key", key, "--version", "0.4.0", "--wheel", str(wheel)]
    assert main([*argv, "--out", str(tmp_path / "dist")]) == 0
    bundle = Path(capsys.readouterr().out.strip())
    assert bundle == tmp_path / "dist" / "citygw-0.4.0.release"
    Bundle.decode(bundle.read_bytes()).checked([release.parse_public_key(public)])
    assert main(["release", "show", str(bundle)]) == 0
    assert '"version": "0.4.0"' in capsys.readouterr().out
    assert main([*argv[:-1], str(tmp_path / "missing.whl")]) == 2
    assert "missing.whl" in capsys.readouterr().err
