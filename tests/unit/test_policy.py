"""Policy documents and per-connection authorization, including the reference's vectors P1-P14."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import MalformedPolicyException
from gateway.identity.authorizer import DEV_POLICY_DOCUMENT, Authorizer, ConnectionContext
from gateway.identity.policy_doc import PolicyDocument, Statement, parse_policy_document
from gateway.limits import MAX_POLICY_DOCUMENT_CHARS

REGION = "us-east-1"
ACCOUNT = "123456789012"
ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}:"


def doc(*statements: dict[str, Any]) -> PolicyDocument:
    return parse_policy_document(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


def allow(action: str | list[str], resource: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: str | list[str], resource: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def ctx(client_id: str = "dev1", **kwargs: Any) -> ConnectionContext:
    return ConnectionContext(client_id=client_id, region=REGION, account=ACCOUNT, **kwargs)


def authorizer(*statements: dict[str, Any], context: ConnectionContext | None = None) -> Authorizer:
    return Authorizer.compile([doc(*statements)], context or ctx())


# --- reference §12.3 ------------------------------------------------------------------------------

POLICY_P = doc(
    allow("iot:Connect", ARN + "client/${iot:Connection.Thing.ThingName}"),
    allow("iot:Publish", ARN + "topic/sensors/${iot:ClientId}/*"),
    allow("iot:Subscribe", [ARN + "topicfilter/sensors/+", ARN + "topicfilter/cmd/${iot:ClientId}/*"]),
    allow("iot:Receive", ARN + "topic/cmd/${iot:ClientId}/*"),
    allow("iot:Publish", ARN + "topic/site/${iot:Connection.Thing.Attributes[site]}/??/status"),
    deny("iot:Publish", ARN + "topic/sensors/*/admin"),
)
CONTEXT_A = ctx("dev1", thing_name="dev1", thing_attributes={"site": "berlin"})
# Same certificate, client ID not equal to the thing name: thing variables do not resolve.
CONTEXT_B = ctx("dev9")
CONTEXTS = {"A": CONTEXT_A, "B": CONTEXT_B}


@pytest.mark.parametrize(
    ("vector", "context", "action", "resource", "expected"),
    [
        ("P1", "A", "iot:Connect", "client/dev1", True),
        ("P2", "B", "iot:Connect", "client/dev9", False),
        ("P3", "A", "iot:Publish", "topic/sensors/dev1/temp", True),
        ("P4", "A", "iot:Publish", "topic/sensors/dev2/temp", False),
        ("P5", "A", "iot:Publish", "topic/sensors/dev1/admin", False),
        ("P6", "A", "iot:Subscribe", "topicfilter/sensors/+", True),
        ("P7", "A", "iot:Subscribe", "topicfilter/sensors/dev1", False),
        ("P8", "A", "iot:Subscribe", "topicfilter/cmd/dev1/#", True),
        ("P9", "A", "iot:Receive", "topic/cmd/dev1/reboot", True),
        ("P10", "A", "iot:Receive", "topic/cmd/dev2/reboot", False),
        ("P11", "A", "iot:Publish", "topic/site/berlin/07/status", True),
        ("P12", "A", "iot:Publish", "topic/site/berlin/7/status", False),
        ("P13", "B", "iot:Publish", "topic/site/berlin/07/status", False),
        ("P14", "A", "iot:Publish", "topic/Sensors/dev1/temp", False),
    ],
)
def test_reference_vectors(vector: str, context: str, action: str, resource: str, expected: bool) -> None:
    auth = Authorizer.compile([POLICY_P], CONTEXTS[context])
    assert auth.is_allowed(action, resource) is expected, vector
    # The convenience methods agree with is_allowed.
    kind, _, rest = resource.partition("/")
    if action == "iot:Connect":
        assert auth.can_connect() is expected
    elif action == "iot:Publish":
        assert auth.can_publish(rest) is expected
    elif action == "iot:Subscribe":
        assert kind == "topicfilter"
        assert auth.can_subscribe(rest) is expected
    else:
        assert auth.can_receive(rest) is expected


# --- parsing --------------------------------------------------------------------------------------


def test_parse_accepts_object_statement_and_string_fields() -> None:
    parsed = parse_policy_document(
        '{"Version":"2008-10-17","Statement":{"Effect":"Deny","Action":"iot:Publish","Resource":"*","Sid":"x"}}'
    )
    assert parsed == PolicyDocument(
        version="2008-10-17",
        statements=(Statement(effect="Deny", actions=("iot:Publish",), resources=("*",), sid="x"),),
    )
    hash(parsed)


def test_parse_lists_and_conditions() -> None:
    parsed = doc(
        {
            "Effect": "Allow",
            "NotAction": ["iot:Connect", "iot:Pub*"],
            "NotResource": [ARN + "topic/a", ARN + "topic/b"],
            "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": True}, "NumericLessThan": {"k": 3}},
        }
    )
    (statement,) = parsed.statements
    assert statement.not_actions == ("iot:Connect", "iot:Pub*")
    assert statement.actions == ()
    assert statement.not_resources == (ARN + "topic/a", ARN + "topic/b")
    assert statement.conditions["Bool"]["iot:Connection.Thing.IsAttached"] == ("true",)
    assert statement.conditions["NumericLessThan"]["k"] == ("3",)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"Statement": [allow("iot:*", "*"), {"Effect": "Alow", "Action": "iot:*", "Resource": "*"}]},
            'Statement[1].Effect: must be "Allow" or "Deny", got "Alow"',
        ),
        ({"Statement": [{"Effect": "Allow", "Resource": "*"}]}, "Statement[0]: needs Action or NotAction"),
        ({"Statement": [{"Effect": "Allow", "Action": "iot:*"}]}, "Statement[0]: needs Resource or NotResource"),
        (
            {"Statement": [{"Effect": "Allow", "Action": "iot:*", "NotAction": "iot:X", "Resource": "*"}]},
            "Statement[0]: has both Action and NotAction",
        ),
        ({"Statement": [{"Action": "iot:*", "Resource": "*"}]}, "Statement[0].Effect: is required"),
        ({"Statement": [allow(["iot:Publish", "s3:GetObject"], "*")]}, 'Statement[0].Action[1]: "s3:GetObject" is not'),
        ({"Statement": allow("iot:Publish", "topic/x")}, 'Statement.Resource: must be "*" or an ARN'),
        (
            {"Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": ["*", 3]}]},
            "Statement[0].Resource[1]: must be a string, got 3",
        ),
        ({"Statement": [allow("iot:Publish", [])]}, "Statement[0].Resource: must not be an empty list"),
        ({"Statement": [allow("iot:*", "*", Principal="*")]}, "Statement[0].Principal: unknown statement element"),
        ({"Statement": [allow("iot:*", "*", Condition={"Bool": []})]}, "Statement[0].Condition.Bool: must be"),
        (
            {"Statement": [allow("iot:*", "*", Condition={"Bool": {"k": {"x": 1}}})]},
            "Statement[0].Condition.Bool.k: must be a string",
        ),
        ({"Version": "2020-01-01", "Statement": [allow("iot:*", "*")]}, 'Version: must be "2012-10-17"'),
        ({"Version": "2012-10-17"}, "Statement: is required"),
        ({"Statement": []}, "Statement: must not be an empty list"),
        ({"Statement": "x"}, "Statement: must be an object or a list"),
        ({"Statement": [allow("iot:*", "*")], "Extra": 1}, "Extra: unknown policy element"),
    ],
)
def test_parse_errors_name_the_json_path(document: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedPolicyException) as info:
        parse_policy_document(json.dumps(document))
    assert message in info.value.message


def test_parse_invalid_json_reports_line_and_column() -> None:
    with pytest.raises(MalformedPolicyException, match="line 3 column 5"):
        parse_policy_document('{\n  "Version": "2012-10-17",\n    oops\n}')
    with pytest.raises(MalformedPolicyException, match="must be a JSON object"):
        parse_policy_document("[]")
    with pytest.raises(MalformedPolicyException, match="NaN"):
        parse_policy_document('{"Statement": NaN}')


def test_size_limit_counts_non_whitespace_only() -> None:
    head = '{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iot:Publish","Resource":"'
    tail = '"}}'
    arn = ARN + "topic/"
    fill = MAX_POLICY_DOCUMENT_CHARS - len(head) - len(tail) - len(arn)
    exact = head + arn + "x" * fill + tail
    assert len(exact) == MAX_POLICY_DOCUMENT_CHARS
    parse_policy_document(exact)
    parse_policy_document(exact.replace(",", ",\n      "))  # whitespace is free
    too_big = head + arn + "x" * (fill + 1) + tail
    with pytest.raises(MalformedPolicyException, match="2049 characters"):
        parse_policy_document(too_big)
    parse_policy_document(too_big, max_chars=4096)
    with pytest.raises(MalformedPolicyException, match="maximum is 10"):
        parse_policy_document(DEV_POLICY_DOCUMENT, max_chars=10)


# --- authorization --------------------------------------------------------------------------------


def test_dev_policy_allows_everything() -> None:
    auth = Authorizer.compile([parse_policy_document(DEV_POLICY_DOCUMENT)], ctx("anyone"))
    assert auth.can_connect()
    assert auth.can_publish("$aws/things/x/shadow/update")
    assert auth.can_retain_publish("a/b")
    assert auth.can_subscribe("#")
    assert auth.can_receive("a")


def test_default_deny_and_no_documents() -> None:
    auth = Authorizer.compile([], ctx())
    assert not auth.can_connect()
    assert not auth.is_allowed("iot:Publish", "topic/a")


def test_deny_wins_across_documents() -> None:
    allow_all = doc(allow("iot:*", "*"))
    deny_one = doc(deny("iot:Publish", ARN + "topic/secret/*"))
    auth = Authorizer.compile([allow_all, deny_one], ctx())
    assert auth.can_publish("public/x")
    assert not auth.can_publish("secret/x")
    assert auth.can_receive("secret/x")
    # Order of documents is irrelevant.
    auth = Authorizer.compile([deny_one, allow_all], ctx())
    assert not auth.can_publish("secret/x")


def test_unresolved_deny_does_not_deny() -> None:
    auth = authorizer(
        allow("iot:*", "*"),
        deny("iot:Publish", ARN + "topic/${iot:Connection.Thing.ThingName}/*"),
        context=ctx("dev9"),
    )
    assert auth.can_publish("${iot:Connection.Thing.ThingName}/x")
    assert auth.can_publish("dev9/x")


def test_unresolved_resource_entry_only_drops_that_entry() -> None:
    auth = authorizer(
        allow("iot:Connect", [ARN + "client/${iot:Connection.Thing.ThingName}", ARN + "client/admin-*"]),
        context=ctx("admin-1"),
    )
    assert auth.can_connect()


def test_action_globs_and_case() -> None:
    auth = authorizer(allow("iot:Pub*", "*"), allow("IOT:receive", "*"))
    assert auth.is_allowed("iot:Publish", "topic/a")
    assert not auth.is_allowed("iot:Subscribe", "topicfilter/a")
    assert auth.can_receive("a")
    auth = authorizer(allow("iot:?onnect", "*"))
    assert auth.can_connect()


def test_not_action_and_not_resource() -> None:
    auth = authorizer(
        {"Effect": "Allow", "NotAction": "iot:Connect", "Resource": "*"},
        {"Effect": "Deny", "Action": "iot:Publish", "NotResource": ARN + "topic/ok/*"},
    )
    assert not auth.can_connect()
    assert auth.can_publish("ok/1")
    assert not auth.can_publish("other")
    assert auth.can_subscribe("anything/#")


def test_resource_globs() -> None:
    auth = authorizer(
        allow("iot:Publish", [ARN + "topic/a/*/c*d", ARN + "topic/dev??/status", ARN + "topic/$aws/things/x"]),
        allow("iot:Receive", "arn:aws:iot:*:*:topic/any/*"),
    )
    assert auth.can_publish("a/b/cd")
    assert auth.can_publish("a/b/x/c-long-d")
    assert not auth.can_publish("a/b/c-long-dx")
    assert auth.can_publish("dev42/status")
    assert not auth.can_publish("dev4/status")
    assert not auth.can_publish("dev4/x/status")
    assert auth.can_publish("$aws/things/x")
    assert auth.can_receive("any/thing")
    # Wrong account or region never matches a literal ARN.
    other = Authorizer.compile(
        [doc(allow("iot:Publish", ARN + "topic/x"))], ConnectionContext("c", "eu-west-1", ACCOUNT)
    )
    assert not other.can_publish("x")


def test_hostile_globs_do_not_backtrack() -> None:
    auth = authorizer(allow("iot:Publish", ARN + "topic/" + "*a" * 30 + "*b"))
    started = time.perf_counter()
    assert not auth.can_publish("a" * 250)
    assert auth.can_publish("a" * 30 + "b")
    assert time.perf_counter() - started < 1.0


def test_literal_escapes() -> None:
    auth = authorizer(
        allow("iot:Publish", [ARN + "topic/star/${*}", ARN + "topic/q/$(?)", ARN + "topic/dollar/${$}{x}"]),
        allow("iot:Subscribe", ARN + "topicfilter/dollar/$($)(*)"),
    )
    assert auth.can_publish("star/*")
    assert not auth.can_publish("star/anything")
    assert auth.can_publish("q/?")
    assert not auth.can_publish("q/x")
    assert auth.can_publish("dollar/${x}")
    assert auth.can_subscribe("dollar/$(*)")


def test_substituted_values_are_literal() -> None:
    auth = authorizer(allow("iot:Publish", ARN + "topic/c/${iot:ClientId}"), context=ctx("*"))
    assert auth.can_publish("c/*")
    assert not auth.can_publish("c/other")


CERT_CONTEXT = ctx(
    "dev1",
    cert_id="ab" * 32,
    cert_subject={
        "CommonName": ("dev1.example",),
        "Organization": ("Acme", "Beta"),
        "OrganizationalUnit": ("ou*wild",),
        "SerialNumber": ("x" * 1025,),
        "Country": ("A", "B", "C", "D", "E", "F"),
    },
    cert_issuer={"CommonName": ("Acme CA",)},
    cert_subject_alt_names={"DNSName": ("dev1.local", "alt.local"), "IPAddress": ("10.0.0.5",)},
)


@pytest.mark.parametrize(
    ("variable", "topic", "expected"),
    [
        ("${iot:Certificate.Subject.CommonName}", "dev1.example", True),
        ("${iot:Certificate.Subject.Organization}", "Acme", True),
        ("${iot:Certificate.Subject.Organization.0}", "Acme", True),
        ("${iot:Certificate.Subject.Organization.1}", "Beta", True),
        ("${iot:Certificate.Subject.Organization.2}", "${iot:Certificate.Subject.Organization.2}", False),
        ("${iot:Certificate.Subject.Organization.List}", "Acme", False),
        ("${iot:Certificate.Subject.Country.4}", "E", True),
        ("${iot:Certificate.Subject.Country.5}", "F", False),  # arrays are truncated to 5 entries
        ("${iot:Certificate.Subject.OrganizationalUnit}", "ou*wild", False),  # special characters
        ("${iot:Certificate.Subject.SerialNumber}", "x" * 1025, False),  # too long
        ("${iot:Certificate.Subject.Title}", "", False),  # missing attribute
        ("${iot:Certificate.Issuer.CommonName}", "Acme CA", True),
        ("${iot:Certificate.Subject.AlternativeName.DNSName}", "dev1.local", True),
        ("${iot:Certificate.Subject.AlternativeName.DNSName.1}", "alt.local", True),
        ("${iot:Certificate.Subject.AlternativeName.IPAddress}", "10.0.0.5", True),
        ("${iot:Certificate.Issuer.AlternativeName.DNSName}", "", False),
    ],
)
def test_certificate_variables(variable: str, topic: str, expected: bool) -> None:
    auth = authorizer(allow("iot:Publish", ARN + "topic/c/" + variable), context=CERT_CONTEXT)
    assert auth.can_publish("c/" + topic) is expected


def test_thing_and_connection_variables() -> None:
    context = ctx(
        "dev1", thing_name="lamp", thing_type_name="Lamp", thing_attributes={"room": "r1"}, source_ip="10.1.2.3"
    )
    assert context.is_attached
    assert not ctx().is_attached
    auth = authorizer(
        allow(
            "iot:Publish",
            ARN
            + "topic/${iot:Connection.Thing.ThingName}/${iot:Connection.Thing.ThingTypeName}/"
            + "${iot:Connection.Thing.Attributes[room]}/${iot:Connection.Thing.IsAttached}/${aws:SourceIp}",
        ),
        allow("iot:Receive", ARN + "topic/${iot:Connection.Thing.Attributes[missing]}"),
        context=context,
    )
    assert auth.can_publish("lamp/Lamp/r1/true/10.1.2.3")
    assert not auth.can_receive("${iot:Connection.Thing.Attributes[missing]}")
    unattached = authorizer(allow("iot:Publish", ARN + "topic/${iot:Connection.Thing.IsAttached}"), context=ctx())
    assert unattached.can_publish("false")


# --- conditions -----------------------------------------------------------------------------------


def test_condition_string_equals_client_id_matches_thing() -> None:
    statement = allow(
        "iot:Connect",
        "*",
        Condition={"StringEquals": {"iot:ClientId": "${iot:Connection.Thing.ThingName}"}},
    )
    assert authorizer(statement, context=CONTEXT_A).can_connect()
    assert not authorizer(statement, context=ctx("dev1", thing_name="other")).can_connect()
    assert not authorizer(statement, context=CONTEXT_B).can_connect()


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    [
        ({"StringEquals": {"iot:ClientId": ["a", "dev1"]}}, ctx("dev1"), True),
        ({"StringEquals": {"iot:ClientId": "a"}}, ctx("dev1"), False),
        ({"StringNotEquals": {"iot:ClientId": "a"}}, ctx("dev1"), True),
        ({"StringNotEquals": {"iot:ClientId": "dev1"}}, ctx("dev1"), False),
        ({"StringEqualsIgnoreCase": {"iot:ClientId": "DEV1"}}, ctx("dev1"), True),
        ({"StringLike": {"iot:ClientId": "dev*"}}, ctx("dev1"), True),
        ({"StringLike": {"iot:ClientId": "dev?"}}, ctx("dev10"), False),
        ({"StringNotLike": {"iot:ClientId": "dev*"}}, ctx("dev1"), False),
        ({"StringLike": {"iot:ClientId": "${*}"}}, ctx("dev1"), False),
        ({"StringLike": {"iot:ClientId": "${*}"}}, ctx("*"), True),
        ({"Bool": {"iot:Connection.Thing.IsAttached": "true"}}, CONTEXT_A, True),
        ({"Bool": {"iot:Connection.Thing.IsAttached": True}}, CONTEXT_B, False),
        ({"StringEquals": {"iot:Connection.Thing.ThingName": "dev1"}}, CONTEXT_A, True),
        ({"StringEquals": {"iot:Connection.Thing.ThingName": "dev1"}}, CONTEXT_B, False),
        ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(source_ip="10.9.8.7"), True),
        ({"IpAddress": {"aws:SourceIp": ["192.168.0.0/16", "2001:db8::/32"]}}, ctx(source_ip="2001:db8::1"), True),
        ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(source_ip="11.0.0.1"), False),
        ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(), False),
        ({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(source_ip="11.0.0.1"), True),
        ({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx(source_ip="10.0.0.1"), False),
        # Missing keys: positive operators fail, negated ones hold, IfExists holds.
        ({"StringEquals": {"aws:SourceIp": "x"}}, ctx(), False),
        ({"StringNotEquals": {"aws:SourceIp": "x"}}, ctx(), True),
        ({"StringEqualsIfExists": {"aws:SourceIp": "x"}}, ctx(), True),
        ({"StringEqualsIfExists": {"aws:SourceIp": "x"}}, ctx(source_ip="y"), False),
        ({"Null": {"aws:SourceIp": "true"}}, ctx(), True),
        ({"Null": {"aws:SourceIp": "false"}}, ctx(), False),
        # Certificate attributes as condition keys.
        ({"ForAnyValue:StringEquals": {"iot:Certificate.Subject.Organization.List": "Beta"}}, CERT_CONTEXT, True),
        ({"ForAllValues:StringEquals": {"iot:Certificate.Subject.Organization.List": "Beta"}}, CERT_CONTEXT, False),
        ({"StringEquals": {"iot:Certificate.Subject.CommonName": "dev1.example"}}, CERT_CONTEXT, True),
        # Every condition must hold.
        ({"StringEquals": {"iot:ClientId": "dev1"}, "Bool": {"iot:Connection.Thing.IsAttached": "true"}}, ctx(), False),
        # Unknown operators make the statement inert.
        ({"NumericLessThan": {"iot:ClientId": "3"}}, ctx(), False),
        ({"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}, ctx(), False),
    ],
)
def test_conditions(condition: dict[str, Any], context: ConnectionContext, expected: bool) -> None:
    auth = authorizer(allow("iot:Connect", "*", Condition=condition), context=context)
    assert auth.can_connect() is expected


def test_unknown_condition_operator_on_deny_does_not_deny() -> None:
    auth = authorizer(allow("iot:*", "*"), deny("iot:*", "*", Condition={"NumericEquals": {"k": "1"}}))
    assert auth.can_connect()


def test_connect_attributes_via_condition_values() -> None:
    auth = authorizer(
        allow("iot:Connect", "*"),
        deny(
            "iot:Connect",
            "*",
            Condition={"ForAnyValue:StringEquals": {"iot:ConnectAttributes": ["PersistentConnect"]}},
        ),
    )
    assert auth.can_connect()
    assert auth.can_connect({"iot:ConnectAttributes": ()})
    assert auth.can_connect({"iot:ConnectAttributes": ("LastWill",)})
    assert not auth.can_connect({"iot:ConnectAttributes": ("LastWill", "PersistentConnect")})
    assert not auth.can_connect({"IOT:CONNECTATTRIBUTES": ("PersistentConnect",)})
    # Calls with condition values are not cached.
    assert auth.can_connect()


def test_condition_values_override_context() -> None:
    auth = authorizer(allow("iot:Connect", "*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    assert not auth.can_connect()
    assert auth.can_connect({"aws:SourceIp": ("10.0.0.1",)})


# --- retain, caching ------------------------------------------------------------------------------


def test_retain_publish_needs_both_actions() -> None:
    only_publish = authorizer(allow("iot:Publish", "*"))
    assert only_publish.can_publish("t")
    assert not only_publish.can_retain_publish("t")
    only_retain = authorizer(allow("iot:RetainPublish", "*"))
    assert not only_retain.can_retain_publish("t")
    both = authorizer(allow(["iot:Publish", "iot:RetainPublish"], ARN + "topic/r/*"))
    assert both.can_retain_publish("r/1")
    assert not both.can_retain_publish("s/1")


def test_cache_consistency_and_bound() -> None:
    context = ctx("dev1")
    statements = (allow("iot:Publish", ARN + "topic/ok/*"), deny("iot:Publish", ARN + "topic/ok/no*"))
    small = Authorizer.compile([doc(*statements)], context, cache_size=8)
    fresh = Authorizer.compile([doc(*statements)], context)
    topics = [f"ok/{i}" for i in range(50)] + [f"ok/no{i}" for i in range(50)] + [f"x/{i}" for i in range(50)]
    for _ in range(3):
        for topic in topics:
            expected = topic.startswith("ok/") and not topic.startswith("ok/no")
            assert small.can_publish(topic) is expected
            assert small.is_allowed("iot:Publish", "topic/" + topic) is expected
            assert fresh.can_publish(topic) is expected
    assert len(small._publish_cache) <= 8
    assert all(len(cache) <= 8 for cache in small._caches.values())
    assert len(fresh._publish_cache) == len(topics)


# --- properties -----------------------------------------------------------------------------------

ACTIONS = st.sampled_from(
    ["iot:Connect", "iot:Publish", "iot:RetainPublish", "iot:Subscribe", "iot:Receive", "iot:UpdateThingShadow"]
)
SUFFIXES = st.text(min_size=0, max_size=40).map(lambda s: "topic/" + s) | st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(action=ACTIONS, suffix=SUFFIXES, client_id=st.text(min_size=1, max_size=20))
def test_allow_star_allows_everything_and_deny_star_denies_everything(action: str, suffix: str, client_id: str) -> None:
    context = ctx(client_id)
    allowing = Authorizer.compile([doc(allow("*", "*"))], context)
    assert allowing.is_allowed(action, suffix)
    denying = Authorizer.compile([doc(allow("*", "*")), doc(deny("*", "*"))], context)
    assert not denying.is_allowed(action, suffix)
    assert not denying.can_connect()
