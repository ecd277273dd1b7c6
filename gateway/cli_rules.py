"""`edgesim rules`: test rule definitions offline, check a folder of them, and manage a gateway's rules."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from gateway.cli_api import (
    DEFAULT_ENDPOINT,
    Endpoint,
    JsonOut,
    api,
    console,
    emit,
    err_console,
    get_json,
    strip_metadata,
)
from gateway.cli_errors import fail, os_error_line, read_bytes
from gateway.errors import EdgesimError

rules_app = typer.Typer(help="Topic rules: test offline, check, and manage on a gateway.", no_args_is_help=True)


def _payload_bytes(payload: str) -> bytes:
    return read_bytes(Path(payload[1:]), "payload file") if payload.startswith("@") else payload.encode()


def _read_rule(rule_file: Path) -> tuple[str, dict[str, Any]]:
    from gateway.rules.files import read_rule_file

    try:
        return read_rule_file(rule_file)
    except OSError as exc:
        fail(os_error_line(exc, rule_file, "rule file"))
    except EdgesimError as exc:
        fail(str(exc))


def evaluate_rule_file(
    rule_file: Path,
    topic: str,
    payload: bytes,
    client_id: str | None,
    principal: str | None,
    timestamp_ms: int,
    properties: dict[int, Any] | None = None,
) -> dict[str, Any]:
    """What the rule would do with this message: WHERE result, SQL output, each action rendered (nothing runs)."""
    from gateway.rules.files import read_rule_file
    from gateway.rules.model import parse_rule_payload
    from gateway.rules.tryout import evaluate_rule

    name, document = read_rule_file(rule_file)
    rule = parse_rule_payload(name, document)
    return evaluate_rule(rule, topic, payload, client_id, principal, timestamp_ms, properties=properties)


def _mqtt5_options(
    user_property: list[str] | None,
    content_type: str | None,
    response_topic: str | None,
    correlation_data: str | None,
    payload_format: str | None,
) -> dict[int, Any] | None:
    """The MQTT 5 properties given on the command line, as the message would carry them."""
    import base64
    import binascii

    from mqttwire.client_types import publish_properties

    pairs = []
    for item in user_property or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--user-property wants KEY=VALUE, got {item!r}")
        pairs.append((key, value))
    correlation = None
    if correlation_data is not None:
        try:
            correlation = base64.b64decode(correlation_data, validate=True)
        except binascii.Error:
            raise typer.BadParameter("--correlation-data wants base64") from None
    if payload_format not in (None, "UNSPECIFIED_BYTES", "UTF8_DATA"):
        raise typer.BadParameter("--payload-format takes UNSPECIFIED_BYTES or UTF8_DATA")
    props = publish_properties(
        user_properties=pairs,
        content_type=content_type,
        response_topic=response_topic,
        correlation_data=correlation,
        payload_format=None if payload_format is None else int(payload_format == "UTF8_DATA"),
    )
    return props or None


def fetch_view(endpoint: str, path: str) -> Any:
    """GET one of the gateway's /edgesim/ views; an unreachable gateway (or a missing API token) is one clear line
    and exit code 1."""
    return get_json(endpoint, f"/edgesim/{path}", timeout=5)


RUN_TIMEOUT_S = 15.0


def _run_on_gateway(
    rule_file: Path, topic: str, body: bytes, result: dict[str, Any], endpoint: str, props: dict[int, Any] | None
) -> dict[str, Any]:
    """Install the rule, publish the message, and wait for the gateway's outcome of each action."""
    from gateway.rules.files import read_rule_file

    name, document = read_rule_file(rule_file)
    with api("iot", endpoint) as iot:
        try:
            iot.replace_topic_rule(ruleName=name, topicRulePayload=document)
        except iot.exceptions.ResourceNotFoundException:
            iot.create_topic_rule(ruleName=name, topicRulePayload=document)
    before = fetch_view(endpoint, "rules/outcomes").get(name, {}).get("invocations", 0)
    with api("iot-data", endpoint) as data:
        data.publish(topic=topic, qos=1, payload=body, **_publish_headers(props))
    run: dict[str, Any] = {"published": True, "actions": [], "ok": True}
    if result.get("disabled"):
        run["note"] = "the rule is disabled (ruleDisabled), so no action ran"
        return run
    if not (result["topicMatches"] and result["whereMatched"] and result["actions"]):
        run["note"] = "the rule does not fire for this message, so no action ran"
        return run
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        outcome = fetch_view(endpoint, "rules/outcomes").get(name, {})
        if outcome.get("invocations", 0) > before:
            latest = outcome["recent"][-1]
            run["traceId"] = latest["traceId"]
            run["actions"] = latest["actions"]
            run["ok"] = all(a["ok"] for a in latest["actions"])
            return run
        time.sleep(0.1)
    run.update(ok=False, note=f"the gateway reported no outcome within {RUN_TIMEOUT_S:.0f} s")
    return run


