"""A local function: turn the fan on through its local shadow when a thermostat reads hot, off when it has cooled.

Runs on the edge core whether or not the cloud is reachable; the shadow change syncs to the cloud when it is.
"""

import os

FAN = os.environ.get("FAN_THING", "edge-fan-0")
HOT = float(os.environ.get("HOT_C", "30"))
COOL = float(os.environ.get("COOL_C", "25"))


def handle(event, context):
    temperature = event.get("temperature") if isinstance(event, dict) else None
    if not isinstance(temperature, (int, float)):
        return {"ignored": context.topic}
    want = "on" if temperature > HOT else "off" if temperature < COOL else None
    if want is None:
        return {"fan": "unchanged"}
    try:
        current = context.get_thing_shadow(FAN)["state"].get("desired", {}).get("fan")
    except Exception as exc:  # no shadow yet: ResourceNotFoundException
        if getattr(exc, "code", None) != "ResourceNotFoundException":
            raise
        current = None
    if current != want:
        context.update_thing_shadow(FAN, {"state": {"desired": {"fan": want}}})
        context.publish_to_iot_core(f"edge/{FAN}/fan", {"fan": want, "because": temperature, "from": context.topic})
    return {"fan": want}
