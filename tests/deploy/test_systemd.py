"""deploy/systemd: the units pass systemd-analyze verify and score as well hardened offline."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).parents[2] / "deploy" / "systemd"
CITYGW = Path(sys.executable).parent / "citygw"
# systemd-analyze security: 0 is fully locked down, 10 is "UNSAFE"; 2 is still "OK".
MAX_EXPOSURE = 2.0
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")


def installed(unit: Path, folder: Path) -> Path:
    """The unit as it would be installed, the program pointing at this checkout's citygw."""
    name = unit.name.replace("@.service", "@collector-1.service")
    copy = folder / name
    copy.write_text(unit.read_text().replace("/opt/citygw/.venv/bin/citygw", str(CITYGW)))
    return copy


@needs_systemd
@pytest.mark.parametrize("unit", sorted(UNITS.glob("*.service")), ids=lambda p: p.name)
def test_unit_verifies_and_is_hardened(unit: Path, tmp_path: Path) -> None:
    copy = installed(unit, tmp_path)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == "", verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert match, security.stdout[-500:] + security.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, security.stdout


def test_the_collector_keeps_its_client_id_and_restarts() -> None:
    unit = (UNITS / "citygw-collector@.service").read_text()
    assert "--client-id %i" in unit  # collector/README.md: same client id after a crash
    # The broker makes the user name the client id: one broker user (URL) per instance.
    assert "\nEnvironmentFile=/etc/citygw/collector-%i.env\n" in unit
    assert "\nRestart=always\n" in unit


def test_the_api_registry_is_in_the_state_directory_docs_back_up() -> None:
    """Without CITYGW_REGISTRY_URL the default relative path lands in /var/lib/citygw/var/."""
    from sqlalchemy.engine import make_url

    unit = (UNITS / "citygw-api.service").read_text()
    (url,) = re.findall(r"^Environment=CITYGW_REGISTRY_URL=(\S+)$", unit, re.MULTILINE)
    path = make_url(url).database
    assert path is not None
    assert path.startswith("/"), "a relative path depends on WorkingDirectory"
    (state,) = re.findall(r"^StateDirectory=(\S+)$", unit, re.MULTILINE)
    assert path.startswith(f"/var/lib/{state}/"), "the only place the unit may write (ProtectSystem=strict)"
    deploy_md = (UNITS.parents[1] / "docs" / "deploy.md").read_text()
    assert f'sqlite3 {path} ".backup' in deploy_md, "docs/deploy.md backs up another file"


@pytest.mark.parametrize("name", ["citygw-collector@.service", "citygw-api.service"])
def test_a_settings_error_is_not_restarted_for_ever_but_an_unreachable_server_is(name: str) -> None:
    """citygw exits 2 for wrong settings (no restart helps) and 75 for a server not reachable yet."""
    unit = (UNITS / name).read_text()
    assert "\nRestart=always\n" in unit
    assert "\nRestartPreventExitStatus=2\n" in unit