def _print_test(result: dict[str, Any]) -> None:
    console.print(
        f"rule [bold]{escape(result['rule'])}[/bold] (SQL {result['sqlVersion']}), FROM {result['topicFilter']!r}"
    )
    for problem in result.get("actionProblems", []):
        console.print(
            f"[yellow]warning:[/yellow] {escape(problem)} (CreateTopicRule refuses this rule)", soft_wrap=True
        )
    if not result["topicMatches"]:
        console.print("topic matches: [yellow]no[/yellow]")
        for line in result["explanation"]:
            console.print(f"  {escape(line)}", soft_wrap=True)
        return
    console.print("topic matches: yes")
    if result.get("error"):
        console.print("[red]evaluation error[/red] (no action would run):", soft_wrap=True)
        console.print(result["error"], markup=False, soft_wrap=True)
        return
    console.print(f"WHERE matched: {'yes' if result['whereMatched'] else '[yellow]no[/yellow]'}")
    for line in result["explanation"]:
        console.print(f"  {escape(line)}", soft_wrap=True)
    if result["whereMatched"]:
        console.print("output:", json.dumps(result["output"], indent=2), markup=False)
        for action in result["actions"]:
            ((kind, fields),) = action.items()
            console.print(f"action {kind}: {json.dumps(fields)}", markup=False)
    run = result.get("run")
    if run is None:
        return
    console.print("on the gateway:")
    for outcome in run["actions"]:
        where = f"{outcome['action']} ({outcome['resource']})"
        if outcome["ok"]:
            console.print(f"  [green]ok[/green]     {escape(where)}", soft_wrap=True)
        else:
            console.print(f"  [red]failed[/red] {escape(where)}: {escape(outcome['error'])}", soft_wrap=True)
    if run.get("note"):
        console.print(f"  {escape(run['note'])}", soft_wrap=True)


