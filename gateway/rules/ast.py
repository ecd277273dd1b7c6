"""What AWS IoT SQL denotes: the frozen-dataclass syntax tree, and the values (Undefined, §5.3 conversions)."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

__all__ = [
    "OPERATORS",
    "UNDEFINED",
    "V1",
    "V2",
    "ArrayLit",
    "Assignment",
    "Binary",
    "Call",
    "Case",
    "Cast",
    "Expr",
    "Literal",
    "ObjectLit",
    "Path",
    "PathStar",
    "Rule",
    "Select",
    "SelectItem",
    "Star",
    "Subquery",
    "Unary",
    "Var",
    "When",
    "fix_v1",
    "fix_v2",
    "is_true",
    "java_div",
    "java_mod",
    "logical_not",
    "negate",
    "num_from_str",
    "parse_json",
    "sql_eq",
    "to_bool",
    "to_int",
    "to_num",
    "to_str",
]

LiteralValue: TypeAlias = "str | int | float | bool | None"


@dataclass(frozen=True, slots=True)
class Literal:
    """A string, number, boolean or NULL literal (`None` is NULL)."""

    value: LiteralValue
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Path:
    """`a.b[0].c`: member names (str) and array indexes (int) applied to `base` (None: the current document)."""

    base: Expr | None
    steps: tuple[str | int, ...]
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Var:
    """`@name`, a variable assigned in the SET clause."""

    name: str
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Star:
    """`*`: the whole payload, as a SELECT item or a function argument."""

    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PathStar:
    """`a.b.*` as a SELECT item: the members of the object at `path`, merged into the output."""

    path: Expr
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; `name` is as written (lookup is case-insensitive)."""

    name: str
    args: tuple[Expr, ...]
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Cast:
    """`cast(expr AS Type)`; `type_name` is as written."""

    expr: Expr
    type_name: str
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Unary:
    """`-x` or `NOT x` (`op` is "-" or "NOT")."""

    op: str
    operand: Expr
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Binary:
    """`left op right`; `op` is one of OR AND = <> != < <= > >= + - * / %."""

    op: str
    left: Expr
    right: Expr
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class When:
    """One `WHEN cond THEN result` arm."""

    cond: Expr
    result: Expr


@dataclass(frozen=True, slots=True)
class Case:
    """`CASE [subject] WHEN … THEN … [ELSE default] END`; no subject is the searched form."""

    subject: Expr | None
    whens: tuple[When, ...]
    default: Expr | None
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ObjectLit:
    """`{'k': expr, …}` (2016-03-23)."""

    items: tuple[tuple[str, Expr], ...]
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ArrayLit:
    """`[expr, …]` (2016-03-23)."""

    items: tuple[Expr, ...]
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Subquery:
    """`(SELECT … FROM expr [WHERE …])` (2016-03-23)."""

    select: Select
    pos: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SelectItem:
    """One SELECT item; `alias` is the dotted `AS a.b` name split into parts."""

    expr: Expr | PathStar
    alias: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Select:
    """A SELECT body; `source` is the FROM expression of a nested query (None at the top level)."""

    value: bool
    items: tuple[SelectItem, ...]
    source: Expr | None
    where: Expr | None


@dataclass(frozen=True, slots=True)
class Assignment:
    """`@name = expr` in the SET clause."""

    name: str
    expr: Expr


@dataclass(frozen=True, slots=True)
class Rule:
    """A whole rule statement; `topic` is the FROM topic filter (None for Basic-Ingest-only rules)."""

    assignments: tuple[Assignment, ...]
    select: Select
    topic: str | None


Expr: TypeAlias = "Literal | Path | Var | Star | Call | Cast | Unary | Binary | Case | ObjectLit | ArrayLit | Subquery"


# ---- values ------------------------------------------------------------------------------------------------------

V1: Final = "2015-10-08"
V2: Final = "2016-03-23"


