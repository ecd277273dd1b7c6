"""What the dashboard's pages show, built from the gateway's own services (read-only; nothing here writes)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.errors import AwsError, ResourceNotFoundException
from gateway.identity.authorizer import Authorizer
from gateway.identity.certs import parse_certificate
from gateway.sinks.s3 import ObjectInfo
from mqttwire import properties as mqtt5_properties

if TYPE_CHECKING:
    from gateway.api.parts import ViewParts
    from gateway.messages import Message
    from gateway.registry.service import ConnectionGrant

MAX_S3_OBJECTS = 20


def payload_json(payload: bytes) -> tuple[str, str]:
    """A message body for the browser: UTF-8 text as is, anything else base64."""
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode(), "base64"


def message_json(
    topic: str, payload: bytes, qos: int, client_id: str | None, ts_ms: int, props: dict[int, Any] | None = None
) -> dict[str, Any]:
    text, encoding = payload_json(payload)
    out = {
        "topic": topic,
        "payload": text,
        "encoding": encoding,
        "qos": qos,
        "retain": False,
        "clientId": client_id,
        "timestampMs": ts_ms,
    }
    if props:
        out["properties"] = mqtt5_properties.to_json(props)
    return out


# ---------------------------------------------------------------- fleet
def fleet(gw: ViewParts) -> dict[str, Any]:
    store = gw.store
    groups: dict[str, list[str]] = {}
    for row in store.query("SELECT thing_name, group_name FROM thing_group_members ORDER BY group_name"):
        groups.setdefault(row["thing_name"], []).append(row["group_name"])
    sessions = gw.broker.sessions
    things = []
    connected = 0
    names: set[str] = set()
    for row in store.query("SELECT name, type_name, attributes FROM things ORDER BY name"):
        name = row["name"]
        names.add(name)
        conn = sessions.get(name)
        if conn is not None:
            connected += 1
        last = last_message(gw, name)
        things.append(
            {
                "name": name,
                "thingType": row["type_name"],
                "attributes": json.loads(row["attributes"]),
                "groups": groups.get(name, []),
                "connected": conn is not None,
                "lastMessageMs": last.received_ms if last is not None else None,
                "connectedSinceMs": conn.connected_ms if conn is not None else None,
            }
        )
    return {
        "things": things,
        "counts": {"connected": connected, "disconnected": len(things) - connected, "total": len(things)},
        "otherClients": sorted(c for c in sessions if c not in names),
    }


# ---------------------------------------------------------------- one thing
STANDARD_CHECKS = (
    ("iot:Connect", "client/{thing}"),
    ("iot:Publish", "topic/$aws/things/{thing}/shadow/update"),
    ("iot:Subscribe", "topicfilter/$aws/things/{thing}/shadow/update/delta"),
    ("iot:Receive", "topic/$aws/things/{thing}/shadow/update/delta"),
    ("iot:Publish", "topic/$aws/things/{thing}/shadow/get"),
    ("iot:Subscribe", "topicfilter/$aws/things/{thing}/shadow/get/accepted"),
    ("iot:GetThingShadow", "thing/{thing}"),
    ("iot:UpdateThingShadow", "thing/{thing}"),
)


def _certificates(gw: ViewParts, thing: str) -> list[tuple[str, str, Any]]:
    """(principal, certificate id, certificate row) of each certificate attached to the thing."""
    out = []
    for principal in gw.registry.list_thing_principals(thing)["principals"]:
        cert_id = principal.rsplit("/", 1)[-1]
        row = gw.registry.certificate_row(cert_id)
        if row is not None:
            out.append((principal, cert_id, row))
    return out


def _grants(gw: ViewParts, thing: str) -> list[tuple[str, ConnectionGrant]]:
    """Each certificate attached to the thing, resolved as if it connected with client id = thing."""
    return [
        (cert_id, gw.registry.connection_grant(row["pem"].encode(), thing, None))
        for _, cert_id, row in _certificates(gw, thing)
    ]


def check_permission(
    gw: ViewParts, thing: str, action: str, resource: str, grants: list[tuple[str, ConnectionGrant]] | None = None
) -> dict[str, Any]:
    """Allowed or not for `thing` connecting with its certificates, and which policy decided (the same engine)."""
    prefix = f"arn:aws:iot:{gw.config.region}:{gw.config.account}:"
    suffix = resource[len(prefix) :] if resource.startswith(prefix) else resource
    verdicts: list[tuple[bool, str]] = []
    for cert_id, grant in grants if grants is not None else _grants(gw, thing):
        if grant.context is None:
            verdicts.append((False, f"certificate {cert_id[:12]}… cannot connect: {grant.refusal}"))
            continue
        by_policy = [
            (name, Authorizer.compile([document], grant.context).verdict(action, suffix))
            for name, document in zip(grant.policy_names, grant.documents, strict=True)
        ]
        deniers = [name for name, verdict in by_policy if verdict == "deny"]
        allowers = [name for name, verdict in by_policy if verdict == "allow"]
        if deniers:
            verdicts.append((False, f"explicitly denied by {', '.join(deniers)}"))
        elif allowers:
            verdicts.append((True, f"allowed by {', '.join(allowers)} (certificate {cert_id[:12]}…)"))
        else:
            verdicts.append((False, "no attached policy allows it (implicit deny)"))
    if not verdicts:
        return {"allowed": False, "why": "no certificate is attached to this thing", "resource": prefix + suffix}
    chosen = next((v for v in verdicts if v[0]), verdicts[0])
    return {"allowed": chosen[0], "why": chosen[1], "resource": prefix + suffix}


def _recent(last: Message | None, client_id: str) -> list[dict[str, Any]]:
    return [] if last is None else [message_json(last.topic, last.payload, last.qos, client_id, last.received_ms)]


def last_message(gw: ViewParts, client_id: str) -> Message | None:
    """The client's last PUBLISH: from its live connection, else kept from when it disconnected."""
    conn = gw.broker.sessions.get(client_id)
    if conn is not None and conn.last_message is not None:
        return conn.last_message
    return gw.broker.last_messages.get(client_id)