@rules_app.command("test")
def rules_test(
    rule_file: Annotated[Path, typer.Argument(help="A rule file: *.json (topicRulePayload) or *.sql.")],
    topic: Annotated[str, typer.Option(help="The topic the message is published to.")],
    payload: Annotated[str, typer.Option(help="The message: JSON text, or @file for raw bytes.")],
    clientid: Annotated[str | None, typer.Option(help="clientid() of the publisher.")] = None,
    principal: Annotated[str | None, typer.Option(help="principal() of the publisher.")] = None,
    timestamp: Annotated[int | None, typer.Option(help="timestamp() in epoch ms (default: now).")] = None,
    user_property: Annotated[
        list[str] | None, typer.Option(help="MQTT 5 user property KEY=VALUE (repeatable): get_user_properties().")
    ] = None,
    content_type: Annotated[
        str | None, typer.Option(help="MQTT 5 content type: get_mqtt_property('content_type').")
    ] = None,
    response_topic: Annotated[str | None, typer.Option(help="MQTT 5 response topic.")] = None,
    correlation_data: Annotated[str | None, typer.Option(help="MQTT 5 correlation data, base64.")] = None,
    payload_format: Annotated[
        str | None, typer.Option(help="MQTT 5 payload format indicator: UNSPECIFIED_BYTES or UTF8_DATA.")
    ] = None,
    run: Annotated[
        bool,
        typer.Option(
            help="Also install the rule on a gateway, publish the message there and report each action's outcome "
            "(exit code 1 when one failed)."
        ),
    ] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """Evaluate a rule against one message, offline: does it see the topic, WHERE (and why not), output, actions."""
    _read_rule(rule_file)  # a missing or bad rule file is one clear line
    props = _mqtt5_options(user_property, content_type, response_topic, correlation_data, payload_format)
    try:
        body = _payload_bytes(payload)
        result = evaluate_rule_file(
            rule_file,
            topic,
            body,
            clientid,
            principal,
            timestamp if timestamp is not None else int(time.time() * 1000),
            props,
        )
    except OSError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    except EdgesimError as exc:
        err_console.print(f"[red]{escape(str(rule_file))}[/red]:\n{escape(str(exc))}")
        raise typer.Exit(1) from exc
    if run:
        result["run"] = _run_on_gateway(rule_file, topic, body, result, endpoint, props)
    emit(result, True) if as_json else _print_test(result)
    if result.get("error") or (run and not result["run"]["ok"]):
        raise typer.Exit(1)


def _publish_headers(props: dict[int, Any] | None) -> dict[str, Any]:
    """The same MQTT 5 fields as boto3 iot-data publish() arguments."""
    import base64

    from mqttwire import properties as mp

    if not props:
        return {}
    out: dict[str, Any] = {}
    if mp.USER_PROPERTY in props:
        out["userProperties"] = json.dumps([{k: v} for k, v in props[mp.USER_PROPERTY]])
    if mp.CONTENT_TYPE in props:
        out["contentType"] = props[mp.CONTENT_TYPE]
    if mp.RESPONSE_TOPIC in props:
        out["responseTopic"] = props[mp.RESPONSE_TOPIC]
    if mp.CORRELATION_DATA in props:
        out["correlationData"] = base64.b64encode(props[mp.CORRELATION_DATA]).decode()
    if mp.PAYLOAD_FORMAT_INDICATOR in props:
        out["payloadFormatIndicator"] = "UTF8_DATA" if props[mp.PAYLOAD_FORMAT_INDICATOR] else "UNSPECIFIED_BYTES"
    return out


@rules_app.command("check")
def rules_check(folder: Path, as_json: JsonOut = False) -> None:
    """Validate every rule file in a folder: SQL (positioned errors) and action types edgesim can run."""
    from gateway.actions.base import BACKEND_ONLY
    from gateway.rules import compile_rule
    from gateway.rules.files import read_rule_file, rule_files
    from gateway.rules.model import parse_rule_payload
    from gateway.rules.tryout import action_problems

    report = []
    try:
        paths = rule_files(folder)
    except OSError as exc:
        fail(os_error_line(exc, folder, "rules folder"))
    for path in paths:
        try:
            name, document = read_rule_file(path)
            rule = parse_rule_payload(name, document)
            compile_rule(rule.sql, rule.sql_version)
            specs = [*rule.actions, *([rule.error_action] if rule.error_action else [])]
            problems = action_problems(rule)
            if problems:
                raise EdgesimError("\n".join(problems))
            item: dict[str, Any] = {"file": str(path), "rule": name, "ok": True}
            backend = sorted({a.kind for a in specs if a.kind in BACKEND_ONLY})
            if backend:
                item["note"] = f"{', '.join(backend)} runs only with --sink-backend aws"
            report.append(item)
        except EdgesimError as exc:
            report.append({"file": str(path), "ok": False, "error": str(exc)})
        except OSError as exc:
            report.append({"file": str(path), "ok": False, "error": os_error_line(exc, path, "rule file")})
    if as_json:
        emit({"rules": report}, True)
    else:
        for item in report:
            if item["ok"]:
                note = f" [yellow]note:[/yellow] {escape(item['note'])}" if item.get("note") else ""
                console.print(
                    f"[green]ok[/green]    {escape(str(item['file']))} ({item['rule']}){note}", soft_wrap=True
                )
            else:
                console.print(
                    f"[red]error[/red] {escape(str(item['file']))}:\n{escape(str(item['error']))}", soft_wrap=True
                )
    if not all(item["ok"] for item in report):
        raise typer.Exit(1)


@rules_app.command("list")
def rules_list(endpoint: Endpoint = DEFAULT_ENDPOINT, as_json: JsonOut = False) -> None:
    """ListTopicRules on a gateway."""
    with api("iot", endpoint) as iot:
        rules = iot.list_topic_rules()["rules"]
    table = Table("ruleName", "topicPattern", "disabled")
    for r in rules:
        table.add_row(r["ruleName"], r.get("topicPattern", ""), str(r["ruleDisabled"]))
    emit({"rules": rules}, as_json, table)


@rules_app.command("create")
def rules_create(rule_file: Path, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """CreateTopicRule (or ReplaceTopicRule if it exists) from a rule file."""
    name, document = _read_rule(rule_file)
    with api("iot", endpoint) as iot:
        try:
            iot.replace_topic_rule(ruleName=name, topicRulePayload=document)
        except iot.exceptions.ResourceNotFoundException:
            iot.create_topic_rule(ruleName=name, topicRulePayload=document)
    console.print(f"rule {name} installed")


@rules_app.command("get")
def rules_get(name: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """GetTopicRule (JSON)."""
    with api("iot", endpoint) as iot:
        emit(strip_metadata(iot.get_topic_rule(ruleName=name)), True)


@rules_app.command("delete")
def rules_delete(name: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """DeleteTopicRule."""
    with api("iot", endpoint) as iot:
        iot.delete_topic_rule(ruleName=name)
    console.print(f"rule {name} deleted")


@rules_app.command("enable")
def rules_enable(name: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """EnableTopicRule."""
    with api("iot", endpoint) as iot:
        iot.enable_topic_rule(ruleName=name)
    console.print(f"rule {name} enabled")


@rules_app.command("disable")
def rules_disable(name: str, endpoint: Endpoint = DEFAULT_ENDPOINT) -> None:
    """DisableTopicRule (a disabled rule never fires)."""
    with api("iot", endpoint) as iot:
        iot.disable_topic_rule(ruleName=name)
    console.print(f"rule {name} disabled")


@rules_app.command("stats")
def rules_stats(endpoint: Endpoint = DEFAULT_ENDPOINT, as_json: JsonOut = False) -> None:
    """Per-rule figures from a running gateway: matched, fired, action successes and failures, last error."""
    metrics = get_json(endpoint, "/edgesim/rules/metrics")
    table = Table("rule", "matched", "fired", "ok", "failed", "errorAction")
    for name, m in sorted(metrics.items()):
        table.add_row(
            name,
            str(m["matched"]),
            str(m["fired"]),
            str(m["action_success"]),
            str(m["action_failure"]),
            str(m["error_actions"]),
        )
    emit(metrics, as_json, table)
    if not as_json:  # under the table, whole: a long error squeezed into a column is unreadable at 80 columns
        for name, m in sorted(metrics.items()):
            if m["last_error"]:
                console.print(f"[bold]{escape(name)}[/bold] last error: {escape(m['last_error'])}", soft_wrap=True)
