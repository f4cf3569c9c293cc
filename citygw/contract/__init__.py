"""What the rooms share: the wire, the agent config, and the definitions more than one room must agree on.

``wire`` (MQTT topics and payloads), ``errors``, ``agent_config`` (the agent's config schema and its
cross-checks), ``bus_time`` (an RS-485 line's wire time), ``agent_config_check`` (runs them all: the
agent on its file and on pushed configs, the API before it pushes one), ``tls`` (how every MQTT
client speaks TLS), ``release`` (signed release bundles), ``air_quality`` and ``water_quality`` (the
index and the limits), ``settings`` (how every service's settings model layers file, environment and
flags). These modules import no other room but firmware_bridge, whose device profiles
a config names (tests/test_rooms.py).
"""