def thing(gw: ViewParts, name: str) -> dict[str, Any]:
    registry = gw.registry
    described = registry.describe_thing(name)  # ResourceNotFoundException -> 404
    groups = [g["groupName"] for g in registry.list_thing_groups_for_thing(name)["thingGroups"]]
    certificates = []
    policies = []
    for principal, cert_id, row in _certificates(gw, name):
        info = parse_certificate(row["pem"].encode())
        certificates.append(
            {
                "certificateId": cert_id,
                "status": row["status"],
                "createdMs": row["created_ms"],
                "subject": info.subject_string,
                "notAfter": info.not_after.isoformat(),
            }
        )
        for policy in registry.list_attached_policies(principal)["policies"]:
            document = registry.get_policy(policy["policyName"])["policyDocument"]
            policies.append({"policyName": policy["policyName"], "document": json.loads(document), "via": cert_id})
    grants = _grants(gw, name)
    permissions = [
        {"action": action, **check_permission(gw, name, action, template.format(thing=name), grants)}
        for action, template in STANDARD_CHECKS
    ]
    conn = gw.broker.sessions.get(name)
    last = last_message(gw, name)
    return {
        "name": name,
        "thingType": described.get("thingTypeName"),
        "attributes": described.get("attributes", {}),
        "groups": groups,
        "version": described.get("version"),
        "connected": conn is not None,
        "lastMessageMs": last.received_ms if last is not None else None,
        "connectedSinceMs": conn.connected_ms if conn is not None else None,
        "certificates": certificates,
        "policies": policies,
        "permissions": permissions,
        "shadows": shadows(gw, name),
        "recentMessages": _recent(last, name),
    }


def shadows(gw: ViewParts, thing: str) -> list[dict[str, Any]]:
    names: list[str | None] = [None, *gw.shadows.list_named_shadows_for_thing(thing, None, 100)["results"]]
    out = []
    for shadow in names:
        try:
            document = json.loads(gw.shadows.get_thing_shadow(thing, shadow))
        except AwsError:
            continue  # no classic shadow (or deleted meanwhile)
        out.append(shadow_json(shadow, document))
    return out


def _last_updated(metadata: object) -> int | None:
    if isinstance(metadata, dict):
        stamps = [_last_updated(v) for k, v in metadata.items() if k != "timestamp"]
        own = metadata.get("timestamp")
        stamps.append(own if isinstance(own, int) and not isinstance(own, bool) else None)
    elif isinstance(metadata, list):
        stamps = [_last_updated(v) for v in metadata]
    else:
        return None
    return max((s for s in stamps if s is not None), default=None)


def shadow_json(shadow: str | None, document: dict[str, Any]) -> dict[str, Any]:
    state = document.get("state", {})
    return {
        "shadowName": shadow,
        "version": document.get("version"),
        # When it last changed (the newest per-leaf metadata timestamp); the document's own `timestamp` is when it
        # was read.
        "timestampS": _last_updated(document.get("metadata")) or document.get("timestamp"),
        "state": {key: state.get(key) for key in ("desired", "reported", "delta")},
        "metadata": document.get("metadata"),
    }


# ---------------------------------------------------------------- rules
def rules(gw: ViewParts) -> list[dict[str, Any]]:
    out = []
    for runtime in gw.rules_engine.index:
        rule = runtime.rule
        m = runtime.metrics
        out.append(
            {
                "ruleName": rule.name,
                "sql": rule.sql,
                "sqlVersion": rule.sql_version,
                "enabled": not rule.disabled,
                "description": rule.description,
                "actions": [spec.kind for spec in rule.actions],
                "errorAction": rule.error_action.kind if rule.error_action is not None else None,
                "counters": rule_counters(m),
                "lastErrors": list(reversed(m.recent_errors)),
            }
        )
    return out


def rule_counters(m: Any) -> dict[str, int]:
    return {
        "matched": m.matched,
        "fired": m.fired,
        "errors": m.action_failure + m.evaluation_errors,
        "actionSuccess": m.action_success,
        "actionFailure": m.action_failure,
    }


