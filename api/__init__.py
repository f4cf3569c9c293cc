"""CityGW HTTP API: GTFS-realtime feeds and telemetry queries over the store."""

from api.app import create_app
from api.settings import ApiSettings, SettingsError, load_settings

__all__ = ["ApiSettings", "SettingsError", "create_app", "load_settings"]
