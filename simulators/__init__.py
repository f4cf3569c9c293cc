"""Simulated worlds that drive the product in the demo, the benchmarks and the tests, never in production.

The product rooms (api, collector, edge, firmware_bridge, dashboards) never import this package;
citygw's demo, bench/ and tests/ do (tests/test_rooms.py). Device simulators that speak a wire
protocol stay in ``firmware_bridge.simulators``, next to the protocol code they mirror.
"""
