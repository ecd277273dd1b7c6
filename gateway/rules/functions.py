"""AWS IoT SQL built-in functions (reference §5.4), each declared with its signature as data."""

from __future__ import annotations

import base64
import difflib
import hashlib
import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, localcontext
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gateway.rules.ast import UNDEFINED, V1, V2, java_mod, parse_json, to_bool, to_int, to_num, to_str
from gateway.rules.lexer import format_millis, parse_millis
from gateway.rules.tokens import SqlEvaluationError

if TYPE_CHECKING:
    from gateway.rules.compiler import Env

__all__ = ["CAST_TYPES", "CAST_TYPE_NAMES", "SIGNATURES", "Signature", "caster", "signature_error", "version_at_least"]

U = UNDEFINED

# ---- signatures as data -----------------------------------------------------------------------------------------

Conv = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Signature:
    """One built-in: parameter conversions (None = passed as is, Undefined included), arity and version."""

    name: str
    impl: Callable[..., Any]
    params: tuple[Conv | None, ...] = ()
    optional: int = 0
    variadic: bool = False
    since: str = V1
    context: bool = False
    external: bool = False
    raw_star: bool = False

    @property
    def min_args(self) -> int:
        return len(self.params) - self.optional

    @property
    def max_args(self) -> int | None:
        return None if self.variadic else len(self.params)


SIGNATURES: dict[str, Signature] = {}


def _def(name: str, impl: Callable[..., Any], *params: Conv | None, **options: Any) -> None:
    SIGNATURES[name.lower()] = Signature(name, impl, params, **options)


def version_at_least(version: str, since: str) -> bool:
    return since == V1 or version != V1


def signature_error(name: str, nargs: int, version: str) -> tuple[str, str | None] | None:
    """Why `name(<nargs args>)` cannot be called in `version` (message, hint), or None when it can."""
    spec = SIGNATURES.get(name.lower())
    if spec is None:
        close = difflib.get_close_matches(name.lower(), SIGNATURES, n=1, cutoff=0.6)
        hint = f"did you mean {SIGNATURES[close[0]].name}()?" if close else "see the AWS IoT SQL function list"
        return f"Unknown function {name}()", hint
    if not version_at_least(version, spec.since):
        return f"{spec.name}() needs SQL version {spec.since}", f'set "awsIotSqlVersion": "{V2}"'
    low, high = spec.min_args, spec.max_args
    if nargs < low or (high is not None and nargs > high):
        if high is None:
            wanted = f"at least {low}"
        elif low == high:
            wanted = str(low)
        else:
            wanted = f"{low} to {high}"
        plural = "" if wanted == "1" else "s"
        given = f"{nargs} {'was' if nargs == 1 else 'were'} given"
        return f"{spec.name}() takes {wanted} argument{plural} but {given}", None
    return None


# ---- context functions ------------------------------------------------------------------------------------------


def _topic(env: Env, level: Any = None) -> Any:
    if level is None:
        return env.ctx.topic
    levels = env.ctx.topic_levels
    return levels[level - 1] if 1 <= level <= len(levels) else U


def _property(env: Env, name: str) -> Any:
    props = env.ctx.mqtt_properties
    return props.get(name, U) if props else U


def _user_properties(env: Env, key: str) -> Any:
    values = [v for k, v in env.ctx.user_properties if k == key]
    return values if values else U


_def("topic", _topic, to_int, optional=1, context=True)
_def("clientid", lambda env: env.ctx.client_id if env.ctx.client_id is not None else "n/a", context=True)
_def("principal", lambda env: env.ctx.principal if env.ctx.principal is not None else U, context=True)
_def("accountid", lambda env: env.ctx.account_id if env.ctx.account_id is not None else U, context=True)
_def("timestamp", lambda env: env.ctx.timestamp_ms, context=True)
_def("newuuid", lambda env: env.ctx.uuid_factory(), context=True)
_def("traceid", lambda env: env.ctx.trace_id or U, context=True)
_def("rand", lambda env: env.ctx.rand(), context=True)
_def("sql_version", lambda env: U, context=True)  # the compiler folds it to a constant
_def("get_mqtt_property", _property, to_str, context=True, since=V2)
_def("get_user_properties", _user_properties, to_str, context=True, since=V2)

# ---- math -------------------------------------------------------------------------------------------------------


