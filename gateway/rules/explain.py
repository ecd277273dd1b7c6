"""Why a rule's WHERE did not match one message: which operands were Undefined, and why (pure).

`edgesim rules test` and the dashboard's test box print these lines; the engine never calls this.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gateway.rules.ast import UNDEFINED, V1, Binary, Call, Case, Cast, Expr, Literal, Path, Unary, Var
from gateway.rules.compiler import NO_VARIABLES, Env, compile_expression
from gateway.rules.printer import format_sql

if TYPE_CHECKING:
    from gateway.rules import CompiledRule, EvalContext

__all__ = ["explain_where"]

_TYPE_NAMES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def _show(value: Any) -> str:
    if value is UNDEFINED:
        return "Undefined"
    if value is None:
        return "null"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type(value: Any) -> str:
    return "null" if value is None else _TYPE_NAMES.get(type(value), type(value).__name__)


def _missing_path(node: Path, doc: Any) -> str:
    """Which step of a payload path is missing (only for paths rooted at the payload)."""
    value, walked = doc, ""
    for step in node.steps:
        here = f"{walked}.{step}" if walked and isinstance(step, str) else f"{walked}[{step}]" if walked else str(step)
        if isinstance(step, str):
            if not isinstance(value, dict):
                return f"{walked or 'the payload'} is {_type(value)}, not an object with a key {step!r}"
            if step not in value:
                where = f"`{walked}`" if walked else "the payload"
                return f"{where} has no key {step!r}"
            value = value[step]
        else:
            if not isinstance(value, list):
                return f"`{walked}` is {_type(value)}, not an array"
            if step >= len(value):
                return f"`{walked}` has {len(value)} element(s), so [{step}] is out of range"
            value = value[step]
        walked = here
    return "it is Undefined"


class _Explainer:
    def __init__(self, version: str, doc: Any, env: Env) -> None:
        self.version = version
        self.doc = doc
        self.env = env
        self.lines: list[str] = []

    def value(self, node: Expr) -> Any:
        try:
            return compile_expression(node, self.version)(self.doc, self.env)
        except Exception as exc:  # an external function with no hook here: say so instead of failing
            return f"<error: {exc}>"

    def walk(self, node: Expr) -> None:
        """Report the innermost Undefined operands under `node` (whose own value is Undefined or false)."""
        text = format_sql(node)
        match node:
            case Path(base=None):
                if isinstance(self.doc, bytes):
                    self.lines.append(f"`{text}` is Undefined: the payload is not JSON, so it has no fields")
                else:
                    self.lines.append(f"`{text}` is Undefined: {_missing_path(node, self.doc)}")
                return
            case Var(name=name):
                why = "its SET expression is Undefined" if name in self.env.vars else "no SET assigns it"
                self.lines.append(f"`{text}` is Undefined: {why}")
                return
            case Binary(op=op, left=left, right=right):
                values = [self.value(left), self.value(right)]
                undefined = [side for side, value in zip((left, right), values, strict=True) if value is UNDEFINED]
                for side in undefined:
                    self.walk(side)
                if not undefined:
                    self.lines.append(
                        f"`{text}` is Undefined: {op} cannot combine {_type(values[0])} {_show(values[0])} "
                        f"and {_type(values[1])} {_show(values[1])}"
                    )
                    if op.upper() in ("AND", "OR"):
                        for side, value in zip((left, right), values, strict=True):
                            if value is False:
                                _explain_false(self, side)
                return
            case Unary(operand=operand) | Cast(expr=operand):
                if self.value(operand) is UNDEFINED:
                    self.walk(operand)
                else:
                    self.lines.append(f"`{text}` is Undefined: its operand is {_show(self.value(operand))}")
                return
            case Call(name=name, args=args):
                undefined = [a for a in args if self.value(a) is UNDEFINED]
                for arg in undefined:
                    self.walk(arg)
                if not undefined:
                    shown = ", ".join(f"{_type(v)} {_show(v)}" for v in (self.value(a) for a in args))
                    self.lines.append(f"`{text}` is Undefined: {name}() does not accept ({shown})")
                return
            case Case(subject=subject) if subject is not None and self.value(subject) is UNDEFINED:
                self.walk(subject)
                return
        self.lines.append(f"`{text}` is Undefined")


def explain_where(compiled: CompiledRule, ctx: EvalContext) -> list[str]:
    """Lines saying why WHERE is not true for this message (empty when it is true or there is no WHERE)."""
    rule = compiled.rule
    where = rule.select.where
    if where is None:
        return []
    version = compiled.sql_version
    doc = ctx.document_v1 if version == V1 else ctx.document_v2
    variables: dict[str, Any] = {}
    env = Env(ctx, variables if rule.assignments else NO_VARIABLES)
    for assignment in rule.assignments:
        try:
            variables[assignment.name] = compile_expression(assignment.expr, version)(doc, env)
        except Exception:
            variables[assignment.name] = UNDEFINED
    explainer = _Explainer(version, doc, env)
    lines: list[str] = []
    if isinstance(doc, bytes):
        lines.append("the payload is not JSON: field references are Undefined (encode(*, 'base64') reads raw bytes)")
    result = explainer.value(where)
    if result is True:
        return []
    shown = "Undefined" if result is UNDEFINED else _show(result)
    lines.append(f"WHERE {format_sql(where)} is {shown}, so the rule does not fire")
    explainer.walk(where) if result is UNDEFINED else _explain_false(explainer, where)
    return lines + explainer.lines


def _explain_false(explainer: _Explainer, where: Expr) -> None:
    """A false (or null) WHERE: show the operands of a comparison, or the false parts of AND/OR."""
    if not isinstance(where, Binary):
        explainer.lines.append(f"`{format_sql(where)}` is {_show(explainer.value(where))}")
        return
    left, right = explainer.value(where.left), explainer.value(where.right)
    if where.op.upper() in ("AND", "OR"):
        for side, value in ((where.left, left), (where.right, right)):
            if value is UNDEFINED:
                explainer.walk(side)
            elif value is not True:
                _explain_false(explainer, side)
        return
    shown = [
        f"`{format_sql(side)}` is {_show(value)}"
        for side, value in ((where.left, left), (where.right, right))
        if not isinstance(side, Literal)
    ]
    if shown:
        explainer.lines.append("; ".join(shown))
