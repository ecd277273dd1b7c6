"""Compile a parsed rule once into closures with AWS's typing and Undefined rules; messages only run closures."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from gateway.rules.ast import (
    OPERATORS,
    UNDEFINED,
    V1,
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
    Star,
    Subquery,
    Unary,
    Var,
    fix_v1,
    fix_v2,
    is_true,
    logical_not,
    negate,
    sql_eq,
)
from gateway.rules.functions import SIGNATURES, Signature, caster
from gateway.rules.tokens import SqlOutputError

if TYPE_CHECKING:
    from gateway.rules import EvalContext

__all__ = ["NO_VARIABLES", "CompiledStatement", "Env", "Fn", "compile_expression", "compile_statement"]

U = UNDEFINED
Fn = Callable[[Any, "Env"], Any]
NO_VARIABLES: Mapping[str, Any] = MappingProxyType({})
# What a built-in may raise on odd input; AWS answers Undefined ("functions given bad types return Undefined").
_FAILURES = (ArithmeticError, ValueError, TypeError, LookupError, RecursionError, re.error)


class Env:
    """Per-evaluation state shared by a rule's closures: the message context and the SET variables."""

    __slots__ = ("ctx", "vars")

    def __init__(self, ctx: EvalContext, variables: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.vars = variables


_NUMERIC_FAST = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "+": operator.add, "-": operator.sub, "*": operator.mul,
}  # fmt: skip


def _against_number(name: str, left: Fn, constant: Any, op: Callable[[Any, Any], Any], fix: Callable[[Any], Any]) -> Fn:
    """`x > 50`, `x * 1.8`: a number on the left takes Python's operator directly; anything else the full rules."""
    fast = _NUMERIC_FAST[name]
    if name in ("<", "<=", ">", ">="):
        fix = _same

    def against_number(doc: Any, env: Env) -> Any:
        value = left(doc, env)
        kind = type(value)
        if kind is int or kind is float:
            try:
                return fix(fast(value, constant))
            except OverflowError:  # a huge Int meeting a Decimal
                return U
        return op(value, constant)

    return against_number


def _same(value: Any) -> Any:
    return value


def _const(value: Any) -> Fn:
    return lambda doc, env: value


def path_getter(base: Fn | None, steps: tuple[str | int, ...]) -> Fn:
    """The one JSON-path walker: names step into objects, indexes into arrays; anything else is Undefined.

    Paths of one to three names from the document are unrolled, as they are most of what rules read.
    """
    if base is None and all(isinstance(step, str) for step in steps) and len(steps) <= 3:
        if len(steps) == 1:
            (k1,) = steps
            return lambda doc, env: doc.get(k1, U) if type(doc) is dict else U
        if len(steps) == 2:
            k1, k2 = steps

            def get2(doc: Any, env: Env) -> Any:
                if type(doc) is dict and type(value := doc.get(k1)) is dict:
                    return value.get(k2, U)
                return U

            return get2
        k1, k2, k3 = steps

        def get3(doc: Any, env: Env) -> Any:
            if type(doc) is dict and type(value := doc.get(k1)) is dict and type(value := value.get(k2)) is dict:
                return value.get(k3, U)
            return U

        return get3
    plan = tuple((step, 0) if isinstance(step, str) else (None, step) for step in steps)

    def walk(doc: Any, env: Env) -> Any:
        value = doc if base is None else base(doc, env)
        for name, index in plan:
            if name is not None:
                if type(value) is not dict:
                    return U
                value = value.get(name, U)
            elif type(value) is list and index < len(value):
                value = value[index]
            else:
                return U
        return value

    return walk


def _auto_key(expr: Expr | PathStar, position: int) -> str:
    """The output key of an unaliased item: a path's last name, a function's name, else `_<position>`."""
    if isinstance(expr, Path):
        names = [step for step in expr.steps if isinstance(step, str)]
        if names:
            return names[-1]
        if expr.base is not None:
            return _auto_key(expr.base, position)
    if isinstance(expr, Call | Var):
        return expr.name
    return f"_{position}"