class _Undefined:
    """The SQL Undefined value: a missing key, or any function/operator given bad types. Falsy, never JSON."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Undefined"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final[Any] = _Undefined()
U = UNDEFINED


# ---- JSON and conversions (reference §5.3) ----------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _float_v1(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


# Whole decimals below this become Int in 2016-03-23 (an AWS Int has at most 34 digits).
INT_LIMIT: Final = 1e34


def _float_v2(text: str) -> int | float:
    # SQL 2016-03-23 reads whole-number decimals (10.0) as Int; exact when there is no exponent.
    value = _float_v1(text)
    if value.is_integer() and abs(value) < INT_LIMIT:
        return int(text.partition(".")[0]) if "e" not in text and "E" not in text else int(value)
    return value


# Built once: json.loads with hooks would build a decoder (and its scanner) on every call.
_DECODERS = {
    v2: json.JSONDecoder(parse_float=_float_v2 if v2 else _float_v1, parse_constant=_reject_constant)
    for v2 in (False, True)
}


def parse_json(data: bytes | str, v2: bool) -> Any:
    """Strict UTF-8 JSON (no NaN/Infinity); raises ValueError or RecursionError when `data` is not JSON."""
    return _DECODERS[v2].decode(data.decode() if isinstance(data, bytes) else data)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def num_from_str(text: str) -> Any:
    """A Decimal (float) from a string matching ^-?\\d+(\\.\\d+)?((?i)E-?\\d+)?$, else Undefined."""
    body = text[1:] if text.startswith("-") else text
    mantissa, has_exp, exponent = body.lower().partition("e")
    whole, has_dot, fraction = mantissa.partition(".")
    if not _digits(whole) or (has_dot and not _digits(fraction)):
        return U
    if has_exp and not _digits(exponent[1:] if exponent.startswith("-") else exponent):
        return U
    value = float(text)
    return value if math.isfinite(value) else U


def to_num(value: Any) -> Any:
    """Int and Decimal stay; numeric strings become Decimal; anything else (Boolean, Null…) is Undefined."""
    kind = type(value)
    if kind is int or kind is float:
        return value
    if kind is str:
        return num_from_str(value)
    return U


def to_int(value: Any) -> Any:
    """An Int, rounding Decimals (and numeric strings) down; Undefined when not convertible."""
    number = to_num(value)
    return math.floor(number) if type(number) is float else number


def to_str(value: Any) -> Any:
    """The standard string conversion; Null and Undefined (and raw bytes) give Undefined."""
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        try:
            return repr(value)
        except ValueError:  # more digits than int->str allows
            return U
    if kind is list or kind is dict:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except (ValueError, RecursionError):
            return U
    return U


def to_bool(value: Any) -> Any:
    """Booleans, and the strings "true"/"false" in any case; anything else is Undefined."""
    if value is True or value is False:
        return value
    if type(value) is str:
        lowered = value.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    return U


def is_true(value: Any) -> bool:
    """Whether a WHERE (or searched CASE) condition holds: Undefined, Null and false do not."""
    return value is True or (type(value) is str and value.lower() == "true")


def sql_eq(left: Any, right: Any) -> bool:
    """`=` on two defined values: numbers numerically, arrays in order, objects ignoring order, else same type."""
    kind = type(left)
    if kind is type(right):
        if kind is list:
            return len(left) == len(right) and all(sql_eq(a, b) for a, b in zip(left, right, strict=True))
        if kind is dict:
            return left.keys() == right.keys() and all(sql_eq(v, right[k]) for k, v in left.items())
        return bool(left == right)
    return (kind is int or kind is float) and (type(right) is int or type(right) is float) and left == right


def java_div(left: int, right: int) -> int:
    """Int division truncating toward zero (Java); the caller rules out a zero divisor."""
    quotient = abs(left) // abs(right)
    return -quotient if (left < 0) != (right < 0) else quotient


def java_mod(left: Any, right: Any) -> Any:
    """Remainder with the dividend's sign (Java `%`); Int for two Ints, else Decimal; Undefined on zero."""
    if type(left) is int and type(right) is int:
        if right == 0:
            return U
        rem = abs(left) % abs(right)
        return -rem if left < 0 else rem
    a, b = to_num(left), to_num(right)
    if a is U or b is U or b == 0:
        return U
    return math.fmod(a, b)


