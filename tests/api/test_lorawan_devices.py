"""LoRaWAN devices in the API: a command to one is refused as no lighting controller, not a 500."""

from __future__ import annotations

from api.routes.commands import _measurement


def test_the_measurement_of_any_profile_kind() -> None:
    assert _measurement("nwave_nps405") == "parking"  # refused as "not a lighting controller"
    assert _measurement("gps_nmea") == "vehicle_position"
    assert _measurement("no_such_profile") is None