class _Compiler:
    def __init__(self, version: str) -> None:
        self.version = version
        self.v2 = version != V1
        self.fix = fix_v2 if self.v2 else fix_v1
        self.ops = OPERATORS[self.v2]
        self.nested = 0  # inside a nested SELECT, '*' is the current element rather than the raw payload
        self.source = ""  # the statement's text, for positioned evaluation errors

    def expr(self, node: Expr | PathStar) -> Fn:
        match node:
            case Literal():
                return self._literal(node)
            case Path():
                return self._path(node)
            case Var():
                return self._var(node)
            case Star():
                return self._star(node)
            case Unary():
                return self._unary(node)
            case Binary():
                return self._binary(node)
            case Cast():
                return self._cast(node)
            case Call():
                return self._call(node)
            case Case():
                return self._case(node)
            case ObjectLit():
                return self._object(node)
            case ArrayLit():
                return self._array(node)
            case Subquery():
                return self._subquery(node)
            case PathStar():
                return self.expr(node.path)

    def _literal(self, node: Literal) -> Fn:
        return _const(self.fix(node.value))

    def _path(self, node: Path) -> Fn:
        return path_getter(None if node.base is None else self.expr(node.base), node.steps)

    def _var(self, node: Var) -> Fn:
        name = node.name
        return lambda doc, env: env.vars.get(name, U)

    def _star(self, node: Star, raw: bool = False) -> Fn:
        if self.nested:
            return lambda doc, env: doc
        if raw:  # encode(*, 'base64') encodes the payload bytes as published, JSON or not
            return lambda doc, env: env.ctx.payload
        return lambda doc, env: U if type(doc) is bytes else doc

    def _unary(self, node: Unary) -> Fn:
        if node.op == "-" and isinstance(node.operand, Literal):
            return _const(self.fix(negate(node.operand.value)))
        inner = self.expr(node.operand)
        if node.op == "NOT":
            return lambda doc, env: logical_not(inner(doc, env))
        fix = self.fix
        return lambda doc, env: fix(negate(inner(doc, env)))

    def _binary(self, node: Binary) -> Fn:
        op = self.ops[node.op]
        left = self.expr(node.left)
        if isinstance(node.right, Literal):  # `temp > 50`: no call for the constant side
            constant = self.fix(node.right.value)
            if node.op in _NUMERIC_FAST and type(constant) in (int, float):
                return _against_number(node.op, left, constant, op, self.fix)
            return lambda doc, env: op(left(doc, env), constant)
        right = self.expr(node.right)
        if node.op in ("AND", "OR"):
            decided = node.op == "OR"  # AND of two booleans is True only when both are; OR is False only then

            def logic(doc: Any, env: Env) -> Any:
                a, b = left(doc, env), right(doc, env)
                if (a is True or a is False) and (b is True or b is False):
                    return decided if a is decided or b is decided else not decided
                return op(a, b)

            return logic
        return lambda doc, env: op(left(doc, env), right(doc, env))

    def _cast(self, node: Cast) -> Fn:
        inner, convert, fix = self.expr(node.expr), caster(node.type_name), self.fix

        def cast(doc: Any, env: Env) -> Any:
            try:
                return fix(convert(inner(doc, env)))
            except _FAILURES:
                return U

        return cast

    def _call(self, node: Call) -> Fn:
        spec = SIGNATURES[node.name.lower()]
        if spec.name == "sql_version":
            return _const(self.version)
        args = tuple(
            self._star(arg, raw=spec.raw_star) if isinstance(arg, Star) else self.expr(arg) for arg in node.args
        )
        convs = tuple(spec.params[i] if i < len(spec.params) else None for i in range(len(args)))
        return _invoke(spec, args, convs, self.fix)

    def _case(self, node: Case) -> Fn:
        arms = tuple((self.expr(w.cond), self.expr(w.result)) for w in node.whens)
        default = self.expr(node.default) if node.default is not None else _const(U)
        if node.subject is None:

            def searched(doc: Any, env: Env) -> Any:
                for cond, result in arms:
                    if is_true(cond(doc, env)):
                        return result(doc, env)
                return default(doc, env)

            return searched
        subject = self.expr(node.subject)

        def simple(doc: Any, env: Env) -> Any:
            value = subject(doc, env)
            if value is U:
                return U
            for cond, result in arms:
                candidate = cond(doc, env)
                if candidate is not U and sql_eq(value, candidate):
                    return result(doc, env)
            return default(doc, env)

        return simple

    def _object(self, node: ObjectLit) -> Fn:
        members = tuple((key, self.expr(value)) for key, value in node.items)

        def build(doc: Any, env: Env) -> Any:
            out = {}
            for key, fn in members:
                value = fn(doc, env)
                if value is not U:
                    out[key] = value
            return out

        return build

    def _array(self, node: ArrayLit) -> Fn:
        items = tuple(self.expr(item) for item in node.items)
        # Undefined elements are left out, as Undefined members are (unconfirmed for arrays).
        return lambda doc, env: [v for v in (fn(doc, env) for fn in items) if v is not U]

    def _subquery(self, node: Subquery) -> Fn:
        source = self.expr(node.select.source) if node.select.source is not None else _const(U)
        self.nested += 1
        try:
            where = self.expr(node.select.where) if node.select.where is not None else None
            project = self.select(node.select)
        finally:
            self.nested -= 1

        def query(doc: Any, env: Env) -> Any:
            rows = source(doc, env)
            if type(rows) is list:  # one result per element that passes WHERE
                out = []
                for row in rows:
                    if where is None or is_true(where(row, env)):
                        value = project(row, env)
                        if value is not U:
                            out.append(value)
                return out
            if type(rows) is dict and (where is None or is_true(where(rows, env))):
                return project(rows, env)
            return U

        return query

    def select(self, node: Select) -> Fn:
        """The projection of a SELECT list (or SELECT VALUE) over one document."""
        if node.value:
            value = self.expr(node.items[0].expr)
            if self.v2 or self.nested:
                return value

            source, offset = self.source, node.items[0].expr.pos

            def single(doc: Any, env: Env) -> Any:
                # Only 2016-03-23 added "arrays as top-level output" (AWS's SQL versions page): no silent empty here.
                result = value(doc, env)
                if type(result) is list:
                    raise SqlOutputError(
                        "SELECT VALUE gave an array, which SQL version 2015-10-08 cannot output as the message; "
                        "use awsIotSqlVersion 2016-03-23",
                        sql=source,
                        offset=offset,
                    )
                return result

            return single
        items = node.items
        if len(items) == 1 and isinstance(items[0].expr, Star):
            return lambda doc, env: doc
        plan: list[tuple[str | tuple[str, ...] | None, Fn]] = []
        for position, item in enumerate(items, start=1):
            if isinstance(item.expr, Star):
                plan.append((None, lambda doc, env: doc))
            elif isinstance(item.expr, PathStar):
                plan.append((None, self.expr(item.expr.path)))
            else:
                alias = item.alias or (_auto_key(item.expr, position),)
                plan.append((alias[0] if len(alias) == 1 else alias, self.expr(item.expr)))
        return _projection(tuple(plan))


