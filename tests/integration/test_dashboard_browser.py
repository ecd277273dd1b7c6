"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): a gateway, a small simulated fleet, a
rule into an SQS queue, and every page checked against what the fleet does. Screenshots of failures land in
test-artifacts/."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, GatewayProcess, allow_all_policy
from mqtt_helpers import Device
from prometheus_client.parser import text_string_to_metric_families
from test_api_iot import client
from test_rules import rule

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
ROLE = "arn:aws:iam::123456789012:role/r"
DEVICES = 3
FLEET = """
fleet: {fleet}
seed: 3
device_types:
  - name: sensor
    count: {count}
    thing_name: "{{fleet}}-dev-{{i}}"
    interval: 500ms
    qos: 1
    payload:
      device: "{{thing_name}}"
      seq: "{{seq}}"
      temperature:
        profile: sine
        mean: 20
        amplitude: 5
        period: 30
        decimals: 1
    shadow:
      initial:
        mode: auto
      apply_delta: true
      delta_delay: 0.05
"""


class Stack:
    def __init__(self, gw: GatewayProcess, fleet: str, rule_name: str, queue: str) -> None:
        self.gw = gw
        self.fleet = fleet
        self.rule = rule_name
        self.queue = queue

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gw.ports['api']}/"

    def thing(self, i: int) -> str:
        return f"{self.fleet}-dev-{i}"


@pytest.fixture(scope="module")
def stack(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("ui-fleet")
    fleet = f"ui{int(time.time() * 1000) % 10_000_000}"
    queue = f"{fleet}-alerts"
    url = client(gateway, "sqs").create_queue(QueueName=queue)["QueueUrl"]
    rule_name = f"{fleet}_alerts"
    client(gateway, "iot").create_topic_rule(
        ruleName=rule_name,
        topicRulePayload=rule(f"SELECT * FROM 'dt/{fleet}/#'", {"sqs": {"roleArn": ROLE, "queueUrl": url}}),
    )
    spec = tmp / "fleet.yaml"
    spec.write_text(FLEET.format(fleet=fleet, count=DEVICES))
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gateway", "fleet", "run", str(spec), "--json", "--duration", "240",
            "--certs-dir", str(tmp / "certs"),
            "--target", f"mqtts://127.0.0.1:{gateway.ports['mqtts']}",
            "--endpoint", f"http://127.0.0.1:{gateway.ports['api']}",
            "--ca", str(gateway.ca_file),
        ],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield Stack(gateway, fleet, rule_name, queue)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def number(page: Page, selector: str) -> int:
    return int((page.locator(selector).first.text_content() or "0").strip() or 0)


def wait_until_it_rises(page: Page, selector: str) -> None:
    """The number shown at `selector` goes up (live, without reloading the page) within 10 s."""
    expect(page.locator(selector)).to_be_visible(timeout=10_000)
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel)?.textContent || 0) > n",
        arg=[selector, number(page, selector)],
        timeout=10_000,
    )


def test_fleet_page_shows_every_device_connected_and_filters(stack: Stack, page: Page) -> None:
    page.goto(stack.url + "#/fleet")
    for i in range(DEVICES):
        row = page.locator(f'#fleet-table tbody tr[data-thing="{stack.thing(i)}"]')
        expect(row).to_have_attribute("data-state", "connected", timeout=30_000)
        expect(row.locator(f'a[href="#/thing/{stack.thing(i)}"]')).to_be_visible()
    assert number(page, "#count-connected") >= DEVICES
    page.fill("#fleet-filter", stack.thing(1))
    expect(page.locator("#fleet-table tbody tr:visible")).to_have_count(1)
    expect(page.locator("#rate-chart")).to_be_visible()


def test_fleet_rows_follow_connects_and_disconnects_live(stack: Stack, page: Page) -> None:
    """The page is not reloaded: the gateway's presence events flip the row and the counts."""
    thing = f"{stack.fleet}-late"
    creds = stack.gw.provision(thing, allow_all_policy())
    page.goto(stack.url + "#/fleet")
    row = page.locator(f'#fleet-table tbody tr[data-thing="{thing}"]')
    expect(row).to_have_attribute("data-state", "disconnected", timeout=10_000)
    connected_before = number(page, "#count-connected")
    device = Device(stack.gw.ports["mqtts"], thing, creds.cert, creds.key, creds.ca).connect()
    try:
        expect(row).to_have_attribute("data-state", "connected", timeout=10_000)
        expect(page.locator("#count-connected")).to_have_text(str(connected_before + 1))
    finally:
        device.close()
    expect(row).to_have_attribute("data-state", "disconnected", timeout=10_000)


