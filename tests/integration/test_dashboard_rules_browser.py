"""The dashboard in Chromium: CloudWatch on the sinks page, and the rules page's test box explaining a false WHERE."""

from __future__ import annotations

import pytest
from conftest import GatewayProcess
from test_api_iot import client
from test_rules import rule

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Page, expect
from test_dashboard_browser import browser, page  # noqa: F401 - the shared Chromium fixtures, asked for by name

ROLE = "arn:aws:iam::123456789012:role/r"


def test_cloudwatch_metrics_and_where_explanations_on_the_dashboard(
    gateway: GatewayProcess, request: pytest.FixtureRequest, unique: str
) -> None:
    tab: Page = request.getfixturevalue("page")
    client(gateway, "iot").create_topic_rule(
        ruleName=f"dash_cw_{unique}",
        topicRulePayload=rule(
            f"SELECT * FROM 'dcw/{unique}'",
            {
                "cloudwatchMetric": {
                    "roleArn": ROLE,
                    "metricNamespace": f"dash{unique}",
                    "metricName": "rpm",
                    "metricValue": "${rpm}",
                    "metricUnit": "Count",
                }
            },
        ),
    )
    client(gateway, "iot-data").publish(topic=f"dcw/{unique}", qos=1, payload=b'{"rpm": 1200}')
    url = f"http://127.0.0.1:{gateway.ports['api']}/"
    tab.goto(url + "#/sinks")
    row = tab.locator(f'#cloudwatch-table tr[data-metric="dash{unique}/rpm"]')
    expect(row).to_contain_text("1200", timeout=10_000)
    expect(row.locator('[data-count="datapoints"]')).to_have_text("1")

    tab.goto(url + "#/rules")
    tab.fill("#rule-test-sql", "SELECT * FROM 'a/b' WHERE temperature > 30")
    tab.fill("#rule-test-topic", "a/b")
    tab.fill("#rule-test-payload", '{"humidity": 3}')
    tab.click("#rule-test-run")
    expect(tab.locator("#rule-test-result")).to_contain_text(
        "`temperature` is Undefined: the payload has no key 'temperature'", timeout=10_000
    )
