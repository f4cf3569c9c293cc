"""The demo stops however early it is asked to: a part that swallows a cancellation cannot hold it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.services import free_port


def test_a_demo_stopped_at_once_ends(tmp_path: Path) -> None:
    demo = [
        sys.executable,
        "-m",
        "citygw.cli",
        "demo",
        "--workdir",
        str(tmp_path),
        "--port",
        str(free_port()),
    ]
    done = subprocess.run([*demo, "--duration", "0.05"], capture_output=True, text=True, timeout=45)
    # Before: the RTU line's pymodbus connect() swallowed the cancellation and the demo never ended.
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("CityGW demo stopped.\n"), done.stderr
