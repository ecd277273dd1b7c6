"""`edgesim edge status --json` speaks camelCase, as the gateway's API does; user-chosen names stay as written."""

from __future__ import annotations

from gateway.cli_edge import camel_keys


def test_edge_status_json_is_camel_case_except_user_names() -> None:
    status = {
        "shadow_sync": {"in_sync": True, "last_sync_ms": 1, "to_cloud": 2},
        "spool": {"max_bytes": 10, "in_flight": 0},
        "components": {"my_component": {"timeout_s": 3, "state": "RUNNING"}},
        "bridge": {"forwarded": {"Telemetry_To_Cloud": 4}},
        "fleet_status": {"overallDeviceStatus": "HEALTHY", "interval_s": 10},
    }
    assert camel_keys(status) == {
        "shadowSync": {"inSync": True, "lastSyncMs": 1, "toCloud": 2},
        "spool": {"maxBytes": 10, "inFlight": 0},
        "components": {"my_component": {"timeoutSeconds": 3, "state": "RUNNING"}},
        "bridge": {"forwarded": {"Telemetry_To_Cloud": 4}},
        "fleetStatus": {"overallDeviceStatus": "HEALTHY", "intervalSeconds": 10},
    }