def test_desired_state_set_on_the_thing_page_is_applied_by_the_device(stack: Stack, page: Page) -> None:
    thing = stack.thing(0)
    page.goto(stack.url + f"#/thing/{thing}")
    classic = page.locator('section[data-shadow="classic"]')
    expect(classic.locator('pre[data-part="reported"]')).to_contain_text("auto", timeout=30_000)
    wanted = f"eco-{int(time.time())}"
    page.select_option("#desired-shadow", "")
    page.fill("#desired-input", json.dumps({"mode": wanted}))
    page.click("#desired-submit")
    expect(page.locator("#desired-result")).to_contain_text("version", timeout=10_000)
    # The simulated device gets the delta, applies it and reports: the page shows it live.
    expect(classic.locator('pre[data-part="reported"]')).to_contain_text(wanted, timeout=15_000)
    expect(classic.locator('pre[data-part="desired"]')).to_contain_text(wanted)
    expect(classic.locator('pre[data-part="delta"]')).not_to_contain_text(wanted)
    expect(page.locator("#permissions tbody tr").first).to_be_visible()

    page.fill("#desired-input", "{not json")
    page.click("#desired-submit")
    expect(page.locator("#desired-result")).to_contain_text("JSON")


def test_rule_counters_rise_on_the_rules_page(stack: Stack, page: Page) -> None:
    page.goto(stack.url + "#/rules")
    wait_until_it_rises(page, f'tr[data-rule="{stack.rule}"] [data-counter="matched"]')
    assert number(page, f'tr[data-rule="{stack.rule}"] [data-counter="errors"]') == 0


def test_live_tail_shows_messages_for_a_typed_filter(stack: Stack, page: Page) -> None:
    page.goto(stack.url + "#/tail")
    page.fill("#tail-filter", f"dt/{stack.fleet}/sensor/{stack.thing(2)}/#")
    page.press("#tail-filter", "Enter")
    items = page.locator("#tail-list li")
    expect(items.first).to_be_visible(timeout=10_000)
    page.wait_for_function("() => document.querySelectorAll('#tail-list li').length >= 3", timeout=10_000)
    topics = {items.nth(i).get_attribute("data-topic") for i in range(3)}
    assert topics == {f"dt/{stack.fleet}/sensor/{stack.thing(2)}/telemetry"}
    expect(items.first.locator("pre.payload")).to_contain_text("temperature")


def test_live_tail_shows_mqtt5_properties(stack: Stack, page: Page) -> None:
    from test_api_iot import client

    page.goto(stack.url + "#/tail")
    page.fill("#tail-filter", f"v5tail/{stack.fleet}/#")
    page.press("#tail-filter", "Enter")
    page.wait_for_timeout(500)  # the filter's subscription is in place
    client(stack.gw, "iot-data").publish(
        topic=f"v5tail/{stack.fleet}/a", qos=1, payload=b'{"v": 1}', userProperties='[{"site": "lab"}]',
        contentType="application/json",
    )  # fmt: skip
    item = page.locator("#tail-list li").first
    expect(item).to_be_visible(timeout=10_000)
    expect(item.locator(".msg-props")).to_contain_text("site = lab")
    expect(item.locator(".msg-props")).to_contain_text("application/json")


def test_queue_page_shows_messages_arriving(stack: Stack, page: Page) -> None:
    page.goto(stack.url + "#/sinks")
    wait_until_it_rises(page, f'[data-queue="{stack.queue}"] [data-count="visible"]')


def test_theme_toggle_and_keyboard_navigation(stack: Stack, page: Page) -> None:
    page.goto(stack.url + "#/fleet")
    before = page.evaluate("document.documentElement.dataset.theme || ''")
    page.click("#theme-toggle")
    after = page.evaluate("document.documentElement.dataset.theme")
    assert after in ("light", "dark") and after != before
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == after
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON")
    page.locator('a[data-nav="rules"]').focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(stack.url + "#/rules")


def test_metrics_scrape_counts_the_fleets_messages(stack: Stack) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.gw.ports['api']}/metrics", timeout=5) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    matched = {s.labels.get("rule"): s.value for s in families["edgesim_rule_matched"].samples}
    assert matched[stack.rule] > 0
    doors = {(s.labels["door"], s.labels["qos"]): s.value for s in families["edgesim_messages_in"].samples}
    assert doors[("mqtts", "1")] > 0


def test_no_endpoint_returns_a_private_key(stack: Stack) -> None:
    api = f"http://127.0.0.1:{stack.gw.ports['api']}"
    for path in ("/edgesim/dash/fleet", f"/edgesim/dash/thing/{stack.thing(0)}", "/edgesim/dash/sinks", "/metrics"):
        with urllib.request.urlopen(api + path, timeout=5) as response:
            assert b"PRIVATE KEY" not in response.read()
