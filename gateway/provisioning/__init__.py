"""Fleet provisioning: provisioning templates (control plane) and the device provisioning MQTT API."""
