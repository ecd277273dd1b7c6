"""Per-connection authorization: policy documents compiled once against a connection's context (reference §3)."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.identity.policy_doc import PolicyDocument, Statement

__all__ = [
    "CACHE_SIZE",
    "DEV_POLICY_DOCUMENT",
    "Authorizer",
    "ConnectionContext",
]

CACHE_SIZE: Final = 4096
MAX_CERT_VARIABLE_CHARS: Final = 1024
# AWS exposes at most this many values of a multi-valued certificate attribute.
MAX_CERT_VARIABLE_VALUES: Final = 5
_CERT_FORBIDDEN = frozenset("*$+?#")

#: The policy used for anonymous dev listeners: everything allowed.
DEV_POLICY_DOCUMENT: Final[str] = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
)

_EMPTY: Mapping[str, tuple[str, ...]] = {}


def _empty_str_map() -> Mapping[str, str]:
    return {}


def _empty_values_map() -> Mapping[str, tuple[str, ...]]:
    return {}


@dataclass(frozen=True)
class ConnectionContext:
    """What is known about one connection when its policies are compiled.

    `thing_name` is set only when the thing variables resolve (reference §2.3); certificate mappings
    use AWS attribute names (`CommonName`, `Organization`, ...; `DNSName`, `IPAddress`, ... for
    alternative names) and list values in certificate order.
    """

    client_id: str
    region: str
    account: str
    thing_name: str | None = None
    thing_type_name: str | None = None
    thing_attributes: Mapping[str, str] = field(default_factory=_empty_str_map, hash=False)
    cert_id: str | None = None
    cert_subject: Mapping[str, tuple[str, ...]] = field(default_factory=_empty_values_map, hash=False)
    cert_issuer: Mapping[str, tuple[str, ...]] = field(default_factory=_empty_values_map, hash=False)
    cert_subject_alt_names: Mapping[str, tuple[str, ...]] = field(default_factory=_empty_values_map, hash=False)
    source_ip: str | None = None
    cert_issuer_alt_names: Mapping[str, tuple[str, ...]] = field(default_factory=_empty_values_map, hash=False)

    @property
    def is_attached(self) -> bool:
        return self.thing_name is not None


# ---------------------------------------------------------------------------------------------------
# Variables


_ATTRIBUTE_RE = re.compile(r"iot:Connection\.Thing\.Attributes\[(.+)\]", re.IGNORECASE)
_CERT_RE = re.compile(
    r"iot:Certificate\.(Subject|Issuer)\.(?:(AlternativeName)\.)?([A-Za-z0-9]+)(?:\.(\d+|List))?", re.IGNORECASE
)
_VARIABLE_RE = re.compile(r"\$\{([^}]*)\}|\$\(([*?$])\)")


def _lookup_ci(mapping: Mapping[str, tuple[str, ...]], name: str) -> tuple[str, ...] | None:
    found = mapping.get(name)
    if found is not None:
        return found
    lower = name.lower()
    for key, values in mapping.items():
        if key.lower() == lower:
            return values
    return None


def _cert_values(name: str, ctx: ConnectionContext) -> tuple[tuple[str, ...], str | None] | None:
    """`(values, index)` for a certificate variable, `index` being None, digits or "list"."""
    m = _CERT_RE.fullmatch(name)
    if m is None:
        return None
    side, alt, attr, index = m.groups()
    if side.lower() == "subject":
        mapping = ctx.cert_subject_alt_names if alt else ctx.cert_subject
    else:
        mapping = ctx.cert_issuer_alt_names if alt else ctx.cert_issuer
    values = _lookup_ci(mapping, attr)
    if values is None:
        return None
    return values[:MAX_CERT_VARIABLE_VALUES], index.lower() if index else None


def _context_values(name: str, ctx: ConnectionContext) -> tuple[str, ...] | None:
    """The values of a variable or condition key, None when it does not resolve."""
    lower = name.lower()
    if lower == "iot:clientid":
        return (ctx.client_id,)
    if lower == "aws:sourceip":
        return None if ctx.source_ip is None else (ctx.source_ip,)
    if lower == "iot:connection.thing.isattached":
        return ("true" if ctx.is_attached else "false",)
    if lower.startswith("iot:connection.thing."):
        if not ctx.is_attached:
            return None
        if lower == "iot:connection.thing.thingname":
            return (ctx.thing_name,) if ctx.thing_name is not None else None
        if lower == "iot:connection.thing.thingtypename":
            return None if ctx.thing_type_name is None else (ctx.thing_type_name,)
        m = _ATTRIBUTE_RE.fullmatch(name)
        if m is not None:
            value = ctx.thing_attributes.get(m.group(1))
            return None if value is None else (value,)
        return None
    cert = _cert_values(name, ctx)
    if cert is None:
        return None
    values, index = cert
    if index == "list":
        return values
    position = int(index) if index is not None else 0
    return (values[position],) if position < len(values) else None


def _substitution(name: str, ctx: ConnectionContext) -> str | None:
    """The text replacing `${name}` in a policy, None when no substitution is made."""
    if name in ("*", "?", "$"):
        return name
    values = _context_values(name, ctx)
    if values is None or len(values) != 1 or name.lower().endswith(".list"):
        return None
    value = values[0]
    if name.lower().startswith("iot:certificate.") and (
        len(value) > MAX_CERT_VARIABLE_CHARS or not _CERT_FORBIDDEN.isdisjoint(value)
    ):
        return None
    return value


# A piece is (is_literal, text): literal text came from a variable and never acts as a glob.
_Piece = tuple[bool, str]


def _substitute(text: str, ctx: ConnectionContext) -> list[_Piece] | None:
    """Split `text` into glob and literal pieces, None if some variable does not resolve."""
    pieces: list[_Piece] = []
    pos = 0
    for m in _VARIABLE_RE.finditer(text):
        if m.start() > pos:
            pieces.append((False, text[pos : m.start()]))
        name = m.group(1)
        value = m.group(2) if name is None else _substitution(name, ctx)
        if value is None:
            return None
        pieces.append((True, value))
        pos = m.end()
    if pos < len(text):
        pieces.append((False, text[pos:]))
    return pieces


# ---------------------------------------------------------------------------------------------------
# Glob matching


_GLOB_SPLIT_RE = re.compile(r"([*?])")


def _glob_regex(pieces: Sequence[_Piece]) -> str | None:
    """A regex for the glob, or None when it has no wildcard (then it is a plain string)."""
    chunks: list[list[str]] = [[]]
    wild = False
    for literal, text in pieces:
        if literal:
            chunks[-1].append(re.escape(text))
            continue
        for part in _GLOB_SPLIT_RE.split(text):
            if part == "*":
                wild = True
                chunks.append([])
            elif part == "?":
                wild = True
                chunks[-1].append(".")
            elif part:
                chunks[-1].append(re.escape(part))
    if not wild:
        return None
    if len(chunks) == 1:
        return "".join(chunks[0])
    # Every `*` but the last commits to the leftmost place its following chunk fits (an atomic
    # group), which is enough for glob matching and keeps a hostile topic from causing backtracking.
    middle = "".join(f"(?>.*?{''.join(chunk)})" for chunk in chunks[1:-1] if chunk)
    return "".join(chunks[0]) + middle + ".*" + "".join(chunks[-1])


def _star_chunks(pieces: Sequence[_Piece]) -> list[str] | None:
    """The literal runs between `*` wildcards (one run: no `*` at all); None when a `?` needs a regex."""
    chunks = [""]
    for literal, text in pieces:
        if literal:
            chunks[-1] += text
            continue
        for part in _GLOB_SPLIT_RE.split(text):
            if part == "*":
                chunks.append("")
            elif part == "?":
                return None
            else:
                chunks[-1] += part
    return chunks


def _star_match(chunks: tuple[str, ...], text: str) -> bool:
    """Glob with `*` only: the first run at the start, the last at the end, the others in order between, each at
    the leftmost place it fits (which is all a `*`-only glob needs; no backtracking)."""
    first, last = chunks[0], chunks[-1]
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    pos, stop = len(first), len(text) - len(last)
    for chunk in chunks[1:-1]:
        found = text.find(chunk, pos, stop)
        if found < 0:
            return False
        pos = found + len(chunk)
    return True


class _Matcher:
    """Whole-string glob matching against a set of patterns: `*` any run, `?` one character.

    Built once per statement and connection, so building must be cheap: `*`-only globs (nearly all of them) match
    with string operations, and a regex is compiled only for `?` globs, on first use."""

    __slots__ = ("_any", "_fold", "_globs", "_literals", "_regex", "_regex_flags", "_regex_src")

    def __init__(self, patterns: Sequence[Sequence[_Piece]], *, ignore_case: bool = False) -> None:
        self._any = False
        self._fold = ignore_case
        literals: set[str] = set()
        globs: list[tuple[str, ...]] = []
        regexes: list[str] = []
        for pieces in patterns:
            if list(pieces) == [(False, "*")]:
                self._any = True
                continue
            chunks = _star_chunks(pieces)
            if chunks is not None and ignore_case:
                chunks = [chunk.lower() for chunk in chunks]
            if chunks is None:
                regexes.append(_glob_regex(pieces) or "")
            elif len(chunks) == 1:
                literals.add(chunks[0])
            else:
                globs.append(tuple(chunks))
        self._literals = frozenset(literals)
        self._globs = tuple(globs)
        self._regex_src = "|".join(f"(?:{r})" for r in regexes) if regexes else None
        self._regex_flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        self._regex: re.Pattern[str] | None = None

    def __call__(self, text: str) -> bool:
        if self._any:
            return True
        if self._fold:
            text = text.lower()
        if text in self._literals:
            return True
        for chunks in self._globs:
            if _star_match(chunks, text):
                return True
        if self._regex_src is None:
            return False
        if self._regex is None:
            self._regex = re.compile(self._regex_src, self._regex_flags)
        return self._regex.fullmatch(text) is not None


# ---------------------------------------------------------------------------------------------------
# Conditions


_NEGATED = {
    "stringnotequals": "stringequals",
    "stringnotequalsignorecase": "stringequalsignorecase",
    "stringnotlike": "stringlike",
    "notipaddress": "ipaddress",
}
_POSITIVE = frozenset({"stringequals", "stringequalsignorecase", "stringlike", "bool", "ipaddress", "null"})


def _ip_test(values: Sequence[str]) -> Callable[[str], bool]:
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            continue

    def test(candidate: str) -> bool:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            return False
        return any(address in network for network in networks)

    return test


@dataclass(frozen=True, slots=True)
class _Condition:
    key: str  # lower-cased
    static_values: tuple[str, ...] | None
    test: Callable[[str], bool]
    negate: bool
    qualifier: str | None  # None, "any" or "all"
    if_exists: bool
    null_wants_absent: bool | None  # set only for the Null operator

    def holds(self, values: tuple[str, ...] | None) -> bool:
        if self.null_wants_absent is not None:
            return (not values) == self.null_wants_absent
        if not values:
            if self.if_exists or self.qualifier == "all":
                return True
            if self.qualifier == "any":
                return False
            # IAM: a negated operator holds when the key is missing.
            return self.negate
        if self.qualifier == "any":
            return any(self.test(v) != self.negate for v in values)
        if self.qualifier == "all":
            return all(self.test(v) != self.negate for v in values)
        hit = any(self.test(v) for v in values)
        return not hit if self.negate else hit


def _compile_condition(
    operator: str, key: str, values: Sequence[Sequence[_Piece]], ctx: ConnectionContext
) -> _Condition | None:
    """None for an operator this simulator does not know."""
    op = operator.lower()
    qualifier: str | None = None
    if op.startswith("foranyvalue:"):
        qualifier, op = "any", op[len("foranyvalue:") :]
    elif op.startswith("forallvalues:"):
        qualifier, op = "all", op[len("forallvalues:") :]
    if_exists = op.endswith("ifexists") and op != "ifexists"
    if if_exists:
        op = op[: -len("ifexists")]
    negate = op in _NEGATED
    base = _NEGATED.get(op, op)
    if base not in _POSITIVE:
        return None
    texts = ["".join(text for _, text in pieces) for pieces in values]
    null_wants_absent: bool | None = None
    test: Callable[[str], bool]
    if base == "stringequals":
        test = frozenset(texts).__contains__
    elif base == "stringequalsignorecase":
        folded = frozenset(t.casefold() for t in texts)

        def test(v: str) -> bool:
            return v.casefold() in folded

    elif base == "stringlike":
        test = _Matcher(values)
    elif base == "bool":
        lowered = frozenset(t.lower() for t in texts)

        def test(v: str) -> bool:
            return v.lower() in lowered

    elif base == "ipaddress":
        test = _ip_test(texts)
    else:  # null
        if len(texts) != 1 or texts[0].lower() not in ("true", "false"):
            return None
        null_wants_absent = texts[0].lower() == "true"
        test = bool
    return _Condition(
        key=key.lower(),
        static_values=_context_values(key, ctx),
        test=test,
        negate=negate,
        qualifier=qualifier,
        if_exists=if_exists,
        null_wants_absent=null_wants_absent,
    )


# ---------------------------------------------------------------------------------------------------
# Statements


@dataclass(frozen=True, slots=True)
class _CompiledStatement:
    deny: bool
    action: _Matcher
    not_action: bool
    resource: _Matcher
    not_resource: bool
    conditions: tuple[_Condition, ...]

    def applies_to_action(self, action: str) -> bool:
        return self.action(action.lower()) != self.not_action

    def applies(self, arn: str, overrides: Mapping[str, tuple[str, ...]] | None) -> bool:
        if self.resource(arn) == self.not_resource:
            return False
        for cond in self.conditions:
            values = cond.static_values
            if overrides is not None and cond.key in overrides:
                values = overrides[cond.key]
            if not cond.holds(values):
                return False
        return True


# Statements without policy variables or conditions compile the same for every connection: compiled once, shared.
_STATIC_KEPT = 4096
_static: dict[Statement, _CompiledStatement | None] = {}
_NOT_STATIC = object()


def _compile_statement(st: Statement, ctx: ConnectionContext) -> _CompiledStatement | None:
    """None when the statement can never match for this connection."""
    shared = _static.get(st, _NOT_STATIC)
    if shared is not _NOT_STATIC:
        return shared  # type: ignore[return-value]
    compiled = _compile_for(st, ctx)
    if not st.conditions and not any("$" in text for text in (*st.resources, *st.not_resources)):
        if len(_static) >= _STATIC_KEPT:
            _static.clear()
        _static[st] = compiled
    return compiled


def _compile_for(st: Statement, ctx: ConnectionContext) -> _CompiledStatement | None:
    action_patterns = [[(False, a.lower())] for a in st.actions or st.not_actions]

    resource_patterns: list[list[_Piece]] = []
    for resource in st.resources:
        pieces = _substitute(resource, ctx)
        # An unresolved variable stays as `${...}` text in AWS, so that resource matches nothing.
        if pieces is not None:
            resource_patterns.append(pieces)
    if st.resources and not resource_patterns:
        return None
    for resource in st.not_resources:
        pieces = _substitute(resource, ctx)
        # Conservative: never let an unresolved NotResource widen an Allow or apply a Deny.
        if pieces is None:
            return None
        resource_patterns.append(pieces)

    conditions: list[_Condition] = []
    for operator, block in st.conditions.items():
        for key, raw_values in block.items():
            values: list[list[_Piece]] = []
            for raw in raw_values:
                pieces = _substitute(raw, ctx)
                if pieces is None:
                    return None
                values.append(pieces)
            cond = _compile_condition(operator, key, values, ctx)
            if cond is None:
                return None
            conditions.append(cond)

    return _CompiledStatement(
        deny=st.effect == "Deny",
        action=_Matcher(action_patterns, ignore_case=True),
        not_action=bool(st.not_actions),
        resource=_Matcher(resource_patterns),
        not_resource=bool(st.not_resources),
        conditions=tuple(conditions),
    )


class Authorizer:
    """The policies of one connection, compiled: default deny, and any matching Deny wins.

    Policy variables are substituted once, at compile time. A statement that cannot match for this
    connection (a variable that does not resolve in all its resources, in a NotResource or in a
    condition value, or a condition operator not supported here) is dropped, so an unresolved Deny
    does not deny. Supported condition operators: StringEquals, StringNotEquals, StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase, StringLike, StringNotLike, Bool, IpAddress, NotIpAddress and Null, each
    optionally with a `ForAnyValue:`/`ForAllValues:` prefix or an `IfExists` suffix.
    """

    __slots__ = (
        "_arn_prefix",
        "_by_action",
        "_cache_size",
        "_caches",
        "_context",
        "_publish_cache",
        "_receive_cache",
        "_retain_cache",
        "_statements",
        "_subscribe_cache",
    )

    def __init__(
        self, statements: Sequence[_CompiledStatement], ctx: ConnectionContext, *, cache_size: int = CACHE_SIZE
    ) -> None:
        self._statements = tuple(statements)
        self._context = ctx
        self._arn_prefix = f"arn:aws:iot:{ctx.region}:{ctx.account}:"
        self._cache_size = max(1, cache_size)
        self._by_action: dict[str, tuple[tuple[_CompiledStatement, ...], tuple[_CompiledStatement, ...]]] = {}
        self._caches: dict[str, dict[str, bool]] = {}
        self._publish_cache: dict[str, bool] = {}
        self._retain_cache: dict[str, bool] = {}
        self._subscribe_cache: dict[str, bool] = {}
        self._receive_cache: dict[str, bool] = {}

    @classmethod
    def compile(
        cls, documents: Sequence[PolicyDocument], ctx: ConnectionContext, *, cache_size: int = CACHE_SIZE
    ) -> Authorizer:
        compiled: list[_CompiledStatement] = []
        for document in documents:
            for statement in document.statements:
                result = _compile_statement(statement, ctx)
                if result is not None:
                    compiled.append(result)
        return cls(compiled, ctx, cache_size=cache_size)

    @property
    def context(self) -> ConnectionContext:
        return self._context

    def resource_arn(self, resource_suffix: str) -> str:
        return self._arn_prefix + resource_suffix

    def _for_action(self, action: str) -> tuple[tuple[_CompiledStatement, ...], tuple[_CompiledStatement, ...]]:
        found = self._by_action.get(action)
        if found is None:
            relevant = [st for st in self._statements if st.applies_to_action(action)]
            found = (tuple(st for st in relevant if st.deny), tuple(st for st in relevant if not st.deny))
            self._by_action[action] = found
        return found

    def _evaluate(self, action: str, resource_suffix: str, overrides: Mapping[str, tuple[str, ...]] | None) -> bool:
        return self.verdict(action, resource_suffix, overrides) == "allow"

    def _remember(self, cache: dict[str, bool], key: str, action: str, resource_suffix: str) -> bool:
        result = self._evaluate(action, resource_suffix, None)
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[key] = result
        return result

    def is_allowed(
        self, action: str, resource_suffix: str, condition_values: Mapping[str, tuple[str, ...]] | None = None
    ) -> bool:
        """Whether `action` on `arn:aws:iot:<region>:<account>:<resource_suffix>` is allowed.

        `condition_values` supplies or overrides condition keys (e.g. `iot:ConnectAttributes`); such
        calls are not cached.
        """
        if condition_values is not None:
            overrides = {key.lower(): values for key, values in condition_values.items()}
            return self._evaluate(action, resource_suffix, overrides)
        cache = self._caches.get(action)
        if cache is None:
            cache = self._caches[action] = {}
        hit = cache.get(resource_suffix)
        if hit is None:
            hit = self._remember(cache, resource_suffix, action, resource_suffix)
        return hit

    def verdict(self, action: str, resource_suffix: str, overrides: Mapping[str, tuple[str, ...]] | None = None) -> str:
        """ "deny" (an explicit Deny matches), "allow", or "none" (implicit deny)."""
        denies, allows = self._for_action(action)
        arn = self._arn_prefix + resource_suffix
        if any(st.applies(arn, overrides) for st in denies):
            return "deny"
        return "allow" if any(st.applies(arn, overrides) for st in allows) else "none"

    def can_connect(self, condition_values: Mapping[str, tuple[str, ...]] | None = None) -> bool:
        return self.is_allowed("iot:Connect", "client/" + self._context.client_id, condition_values)

    def can_publish(self, topic: str) -> bool:
        hit = self._publish_cache.get(topic)
        if hit is None:
            hit = self._remember(self._publish_cache, topic, "iot:Publish", "topic/" + topic)
        return hit

    def can_retain_publish(self, topic: str) -> bool:
        """`iot:RetainPublish` and `iot:Publish` both allowed on the topic."""
        hit = self._retain_cache.get(topic)
        if hit is None:
            hit = self._remember(self._retain_cache, topic, "iot:RetainPublish", "topic/" + topic)
        return hit and self.can_publish(topic)

    def can_subscribe(self, topic_filter: str) -> bool:
        hit = self._subscribe_cache.get(topic_filter)
        if hit is None:
            hit = self._remember(self._subscribe_cache, topic_filter, "iot:Subscribe", "topicfilter/" + topic_filter)
        return hit

    def can_receive(self, topic: str) -> bool:
        hit = self._receive_cache.get(topic)
        if hit is None:
            hit = self._remember(self._receive_cache, topic, "iot:Receive", "topic/" + topic)
        return hit
