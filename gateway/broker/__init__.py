"""The MQTT broker: listeners, connections, authorization and routing."""
