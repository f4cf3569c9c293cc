"""Why a TCP endpoint cannot be reached, checked as an engineer would: the lines that talk TCP (Modbus,
OPC UA) say it when their client library could only say that it failed."""

from __future__ import annotations

import asyncio
import socket


async def tcp_problem(host: str, port: int, wait: float, *, peer: str) -> str | None:
    """Why no TCP connection to ``host``:``port`` is made within ``wait`` seconds; None when one is.

    ``peer`` names what should listen there (the device, the server).
    """
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait)
    except ConnectionRefusedError:
        return f"connection refused: nothing listens on {host}:{port} (wrong port, or the {peer} is off)"
    except TimeoutError:
        return f"no answer from {host}:{port} within {wait:g} s (host down, wrong address or a firewall)"
    except socket.gaierror as exc:
        return f"{host} is no known host name ({exc.strerror})"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    writer.close()
    return None
