"""citygw pki: what it issues is checked by OpenSSL's own verifier (`openssl verify`), not by our code."""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from citygw.cli import main
from citygw.pki import Pki


def verify(pki: Path, cert: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`openssl verify` of ``cert`` against the CA and its CRL, as a TLS server would."""
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki / "ca.crt"), "-crl_check", "-CRLfile", str(pki / "crl.pem"),
         *options, str(cert)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture
def ca(tmp_path: Path) -> Pki:
    pki = Pki(tmp_path / "pki")
    pki.init()
    return pki


def test_an_agent_certificate_is_a_client_certificate_of_the_ca_with_its_id_as_cn(ca: Pki) -> None:
    cert, key = ca.issue("agent", "depot-north-1")
    done = verify(ca.root, cert, "-purpose", "sslclient")
    assert done.returncode == 0, done.stderr
    # The broker takes the CN as the user name: it must be the agent id, and only that.
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", str(cert)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert subject.strip() == "subject=CN=depot-north-1"
    # A client certificate is no server's, and signs nothing.
    assert verify(ca.root, cert, "-purpose", "sslserver").returncode != 0
    assert "CA:FALSE" in subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "basicConstraints", "-in", str(cert)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # The key matches the certificate (openssl compares the public keys).
    pub_of_key = subprocess.run(
        ["openssl", "pkey", "-pubout", "-in", str(key)], capture_output=True, check=True
    )
    pub_of_cert = subprocess.run(
        ["openssl", "x509", "-noout", "-pubkey", "-in", str(cert)], capture_output=True, check=True
    )
    assert pub_of_key.stdout == pub_of_cert.stdout


def test_keys_are_readable_by_their_owner_only(ca: Pki) -> None:
    _cert, key = ca.issue("collector", "svc.collector-1")
    for path in (key, ca.root / "ca.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(ca.root.stat().st_mode) == 0o700


def test_the_server_certificate_names_the_broker_host(ca: Pki) -> None:
    by_ip, _ = ca.server("127.0.0.1")
    assert verify(ca.root, by_ip, "-purpose", "sslserver", "-verify_ip", "127.0.0.1").returncode == 0
    assert verify(ca.root, by_ip, "-purpose", "sslserver", "-verify_ip", "10.0.0.1").returncode != 0
    by_name, _ = ca.server("mqtt.city.example")
    done = verify(ca.root, by_name, "-purpose", "sslserver", "-verify_hostname", "mqtt.city.example")
    assert done.returncode == 0, done.stderr
    assert verify(ca.root, by_name, "-verify_hostname", "evil.example").returncode != 0
    # The public name for agents, loopback for the services on the broker's machine.
    both, _ = ca.server("mqtt.city.example", "127.0.0.1")
    assert verify(ca.root, both, "-verify_hostname", "mqtt.city.example").returncode == 0
    assert verify(ca.root, both, "-verify_ip", "127.0.0.1").returncode == 0
    assert verify(ca.root, both, "-verify_hostname", "evil.example").returncode != 0


def test_a_revoked_certificate_fails_verification_and_the_others_do_not(ca: Pki) -> None:
    north, _ = ca.issue("agent", "depot-north-1")
    south, _ = ca.issue("agent", "depot-south-1")
    old_crl = x509.load_pem_x509_crl((ca.root / "crl.pem").read_bytes())
    [revoked] = ca.revoke("depot-north-1")
    done = verify(ca.root, north)
    assert done.returncode != 0
    assert "certificate revoked" in done.stdout + done.stderr
    assert verify(ca.root, south).returncode == 0
    # An OpenSSL store holding both CRLs uses the one with the latest lastUpdate (citygw/pki.py).
    new_crl = x509.load_pem_x509_crl((ca.root / "crl.pem").read_bytes())
    assert new_crl.last_update_utc > old_crl.last_update_utc
    assert new_crl.get_revoked_certificate_by_serial_number(revoked.serial) is not None
    # By serial, as after a rotation: the new certificate of the same name stays valid.
    first_south = south.read_bytes()
    rotated, _ = ca.issue("agent", "depot-south-1")
    assert rotated == south, "the rotation replaces the name's files"
    [old_south] = [c for c in ca.issued() if c.path.read_bytes() == first_south]
    ca.revoke(old_south.serial_hex)
    assert verify(ca.root, rotated).returncode == 0
    states = {(c.name, c.revoked) for c in ca.issued()}
    assert states == {("depot-north-1", True), ("depot-south-1", True), ("depot-south-1", False)}


def test_an_expired_certificate_fails_verification(ca: Pki) -> None:
    cert, _ = ca.issue("agent", "depot-north-1", days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    done = verify(ca.root, cert)
    assert "certificate has expired" in done.stdout + done.stderr


def test_the_cli_issues_lists_and_revokes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(tmp_path / "pki")
    assert main(["pki", "--dir", folder, "init", "--name", "Lviv CityGW CA"]) == 0
    assert main(["pki", "--dir", folder, "issue", "agent", "depot-north-1", "--days", "30"]) == 0
    capsys.readouterr()
    assert main(["pki", "--dir", folder, "list"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    serial, name, expiry, state = line.split("\t")
    assert (name, state) == ("depot-north-1", "valid")
    assert dt.datetime.fromisoformat(expiry) - dt.datetime.now(dt.UTC) > dt.timedelta(days=29)
    assert main(["pki", "--dir", folder, "revoke", serial]) == 0
    assert f"revoked {serial} depot-north-1" in capsys.readouterr().out
    Pki(tmp_path / "pki").issue(
        "agent", "depot-south-1", days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    )
    assert main(["pki", "--dir", folder, "list"]) == 0
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(name, state) for _, name, _, state in listed] == [
        ("depot-south-1", "expired"),
        ("depot-north-1", "revoked"),
    ]
    assert verify(tmp_path / "pki", tmp_path / "pki" / "depot-north-1.crt").returncode != 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["issue", "agent", "Depot North"], "'Depot North' is no agent id"),
        (["issue", "collector", "collector-1"], "needs a dot (svc.collector-1)"),
        (["issue", "agent", "depot-north-1", "--days", "0"], "valid for a day at least"),
        (["issue", "agent", "depot-north-1", "--days", "4000"], "would outlive the CA"),
        (["server", "bad_host!"], "neither a host name nor an IP address"),
        (["revoke", "depot-south-9"], "no certificate has the name or serial 'depot-south-9'"),
        (["init"], "ca.key exists"),
    ],
)
def test_bad_requests_exit_2_with_one_line_saying_why(
    ca: Pki, args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in ca.root.rglob("*"))
    assert main(["pki", "--dir", str(ca.root), *args]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in ca.root.rglob("*")) == before, "a refused command wrote files"


def test_without_a_ca_the_error_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pki", "--dir", str(tmp_path / "none"), "issue", "agent", "depot-north-1"]) == 2
    assert "no CA here; fix: citygw pki --dir" in capsys.readouterr().err
