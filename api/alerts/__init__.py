"""Alerts: rules evaluated on a timer in the app, kept in the registry, delivered to a webhook and MQTT."""