# ---------------------------------------------------------------- sinks
ObjectLister = Callable[[str, str], list[ObjectInfo]]


def list_objects(gw: ViewParts, bucket: str, prefix: str) -> list[ObjectInfo]:
    """Newest first, at most MAX_S3_OBJECTS; none while the bucket does not exist (before a first delivery)."""
    try:
        listed = gw.s3.list(bucket, prefix)
    except AwsError:
        return []
    listed.sort(key=lambda o: o.modified_ms, reverse=True)
    return listed[:MAX_S3_OBJECTS]


def sinks(gw: ViewParts, rates: dict[str, float], objects: ObjectLister | None = None) -> dict[str, Any]:
    now = gw.clock.wall_ms()
    kinesis = []
    for name, stream in sorted(gw.kinesis.streams.items()):
        shards = []
        total = 0
        for shard in stream.shards.shards:
            records = stream.shard_records(shard.number)
            total += records
            shards.append(
                {
                    "shardId": shard.shard_id,
                    "open": shard.is_open,
                    "records": records,
                    "startingHashKey": str(shard.start),
                    "endingHashKey": str(shard.end),
                }
            )
        kinesis.append(
            {
                "streamName": name,
                "status": "ACTIVE",
                "shards": shards,
                "records": total,
                "inPerSec": rates.get(name, 0.0),
                "throttles": gw.kinesis.throttles.get(name, 0),
            }
        )
    sqs = []
    queues = gw.sqs.queues
    for name, queue in sorted(queues.items()):
        counts = queue.counts(now=now)
        policy = queue.attributes.redrive_policy
        dead = None
        if policy is not None:
            target = policy.dead_letter_target_arn.rsplit(":", 1)[-1]
            dlq = queues.get(target)
            visible = dlq.counts(now=now)["ApproximateNumberOfMessages"] if dlq is not None else 0
            dead = {"queueName": target, "visible": visible}
        sqs.append(
            {
                "queueName": name,
                "url": gw.sqs.queue_url(name),
                "fifo": queue.fifo,
                "visible": counts["ApproximateNumberOfMessages"],
                "inFlight": counts["ApproximateNumberOfMessagesNotVisible"],
                "delayed": counts["ApproximateNumberOfMessagesDelayed"],
                "deadLetter": dead,
            }
        )
    lambdas = []
    logs = gw.lambdas.recent_logs()
    for fn in gw.lambdas.list_functions(max_items=1000)["Functions"]:
        name = fn["FunctionName"]
        stats = gw.lambdas.stats.get(name, {})
        invocations = stats.get("invocations", 0)
        lambdas.append(
            {
                "functionName": name,
                "runtime": fn.get("Runtime"),
                "invocations": invocations,
                "errors": stats.get("errors", 0),
                "avgDurationMs": stats.get("duration_us", 0) / invocations / 1000 if invocations else None,
                "logs": [_log_entry(e) for e in reversed(logs.get(name, []))],
            }
        )
    firehose = []
    for name, delivery in sorted(gw.firehose.streams.items()):
        s3_target = delivery.target
        listed = (objects or (lambda b, p: list_objects(gw, b, p)))(s3_target.bucket, s3_target.prefix)
        firehose.append(
            {
                "deliveryStreamName": name,
                "bucket": s3_target.bucket,
                "prefix": s3_target.prefix,
                "buffered": len(delivery.pending),
                "objects": [{"key": o.key, "size": o.size, "lastModifiedMs": o.modified_ms} for o in listed],
            }
        )
    cloudwatch = gw.cloudwatch.summary()
    return {"kinesis": kinesis, "sqs": sqs, "lambda": lambdas, "firehose": firehose, "cloudwatch": cloudwatch}


def _log_entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestId": entry["requestId"],
        "timeMs": entry["timestamp"],
        "text": entry["log"],
        "error": entry["functionError"],
    }


def kinesis_records(gw: ViewParts, stream_name: str, shard_id: str, after: str | None, limit: int) -> dict[str, Any]:
    stream = gw.kinesis.streams.get(stream_name)
    if stream is None:
        raise ResourceNotFoundException(f"Stream {stream_name} not found")
    shard = next((s for s in stream.shards.shards if s.shard_id == shard_id), None)
    if shard is None:
        raise ResourceNotFoundException(f"Shard {shard_id} not found in stream {stream_name}")
    # Sequence numbers of one shard have the same width, so text order is numeric order (as the sink reads them).
    rows = gw.store.query(
        "SELECT seq, partition_key, data, arrival_ms FROM kinesis_records"
        " WHERE stream=? AND shard=? AND seq > ? ORDER BY seq LIMIT ?",
        (stream_name, shard.number, after or "", limit),
    )
    records = []
    for row in rows:
        text, encoding = payload_json(bytes(row["data"]))
        records.append(
            {
                "sequenceNumber": row["seq"],
                "partitionKey": row["partition_key"],
                "data": text,
                "encoding": encoding,
                "arrivalMs": row["arrival_ms"],
            }
        )
    return {"records": records, "next": records[-1]["sequenceNumber"] if len(records) == limit else None}
