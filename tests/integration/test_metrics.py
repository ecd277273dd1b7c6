"""GET /metrics: the gateway's counters in the Prometheus text format, parsed by prometheus_client's own parser."""

from __future__ import annotations

import urllib.request

from conftest import GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from prometheus_client.parser import text_string_to_metric_families
from test_api_iot import client
from test_rules import rule

ROLE = "arn:aws:iam::123456789012:role/r"


def scrape(gw: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.ports['api']}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_follow_connections_messages_rules_and_queues(gateway: GatewayProcess, unique: str) -> None:
    sqs = client(gateway, "sqs")
    url = sqs.create_queue(QueueName=f"m-{unique}")["QueueUrl"]
    client(gateway, "iot").create_topic_rule(
        ruleName=f"m_{unique}",
        topicRulePayload=rule(f"SELECT * FROM 'm/{unique}'", {"sqs": {"roleArn": ROLE, "queueUrl": url}}),
    )
    before = scrape(gateway)
    creds = gateway.provision(f"m-{unique}", allow_all_policy())
    device = Device(gateway.ports["mqtts"], creds.thing, creds.cert, creds.key, creds.ca).connect()
    try:
        for i in range(3):
            assert device.publish(f"m/{unique}", f'{{"i": {i}}}', qos=1)
        after = scrape(gateway)
        assert after[("edgesim_mqtt_connections", ())] >= 1
        assert after[("edgesim_mqtt_connects_total", ())] > before[("edgesim_mqtt_connects_total", ())]
        assert (
            after[("edgesim_mqtt_messages_total", (("way", "in"),))]
            >= before[("edgesim_mqtt_messages_total", (("way", "in"),))] + 3
        )
        assert after[("edgesim_rule_matched_total", (("rule", f"m_{unique}"),))] == 3
        assert after[("edgesim_rule_action_successes_total", (("rule", f"m_{unique}"),))] == 3
        assert after[("edgesim_sqs_messages", (("queue", f"m-{unique}"), ("state", "visible")))] == 3
        assert after[("edgesim_action_runs_total", (("outcome", "success"), ("type", "sqs")))] >= 3
        assert ("edgesim_event_loop_lag_seconds", ()) in after
    finally:
        device.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.ports['api']}/metrics", timeout=5) as response:
        assert b"PRIVATE KEY" not in response.read()