# ---- numbers: every Decimal result is finite, and 2016-03-23 turns whole ones into Int ----------------------------


def fix_v1(value: Any) -> Any:
    return U if type(value) is float and value - value != 0.0 else value


def fix_v2(value: Any) -> Any:
    if type(value) is float:
        if value - value != 0.0:  # inf or nan
            return U
        if value.is_integer() and abs(value) < INT_LIMIT:
            return int(value)
    return value


def _operators(fix: Callable[[Any], Any]) -> dict[str, Callable[[Any, Any], Any]]:
    """The binary operators of reference §5.3 (one table per SQL version, which differ in `fix`)."""

    def add(a: Any, b: Any) -> Any:
        ta, tb = type(a), type(b)
        if ta is int and tb is int:
            return a + b
        if ta is str or tb is str:  # a String on either side concatenates: 1 + "2" = "12"
            sa, sb = to_str(a), to_str(b)
            return U if sa is U or sb is U else sa + sb
        if (ta is int or ta is float) and (tb is int or tb is float):
            return fix(a + b)
        return U

    def numeric(on_ints: Callable[[int, int], Any], on_decimals: Callable[[float, float], float]) -> Callable[..., Any]:
        def apply(a: Any, b: Any) -> Any:
            ta, tb = type(a), type(b)
            if ta is int and tb is int:
                return on_ints(a, b)
            if (ta is float or ta is int) and (tb is float or tb is int):
                x, y = a, b
            else:
                x, y = to_num(a), to_num(b)
            if x is U or y is U:
                return U
            try:
                return fix(on_decimals(float(x), float(y)))
            except (ArithmeticError, ValueError):
                return U

        return apply

    def compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
        def apply(a: Any, b: Any) -> Any:
            ta, tb = type(a), type(b)
            if (ta is int or ta is float) and (tb is int or tb is float):
                return op(a, b)
            x, y = to_num(a), to_num(b)
            return U if x is U or y is U else op(x, y)

        return apply

    def equal(a: Any, b: Any) -> Any:
        return U if a is U or b is U else sql_eq(a, b)

    def not_equal(a: Any, b: Any) -> Any:
        return U if a is U or b is U else not sql_eq(a, b)

    def both(a: Any, b: Any) -> Any:
        x, y = to_bool(a), to_bool(b)
        return U if x is U or y is U else x and y

    def either(a: Any, b: Any) -> Any:
        x, y = to_bool(a), to_bool(b)
        return U if x is U or y is U else x or y

    return {
        "OR": either,
        "AND": both,
        "=": equal,
        "<>": not_equal,
        "!=": not_equal,
        "<": compare(operator.lt),
        "<=": compare(operator.le),
        ">": compare(operator.gt),
        ">=": compare(operator.ge),
        "+": add,
        "-": numeric(operator.sub, operator.sub),
        "*": numeric(operator.mul, operator.mul),
        "/": numeric(lambda a, b: U if b == 0 else java_div(a, b), operator.truediv),
        "%": lambda a, b: fix(java_mod(a, b)),
    }


OPERATORS = {False: _operators(fix_v1), True: _operators(fix_v2)}


def negate(value: Any) -> Any:
    kind = type(value)
    if kind is int or kind is float:
        return -value
    number = num_from_str(value) if kind is str else U
    return U if number is U else -number


def logical_not(value: Any) -> Any:
    flag = to_bool(value)
    return U if flag is U else not flag