def _round(x: int | float) -> int:
    # Half away from zero: round(-1.5) = -2 (reference §5.4).
    return x if type(x) is int else int(Decimal(x).to_integral_value(ROUND_HALF_UP))


def _trunc(x: int | float, places: int) -> int | float:
    if type(x) is int:
        return x
    with localcontext() as decimal_context:
        decimal_context.prec = 800
        scale = min(max(places, 0), 34)
        cut = Decimal(repr(x)).scaleb(scale).to_integral_value(ROUND_DOWN).scaleb(-scale)
    return int(cut) if cut == cut.to_integral_value() else float(cut)


def _double(fn: Callable[[float], float]) -> Callable[[Any], float]:
    return lambda x: fn(float(x))


_def("abs", abs, to_num)
_def("ceil", math.ceil, to_num)
_def("floor", math.floor, to_num)
_def("round", _round, to_num)
_def("sign", lambda x: (x > 0) - (x < 0), to_num)
_def("trunc", _trunc, to_num, to_int)
_def("mod", java_mod, to_num, to_num)
_def("remainder", java_mod, to_num, to_num)
_def("power", lambda b, e: math.pow(float(b), float(e)), to_num, to_num)
_def("atan2", lambda y, x: math.atan2(float(y), float(x)), to_num, to_num)
for _name, _fn in {
    "sqrt": math.sqrt, "exp": math.exp, "ln": math.log, "log": math.log10,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan,
    "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh,
}.items():  # fmt: skip
    _def(_name, _double(_fn), to_num)
_def("bitand", lambda a, b: a & b, to_int, to_int)
_def("bitor", lambda a, b: a | b, to_int, to_int)
_def("bitxor", lambda a, b: a ^ b, to_int, to_int)
_def("bitnot", lambda a: ~a, to_int)
_def("nanvl", lambda a, b: b if a is U or a is None else a, None, None)

# ---- strings ----------------------------------------------------------------------------------------------------


def _concat(*args: Any) -> Any:
    if not args or any(a is U for a in args):
        return U
    if len(args) == 1:  # concat(1) = "1": a lone argument is converted, an array kept (SQL reference examples)
        return args[0] if type(args[0]) is list else to_str(args[0])
    if any(type(a) is list for a in args):
        out: list[Any] = []
        for a in args:
            out.extend(a) if type(a) is list else out.append(a)
        return out
    if not any(type(a) is str for a in args):
        return U
    parts = [to_str(a) for a in args]
    return U if any(p is U for p in parts) else "".join(parts)


def _substring(text: str, start: int, end: Any = None) -> str:
    size = len(text)
    begin = min(max(start, 0), size)
    stop = size if end is None else min(max(end, 0), size)
    return text[begin:stop] if begin < stop else ""


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    with warnings.catch_warnings():  # e.g. FutureWarning on '[[' : a pattern from a payload must not warn
        warnings.simplefilter("ignore")
        return re.compile(pattern)


@lru_cache(maxsize=256)
def _replacement(java: str) -> str:
    """A Java replacement string ($1, ${name}, backslash escapes) as a Python `re.sub` template."""
    out: list[str] = []
    i = 0
    while i < len(java):
        ch = java[i]
        if ch == "\\":
            nxt = java[i + 1]  # IndexError (caught: Undefined) on a trailing backslash, as Java throws
            out.append("\\\\" if nxt == "\\" else nxt)
            i += 2
        elif ch == "$":
            if java.startswith("{", i + 1):
                close = java.index("}", i)
                out.append(f"\\g<{java[i + 2 : close]}>")
                i = close + 1
            else:
                j = i + 1
                while j < len(java) and java[j].isdigit():
                    j += 1
                if j == i + 1:
                    raise ValueError("'$' without a group reference")
                out.append(f"\\g<{java[i + 1 : j]}>")
                i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _regexp_substr(text: str, pattern: str) -> Any:
    found = _regex(pattern).search(text)
    return found.group(0) if found else U


def _pad(left: bool) -> Callable[[str, int], str]:
    def pad(text: str, count: int) -> str:
        spaces = " " * min(max(count, 0), 1000)
        return spaces + text if left else text + spaces

    return pad


