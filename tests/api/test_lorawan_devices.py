"""LoRaWAN devices in the API: their units are the profile's, and they are no lighting controllers."""

from __future__ import annotations

from api.registry.catalogue import field_units
from api.routes.commands import _measurement


def test_a_lorawan_profiles_units_and_measurement() -> None:
    assert field_units("dingtek_df703")["distance"] == "mm"
    assert field_units("nwave_nps405")["battery_voltage"] == "V"
    assert field_units("gps_nmea") == {}  # as before: a GPS receiver's fields carry no units here
    assert _measurement("nwave_nps405") == "parking"  # refused as "not a lighting controller", not a 500
    assert _measurement("gps_nmea") == "vehicle_position"
    assert _measurement("no_such_profile") is None
