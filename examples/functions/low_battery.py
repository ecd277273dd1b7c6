"""Lambda for the `low_battery` rule: ask a device with a low battery to save power, through its shadow.

The rule sends `{"device": ..., "battery": ...}`; this sets `desired.mode = "power_save"` on the device's classic
shadow. Devices that answer deltas (the demo's thermostats) report the new mode back, closing the loop. boto3 here
reaches the gateway that runs the function: edgesim sets AWS_ENDPOINT_URL for its functions.
"""

import json

import boto3

iot_data = boto3.client("iot-data")


def handler(event, context):
    device = event["device"]
    iot_data.update_thing_shadow(
        thingName=device,
        payload=json.dumps({"state": {"desired": {"mode": "power_save"}}}).encode(),
    )
    print(f"{device}: battery {event.get('battery')}%, asked for power_save")
    return {"device": device, "mode": "power_save"}