def _projection(plan: tuple[tuple[str | tuple[str, ...] | None, Fn], ...]) -> Fn:
    if all(type(key) is str for key, _ in plan):
        pairs = tuple((str(key), fn) for key, fn in plan)

        def flat(doc: Any, env: Env) -> Any:
            out = {}
            for key, fn in pairs:
                value = fn(doc, env)
                if value is not U:
                    out[key] = value
            return out

        return flat

    def general(doc: Any, env: Env) -> Any:
        out: dict[str, Any] = {}
        for key, fn in plan:
            value = fn(doc, env)
            if key is None:  # '*' or a.b.*: merge the object's members; anything else adds nothing
                if type(value) is dict:
                    out.update(value)
            elif value is U:
                continue
            elif type(key) is str:
                out[key] = value
            else:  # AS a.b.c builds nested objects, copying any it reaches (they may belong to the payload)
                target = out
                for part in key[:-1]:
                    inner = target.get(part)
                    target[part] = inner = dict(inner) if type(inner) is dict else {}
                    target = inner
                target[key[-1]] = value
        return out

    return general


def _invoke(spec: Signature, args: tuple[Fn, ...], convs: tuple[Any, ...], fix: Callable[[Any], Any]) -> Fn:
    """A call closure: evaluate and convert the arguments (Undefined short-circuits), run, map failures to Undefined."""
    impl, context = spec.impl, spec.context
    if not args:

        def call0(doc: Any, env: Env) -> Any:
            try:
                return fix(impl(env) if context else impl())
            except _FAILURES:
                return U

        return call0
    if len(args) == 1 and convs[0] is not None and not context:
        (arg,), (conv,) = args, convs

        def call1(doc: Any, env: Env) -> Any:
            value = conv(arg(doc, env))
            if value is U:
                return U
            try:
                return fix(impl(value))
            except _FAILURES:
                return U

        return call1
    pairs = tuple(zip(args, convs, strict=True))

    def call(doc: Any, env: Env) -> Any:
        values = []
        for arg, conv in pairs:
            value = arg(doc, env)
            if conv is not None:
                value = conv(value)
                if value is U:
                    return U
            values.append(value)
        try:
            return fix(impl(env, *values) if context else impl(*values))
        except _FAILURES:
            return U

    return call


@dataclass(frozen=True, slots=True)
class CompiledStatement:
    """A rule's closures: SET assignments in order, the WHERE condition, and the SELECT projection."""

    v2: bool
    assignments: tuple[tuple[str, Fn], ...]
    where: Fn | None
    project: Fn


def compile_statement(rule: Rule, version: str, source: str = "") -> CompiledStatement:
    """Closures for a parsed rule (the parser has already checked names, arity and version features)."""
    compiler = _Compiler(version)
    compiler.source = source
    return CompiledStatement(
        compiler.v2,
        tuple((a.name, compiler.expr(a.expr)) for a in rule.assignments),
        compiler.expr(rule.select.where) if rule.select.where is not None else None,
        compiler.select(rule.select),
    )


def compile_expression(node: Expr, version: str) -> Fn:
    """A closure for one expression evaluated against the payload document (used by substitution templates)."""
    return _Compiler(version).expr(node)
