"""An OTA campaign end to end: `edgesim fleet run` with job agents (MQTT 3.1.1 cameras that download, reboot and
succeed; MQTT 5 plugs that fail), a job created with boto3 whose document's presigned-URL placeholder points at
edgesim's S3, every execution ending as configured, and the campaign on the dashboard's Jobs page in Chromium
(executions by state, their curves, the rollout limit, an abort)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import GatewayProcess
from playwright.sync_api import Page, expect
from test_api_iot import client
from test_dashboard_browser import browser, page  # noqa: F401 - fixtures

ROLE = "arn:aws:iam::123456789012:role/ota"
CAMS, PLUGS = 4, 3
FLEET = """
fleet: {fleet}
seed: 4
device_types:
  - name: cam
    count: {cams}
    thing_name: "{{fleet}}-cam-{{i}}"
    interval: 30s
    shadow: {{initial: {{firmware_version: "1.0.0"}}, apply_delta: false}}
    jobs:
      success_rate: 1
      duration: [0.2, 0.6]
      progress_steps: 1
      reboot: {{downtime: 0.3}}
  - name: plug
    count: {plugs}
    thing_name: "{{fleet}}-plug-{{i}}"
    interval: 30s
    protocol: mqtt5
    jobs: {{success_rate: 0, duration: 0.2, progress_steps: 0}}