_def("lower", str.lower, to_str)
_def("upper", str.upper, to_str)
_def("trim", str.strip, to_str)
_def("ltrim", str.lstrip, to_str)
_def("rtrim", str.rstrip, to_str)
_def("lpad", _pad(True), to_str, to_int)
_def("rpad", _pad(False), to_str, to_int)
_def("concat", _concat, variadic=True)
_def("substring", _substring, to_str, to_int, to_int, optional=1)
_def("startswith", str.startswith, to_str, to_str)
_def("endswith", str.endswith, to_str, to_str)
_def("indexof", str.find, to_str, to_str, since=V2)
_def("length", len, to_str, since=V2)
_def("numbytes", lambda text: len(text.encode()), to_str, since=V2)
_def("replace", str.replace, to_str, to_str, to_str)
_def("regexp_matches", lambda text, pattern: _regex(pattern).search(text) is not None, to_str, to_str)
_def("regexp_replace", lambda text, p, rep: _regex(p).sub(_replacement(rep), text), to_str, to_str, to_str)
_def("regexp_substr", _regexp_substr, to_str, to_str)
_def("chr", lambda code: chr(code) if 0 <= code <= 127 else U, to_int)

# ---- types ------------------------------------------------------------------------------------------------------

_def("isUndefined", lambda v: v is U, None, since=V2)
_def("isNull", lambda v: v is None, None)
_def("isString", lambda v: type(v) is str, None)
_def("isNumber", lambda v: type(v) is int or type(v) is float, None)
_def("isBoolean", lambda v: type(v) is bool, None)
_def("isArray", lambda v: type(v) is list, None)
_def("isObject", lambda v: type(v) is dict, None)


def _cast_int(v: Any) -> Any:
    return int(v) if type(v) is bool else to_int(v)


def _cast_decimal(v: Any) -> Any:
    if type(v) is bool:
        return 1.0 if v else 0.0
    number = to_num(v)
    return float(number) if type(number) is int else number


def _cast_bool(v: Any) -> Any:
    if type(v) is int or type(v) is float:
        return v != 0
    return to_bool(v)


CAST_TYPE_NAMES = (
    "String", "Nvarchar", "Text", "Ntext", "varchar", "Int", "Integer", "Double", "Decimal", "Bool", "Boolean",
)  # fmt: skip
# Keyword after AS (lower case) → (conversion, first SQL version that accepts it).
CAST_TYPES: dict[str, tuple[Conv, str]] = {
    **dict.fromkeys(("string", "nvarchar", "text", "ntext", "varchar"), (to_str, V1)),
    **dict.fromkeys(("int", "integer"), (_cast_int, V1)),
    "double": (_cast_decimal, V1),
    "decimal": (_cast_decimal, V2),
    **dict.fromkeys(("bool", "boolean"), (_cast_bool, V2)),
}


def caster(type_name: str) -> Conv:
    """The conversion `cast(x AS type_name)` applies (the parser has validated the name)."""
    return CAST_TYPES[type_name.lower()][0]


# ---- encoding and hashing ---------------------------------------------------------------------------------------


def _encode(value: Any, scheme: str) -> Any:
    if scheme.lower() != "base64":
        return U
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    text = to_str(value)
    return U if text is U else base64.b64encode(text.encode()).decode("ascii")


