"""A fleet file's text as plain data plus the 1-based line of every field path (YAML, or TOML without lines), and the
errors that point into it."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class FleetProblem:
    file: str
    line: int  # 1-based; 0 when unknown (TOML)
    path: str  # e.g. device_types[0].payload.temperature.period
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class FleetFileError(ValueError):
    """A fleet file that does not load; `str()` gives one `file:line: path: message` line per problem."""

    def __init__(self, problems: Sequence[FleetProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line)
        super().__init__("\n".join(str(p) for p in self.problems))


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_path(loc: Loc) -> str:
    out: list[str] = []
    for item in loc:
        if isinstance(item, int):
            out.append(f"[{item}]")
        elif _PLAIN_KEY.fullmatch(item):
            out.append(f".{item}" if out else item)
        else:
            out.append(f"[{json.dumps(item)}]")
    return "".join(out)


def line_of(lines: Mapping[Loc, int], loc: Loc) -> int:
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return 0


# --- reading YAML with line numbers ----------------------------------------------------------------

_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{kind}" for kind in ("null", "bool", "int", "float"))
_STRING_TAGS = frozenset({"tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"})
_MAX_NODES = 1_000_000  # aliases can expand a small file enormously


class _Converter:
    """YAML nodes to plain data, recording the 1-based line of every path (a key's line for mapping entries)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Loc, int] = {}
        self.problems: list[FleetProblem] = []
        self.constructor = yaml.constructor.SafeConstructor()
        self.active: set[int] = set()
        self.nodes = 0

    def fail(self, node: yaml.Node, path: Loc, message: str) -> None:
        self.problems.append(FleetProblem(self.source, node.start_mark.line + 1, format_path(path), message))

    def convert(self, node: yaml.Node, path: Loc, line: int) -> object:
        self.lines[path] = line
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            self.fail(node, path, f"more than {_MAX_NODES} values after expanding aliases")
            raise FleetFileError(self.problems)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        self.enter(node, path)
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path, frozenset())
            return [self.convert(item, (*path, i), item.start_mark.line + 1) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def enter(self, node: yaml.Node, path: Loc) -> None:
        if id(node) in self.active:
            self.fail(node, path, "recursive alias")
            raise FleetFileError(self.problems)
        self.active.add(id(node))

    def scalar(self, node: yaml.ScalarNode, path: Loc) -> object:
        if node.tag in _STRING_TAGS:
            return node.value
        if node.tag in _SCALAR_TAGS:
            return self.constructor.yaml_constructors[node.tag](self.constructor, node)
        self.fail(node, path, f"unsupported YAML tag {node.tag}")
        return None

    def mapping(self, node: yaml.MappingNode, path: Loc, skip: frozenset[str]) -> dict[str, object]:
        merges = [value for key, value in node.value if key.tag == _MERGE]
        own = [(key, value) for key, value in node.value if key.tag != _MERGE]
        taken = set(skip) | {key.value for key, _ in own if isinstance(key, yaml.ScalarNode)}
        merged: dict[str, object] = {}
        for source in (
            item for merge in merges for item in (merge.value if isinstance(merge, yaml.SequenceNode) else [merge])
        ):
            if not isinstance(source, yaml.MappingNode):
                self.fail(source, path, "'<<' merges a mapping or a list of mappings")
                continue
            self.enter(source, path)
            try:
                part = self.mapping(source, path, frozenset(taken))  # earlier merges and own keys win
            finally:
                self.active.discard(id(source))
            taken.update(part)
            merged.update(part)
        out: dict[str, object] = {}
        first: dict[str, int] = {}
        for key, value in own:
            if not isinstance(key, yaml.ScalarNode):
                self.fail(key, path, "mapping keys must be plain strings")
                continue
            line = key.start_mark.line + 1
            if key.value in skip:
                continue
            if key.value in first:
                self.fail(key, (*path, key.value), f"duplicate key (first defined on line {first[key.value]})")
                continue
            first[key.value] = line
            out[key.value] = self.convert(value, (*path, key.value), line)
        return {**merged, **out}


def read_yaml(text: str, source: str) -> tuple[object, dict[Loc, int], list[FleetProblem]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark, message = exc.problem_mark or exc.context_mark, exc.problem or exc.context or "syntax error"
        if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
            message += f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise FleetFileError([FleetProblem(source, mark.line + 1 if mark else 0, "", f"YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise FleetFileError([FleetProblem(source, 0, "", f"YAML: {exc}")]) from None
    if root is None:
        raise FleetFileError([FleetProblem(source, 0, "", "the file is empty; it needs 'fleet' and 'device_types'")])
    converter = _Converter(source)
    data = converter.convert(root, (), root.start_mark.line + 1)
    return data, converter.lines, converter.problems


def read_toml(text: str, source: str) -> tuple[object, dict[Loc, int], list[FleetProblem]]:
    try:
        return tomllib.loads(text), {}, []
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column \d+\)$", str(exc))
        message = str(exc)[: match.start()].strip() if match else str(exc)
        raise FleetFileError([FleetProblem(source, int(match[1]) if match else 0, "", f"TOML: {message}")]) from None
