"""The fleet simulator: fake devices that talk to the gateway over MQTT and HTTP only."""
