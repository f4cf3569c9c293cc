"""systemd's notify protocol without a dependency: READY=1 at start, WATCHDOG=1 while alive.

One datagram to the unix socket in ``$NOTIFY_SOCKET`` (an abstract one when it starts with
``@``). Outside systemd the variable is unset and every call does nothing.
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


def watchdog_interval() -> float | None:
    """Half of ``WatchdogSec`` (systemd passes it as ``$WATCHDOG_USEC``), None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def keep_watchdog_fed() -> None:
    """Tell systemd we are alive every half watchdog period, for as long as the event loop turns.

    A blocked event loop (a hung agent) stops the pings and systemd restarts the service.
    """
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
