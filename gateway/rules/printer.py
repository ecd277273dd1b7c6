"""Print a rule syntax tree back as AWS IoT SQL, with the minimal parentheses, so that parse(print(t)) == t."""

from __future__ import annotations

from gateway.rules.ast import (
    ArrayLit,
    Binary,
    Call,
    Case,
    Cast,
    Expr,
    Literal,
    ObjectLit,
    Path,
    PathStar,
    Rule,
    Select,
    SelectItem,
    Star,
    Subquery,
    Unary,
    Var,
)
from gateway.rules.tokens import KEYWORDS

__all__ = ["format_sql"]

_PRECEDENCE = {"OR": 10, "AND": 20, "+": 50, "-": 50, "*": 60, "/": 60, "%": 60}
_COMPARISON = 40
_NOT = 30
_NEGATE = 70
_PRIMARY = 100
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789")


def _quote(text: str, quote: str = "'") -> str:
    return quote + "".join(_ESCAPES.get(ch, "\\" + ch if ch == quote else ch) for ch in text) + quote


def _name(name: str, *, root: bool = False) -> str:
    """A bare identifier when it lexes as one; else backticks (keywords, and `value` leading a path)."""
    plain = bool(name) and name[0] in _IDENT_START and all(ch in _IDENT_CHARS for ch in name)
    reserved = name.upper() in KEYWORDS or (root and name.upper() == "VALUE")
    return name if plain and not reserved else _quote(name, "`")


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if value is True or value is False:
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return _quote(value)
    return repr(value)


def _wrap(node: Expr, minimum: int) -> str:
    text, power = _format(node)
    return text if power >= minimum else f"({text})"


def _format(node: Expr) -> tuple[str, int]:
    """The text of `node` and the binding power of its outermost operator (primaries bind tightest)."""
    match node:
        case Literal():
            return _literal(node.value), _PRIMARY
        case Path():
            text = "" if node.base is None else _wrap(node.base, _PRIMARY)
            for i, step in enumerate(node.steps):
                if isinstance(step, int):
                    text += f"[{step}]"
                elif i == 0 and node.base is None:
                    text += _name(step, root=True)
                else:
                    text += "." + _name(step)
            return text, _PRIMARY
        case Var():
            return "@" + node.name, _PRIMARY
        case Star():
            return "*", _PRIMARY
        case Call():
            return f"{node.name}({', '.join(_wrap(a, 0) for a in node.args)})", _PRIMARY
        case Cast():
            return f"cast({_wrap(node.expr, 0)} AS {node.type_name})", _PRIMARY
        case Unary():
            if node.op == "NOT":
                return "NOT " + _wrap(node.operand, _NOT), _NOT
            return "-" + _wrap(node.operand, _NEGATE), _NEGATE
        case Binary():
            power = _PRECEDENCE.get(node.op, _COMPARISON)
            return f"{_wrap(node.left, power)} {node.op} {_wrap(node.right, power + 1)}", power
        case Case():
            parts = ["CASE"] if node.subject is None else ["CASE", _wrap(node.subject, 0)]
            for arm in node.whens:
                parts += ["WHEN", _wrap(arm.cond, 0), "THEN", _wrap(arm.result, 0)]
            if node.default is not None:
                parts += ["ELSE", _wrap(node.default, 0)]
            return " ".join([*parts, "END"]), _PRIMARY
        case ObjectLit():
            return "{" + ", ".join(f"{_quote(k)}: {_wrap(v, 0)}" for k, v in node.items) + "}", _PRIMARY
        case ArrayLit():
            return "[" + ", ".join(_wrap(item, 0) for item in node.items) + "]", _PRIMARY
        case Subquery():
            return f"({_select(node.select)})", _PRIMARY
    raise TypeError(f"not an expression node: {node!r}")


def _item(item: SelectItem) -> str:
    expr = item.expr
    text = _wrap(expr.path, _PRIMARY) + ".*" if isinstance(expr, PathStar) else _wrap(expr, 0)
    if item.alias:
        text += " AS " + ".".join(_name(part) for part in item.alias)
    return text


def _select(select: Select) -> str:
    if select.value:
        text = "SELECT VALUE " + _item(select.items[0])
    else:
        text = "SELECT " + ", ".join(_item(item) for item in select.items)
    if select.source is not None:
        text += " FROM " + _wrap(select.source, 0)
    if select.where is not None:
        text += " WHERE " + _wrap(select.where, 0)
    return text


def format_sql(node: Rule | Select | Expr) -> str:
    """Canonical SQL for a parsed rule (one clause per line), SELECT body, or expression."""
    if isinstance(node, Select):
        return _select(node)
    if not isinstance(node, Rule):
        return _wrap(node, 0)
    lines = []
    if node.assignments:
        lines.append("SET " + ", ".join(f"@{a.name} = {_wrap(a.expr, 0)}" for a in node.assignments))
    select = node.select
    lines.append(_select(Select(select.value, select.items, None, None)))
    if node.topic is not None:
        lines.append("FROM " + _quote(node.topic))
    if select.where is not None:
        lines.append("WHERE " + _wrap(select.where, 0))
    return "\n".join(lines)