"""


@dataclass
class Campaign:
    gw: GatewayProcess
    fleet: str
    job: str
    cams: list[str]
    plugs: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gw.ports['api']}/"


def executions(iot: Any, job: str) -> dict[str, str]:
    pages = iot.get_paginator("list_job_executions_for_job").paginate(jobId=job)
    return {
        s["thingArn"].rpartition("/")[2]: s["jobExecutionSummary"]["status"]
        for p in pages
        for s in p["executionSummaries"]
    }


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def campaign(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    tmp = tmp_path_factory.mktemp("jobs-fleet")
    fleet = f"ota{int(time.time() * 1000) % 10_000_000}"
    s3 = client(gateway, "s3")
    s3.create_bucket(Bucket=fleet)
    s3.put_object(Bucket=fleet, Key="cam-2.0.0.bin", Body=b"\x01" * 20_000)
    spec = tmp / "fleet.yaml"
    spec.write_text(FLEET.format(fleet=fleet, cams=CAMS, plugs=PLUGS))
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gateway", "fleet", "run", str(spec), "--json", "--duration", "180",
            "--certs-dir", str(tmp / "certs"),
            "--target", f"mqtts://127.0.0.1:{gateway.ports['mqtts']}",
            "--endpoint", f"http://127.0.0.1:{gateway.ports['api']}",
            "--ca", str(gateway.ca_file),
        ],
        cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        iot = client(gateway, "iot")
        cams = [f"{fleet}-cam-{i}" for i in range(CAMS)]
        plugs = [f"{fleet}-plug-{i}" for i in range(PLUGS)]
        data = client(gateway, "iot-data")

        def reported() -> bool:  # provisioned, connected, and the initial shadow report is in
            try:
                data.get_thing_shadow(thingName=cams[-1])
                return all(iot.describe_thing(thingName=t) for t in plugs)
            except (data.exceptions.ResourceNotFoundException, iot.exceptions.ResourceNotFoundException):
                return False

        wait_until(reported, 60, "the fleet to come up")
        arns = [iot.describe_thing(thingName=t)["thingArn"] for t in cams + plugs]
        job = f"{fleet}-fw"
        document = {
            "version": "2.0.0",
            "url": f"${{aws:iot:s3-presigned-url:https://s3.amazonaws.com/{fleet}/cam-2.0.0.bin}}",
        }
        iot.create_job(
            jobId=job,
            targets=arns,
            document=json.dumps(document),
            targetSelection="SNAPSHOT",
            presignedUrlConfig={"roleArn": ROLE, "expiresInSec": 600},
            jobExecutionsRolloutConfig={"maximumPerMinute": 100},
        )
        terminal = {"SUCCEEDED", "FAILED"}
        wait_until(lambda: set(executions(iot, job).values()) <= terminal and len(executions(iot, job)) == CAMS + PLUGS,
                   60, "every execution to end")  # fmt: skip
        yield Campaign(gateway, fleet, job, cams, plugs)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]


def test_every_execution_ends_as_the_fleet_file_says(campaign: Campaign) -> None:
    iot = client(campaign.gw, "iot")
    states = executions(iot, campaign.job)
    assert states == {**dict.fromkeys(campaign.cams, "SUCCEEDED"), **dict.fromkeys(campaign.plugs, "FAILED")}
    cam = iot.describe_job_execution(jobId=campaign.job, thingName=campaign.cams[0])["execution"]
    # The file's size from the download (an earlier update) and the final update's details.
    expected = {"bytes": "20000", "progress": "done", "firmware_version": "2.0.0", "rebooted": "true"}
    assert cam["statusDetails"]["detailsMap"].items() >= expected.items()
    plug = iot.describe_job_execution(jobId=campaign.job, thingName=campaign.plugs[0])["execution"]
    assert plug["statusDetails"]["detailsMap"]["reason"] == "simulated failure"
    data = client(campaign.gw, "iot-data")
    for cam_name in campaign.cams:
        shadow = json.loads(data.get_thing_shadow(thingName=cam_name)["payload"].read())
        assert shadow["state"]["reported"]["firmware_version"] == "2.0.0"
    details = iot.describe_job(jobId=campaign.job)["job"]["jobProcessDetails"]
    assert (details["numberOfSucceededThings"], details["numberOfFailedThings"]) == (CAMS, PLUGS)


def test_the_jobs_page_draws_the_campaign(campaign: Campaign, page: Page) -> None:  # noqa: F811
    page.goto(campaign.url + "#/jobs")
    row = page.locator(f'tr[data-job="{campaign.job}"]')
    expect(row.locator('td[data-state="SUCCEEDED"]')).to_have_text(str(CAMS), timeout=10_000)
    expect(row.locator('td[data-state="FAILED"]')).to_have_text(str(PLUGS))
    row.locator("a").click()
    expect(page.locator('li[data-state="SUCCEEDED"] strong')).to_have_text(str(CAMS), timeout=10_000)
    expect(page.locator('li[data-state="FAILED"] strong')).to_have_text(str(PLUGS))
    expect(page.locator('li[data-state="QUEUED"] strong')).to_have_text("0")
    for state in ("QUEUED", "SUCCEEDED", "FAILED"):
        expect(page.locator(f'polyline[data-state="{state}"]')).to_have_count(1)
    expect(page.locator('[data-part="rollout-limit"]')).to_have_text("100 per minute")
    expect(page.locator('[data-part="rollout-total"]')).to_contain_text(f"{CAMS + PLUGS} over")
    expect(page.locator(".rollout-limit")).to_have_count(1)
    expect(page.locator('[data-part="aborted"]')).to_have_count(0)
    expect(page.locator(f'a[href="#/thing/{campaign.cams[0]}"]').first).to_be_visible()


def test_an_aborted_job_says_so(campaign: Campaign, page: Page) -> None:  # noqa: F811
    iot = client(campaign.gw, "iot")
    job = f"{campaign.fleet}-abort"
    iot.create_job(
        jobId=job,
        targets=[iot.describe_thing(thingName=t)["thingArn"] for t in campaign.plugs],
        document=json.dumps({"version": "3.0.0"}),
        abortConfig={
            "criteriaList": [
                {"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 50, "minNumberOfExecutedThings": 1}
            ]
        },
    )
    wait_until(lambda: iot.describe_job(jobId=job)["job"]["status"] == "CANCELED", 30, "the abort")
    page.goto(campaign.url + f"#/jobs/{job}")
    expect(page.locator('[data-part="aborted"]')).to_contain_text("aborted", timeout=10_000)
    expect(page.locator(".job-title .badge")).to_have_text("CANCELED")
    page.goto(campaign.url + "#/jobs/no-such-job")
    expect(page.locator(".load-error")).to_be_visible(timeout=10_000)
