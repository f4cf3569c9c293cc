"""An agent loads a protocol's library only when its config has a line of that protocol (a Pi's memory)."""

from __future__ import annotations

import subprocess
import sys


def test_an_agent_without_opc_ua_lines_does_not_load_asyncua() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, edge.agent; print('asyncua' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert loaded == "False"