def _decode(text: str, scheme: str) -> Any:
    if scheme.lower() != "base64":
        return U
    try:
        decoded = base64.b64decode(text, validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError: "NULL if the string cannot be decoded"
        return None
    try:
        return parse_json(decoded, v2=True)
    except (ValueError, RecursionError):
        return decoded


def _pi_digits() -> Iterator[int]:
    q, r, t, k, n, m = 1, 0, 1, 1, 3, 3  # Gibbons' unbounded spigot
    while True:
        if 4 * q + r - t < n * t:
            yield n
            q, r, n = 10 * q, 10 * (r - n * t), (10 * (3 * q + r)) // t - 10 * n
        else:
            q, r, t, k, n, m = q * k, (2 * q + r) * m, t * m, k + 1, (q * (7 * k + 2) + r * m) // (t * m), m + 2


@lru_cache(maxsize=1)
def _md2_table() -> tuple[int, ...]:
    """MD2's S-box, derived from the digits of pi as RFC 1319's authors did (hashlib has no MD2 on OpenSSL 3)."""
    digits = _pi_digits()

    def below(n: int) -> int:
        while True:
            x, y = next(digits), 10
            if n > 10:
                x, y = x * 10 + next(digits), 100
            if n > 100:
                x, y = x * 10 + next(digits), 1000
            if x < n * (y // n):
                return x % n

    table = list(range(256))
    for i in range(2, 257):
        j = below(i)
        table[j], table[i - 1] = table[i - 1], table[j]
    return tuple(table)


def _md2(text: str) -> str:
    s = _md2_table()
    data = text.encode()
    data += bytes([16 - len(data) % 16]) * (16 - len(data) % 16)
    checksum, last = [0] * 16, 0
    for block in range(0, len(data), 16):
        for j in range(16):
            checksum[j] ^= s[data[block + j] ^ last]
            last = checksum[j]
    data += bytes(checksum)
    x = [0] * 48
    for block in range(0, len(data), 16):
        for j in range(16):
            x[16 + j] = data[block + j]
            x[32 + j] = x[16 + j] ^ x[j]
        t = 0
        for j in range(18):
            for k in range(48):
                x[k] ^= s[t]
                t = x[k]
            t = (t + j) % 256
    return bytes(x[:16]).hex()


def _hash(name: str) -> Callable[[str], str]:
    return lambda text: hashlib.new(name, text.encode()).hexdigest()


_def("encode", _encode, None, to_str, since=V2, raw_star=True)
_def("decode", _decode, to_str, to_str, since=V2)
_def("md2", _md2, to_str)
for _name in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512"):
    _def(_name, _hash(_name), to_str)

# ---- time and collections ---------------------------------------------------------------------------------------

_def("parse_time", format_millis, to_str, to_int, to_str, optional=1, since=V2)
_def("time_to_epoch", parse_millis, to_str, to_str, since=V2)


def _get(collection: Any, key: Any) -> Any:
    kind = type(collection)
    if kind is dict:
        return collection.get(key, U) if type(key) is str else U
    if kind is list or kind is str:
        index = to_int(key)
        return collection[index] if index is not U and 0 <= index < len(collection) else U
    return U


def _transform(mode: str, attributes: Any, items: Any) -> Any:
    if mode != "enrichArray" or type(attributes) is not dict or type(items) is not list:
        return U
    if any(type(item) is not dict for item in items):
        return U
    return [{**item, **attributes} for item in items]


_def("get", _get, None, None)
_def("transform", _transform, to_str, None, None, since=V2)

# ---- external services ------------------------------------------------------------------------------------------


def _call_hook(name: str, hook: Callable[..., Any] | None, *args: Any) -> Any:
    if hook is None:
        raise SqlEvaluationError(name, "not supported locally: the evaluation context has no hook for it")
    try:
        result = hook(*args)
    except SqlEvaluationError:
        raise
    except Exception as exc:  # a hook's failure becomes the rule's typed evaluation error
        raise SqlEvaluationError(name, f"hook failed: {exc}") from exc
    return U if result is None else result


def _get_thing_shadow(env: Env, thing: str, *rest: str) -> Any:
    shadow = rest[0] if len(rest) == 2 else None
    return _call_hook("get_thing_shadow", env.ctx.get_thing_shadow, thing, shadow)


def _aws_lambda(env: Env, function_arn: str, payload: Any) -> Any:
    return U if payload is U else _call_hook("aws_lambda", env.ctx.aws_lambda, function_arn, payload)


def _unsupported(name: str, service: str) -> Callable[..., Any]:
    def fail(env: Env, *args: Any) -> Any:
        raise SqlEvaluationError(name, f"not supported locally (it needs {service})")

    return fail


_def("get_thing_shadow", _get_thing_shadow, to_str, to_str, to_str, optional=1, since=V2, context=True, external=True)
_def("aws_lambda", _aws_lambda, to_str, None, context=True, external=True)
for _name, _service, _arity, _since in (
    ("get_dynamodb", "Amazon DynamoDB", (4, 6), V2),
    ("get_secret", "AWS Secrets Manager", (3, 4), V1),
    ("machinelearning_predict", "Amazon Machine Learning", (3, 3), V1),
    ("get_registry_data", "the AWS IoT registry API", (2, 3), V2),
):
    _def(
        _name,
        _unsupported(_name, _service),
        *([None] * _arity[1]),
        optional=_arity[1] - _arity[0],
        since=_since,
        context=True,
        external=True,
    )
