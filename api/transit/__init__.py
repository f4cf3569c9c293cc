"""GTFS-realtime feeds built from stored telemetry."""
