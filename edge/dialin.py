"""A ``dialin`` line of the config as a listener and its modems, each with the devices behind it.

With a registration, a modem is named by its registration id and carries every device whose
``modem`` names it; without one, each device is its own modem, known by its unit id (the
listener probes the first read its profile plans).
"""

from __future__ import annotations

from collections.abc import Mapping

from citygw.contract.agent_config import Device, DialinLine, modem_id
from firmware_bridge.dialin import DialinListener, UnitProbe, modem_name
from firmware_bridge.planner import plan_reads
from firmware_bridge.profile import Profile


def dialin_listener(
    line: DialinLine, devices: list[Device], profiles: Mapping[str, Profile]
) -> tuple[DialinListener, dict[str, list[Device]]]:
    """The listener of ``line`` and, by modem name, the devices behind each modem."""
    host, port = line.address
    heartbeat = line.heartbeat.data if line.heartbeat is not None else None
    behind: dict[str, list[Device]] = {}
    if line.registration is not None:
        packets: dict[bytes, str] = {}
        for device in devices:
            assert device.modem is not None  # checked with the config
            # Spelt differently ("00:1A:2B", "001a2b"), the same bytes are the same modem.
            name = packets.setdefault(modem_id(line.registration, device.modem), device.modem)
            behind.setdefault(name, []).append(device)
        listener = DialinListener(
            host,
            port,
            framing=line.framing,
            packets=packets,
            heartbeat=heartbeat,
            identify_timeout=line.registration.timeout,
        )
        return listener, behind
    probes = {}
    for device in devices:
        assert device.unit is not None
        name = modem_name(device.unit)
        probes[name] = UnitProbe(device.unit, plan_reads(profiles[device.id], ("fast", "slow"))[0])
        behind[name] = [device]
    listener = DialinListener(
        host, port, framing=line.framing, probes=probes, heartbeat=heartbeat, probe_timeout=line.timeout
    )
    return listener, behind
