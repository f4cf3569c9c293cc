"""Simulated field devices that behave like the real firmware, for tests and demos."""

from firmware_bridge.simulators.dali import DaliGatewaySimulator
from firmware_bridge.simulators.gps import BusGpsSimulator
from firmware_bridge.simulators.mbus import MbusMeterSimulator, MbusResponder, serve_mbus_pty
from firmware_bridge.simulators.modbus_device import ModbusDeviceSimulator
from firmware_bridge.simulators.replay import CaptureReplay
from firmware_bridge.simulators.serve import (
    RtuResponder,
    TcpConnections,
    TcpEndpoint,
    WireFrame,
    serve_serial_pty,
    serve_tcp,
)

__all__ = [
    "BusGpsSimulator",
    "CaptureReplay",
    "DaliGatewaySimulator",
    "MbusMeterSimulator",
    "MbusResponder",
    "ModbusDeviceSimulator",
    "RtuResponder",
    "TcpConnections",
    "TcpEndpoint",
    "WireFrame",
    "serve_mbus_pty",
    "serve_serial_pty",
    "serve_tcp",
]
