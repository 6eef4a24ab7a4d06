"""The part of IoT Hub's query language that device twins need.

Supported: ``SELECT * | COUNT() [AS name] | path [AS name], ... FROM devices [WHERE condition]`` where a
condition combines comparisons (``= != <> < > <= >=``, ``IN [...]``, ``NOT IN``), ``IS_DEFINED(path)``,
``STARTSWITH(path, 'x')``, ``ENDSWITH(path, 'x')`` with ``AND``, ``OR``, ``NOT`` and parentheses. Paths are
twin fields: ``deviceId``, ``status``, ``tags.site``, ``properties.reported.fw``... Anything else is refused
with a message naming what is unsupported, instead of being half-evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulator.hub.service_errors import ServiceError

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<op><>|!=|<=|>=|=|<|>|\(|\)|\[|\]|,|\*)
    | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*)
    )""", re.VERBOSE)

_UNDEFINED = object()
Item = dict[str, Any]
Predicate = Callable[[Item], bool]


def _error(message: str) -> ServiceError:
    return ServiceError(400, f"query: {message}", "ArgumentInvalid")


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise _error(f"cannot read {text[pos:pos + 20]!r} (position {pos})")
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "string":
            quote = value[0]
            out.append(("value", value[1:-1].replace(quote * 2, quote)))
        elif kind == "number":
            out.append(("value", float(value) if any(c in value for c in ".eE") else int(value)))
        elif kind == "name" and value.lower() in ("true", "false", "null"):
            out.append(("value", {"true": True, "false": False, "null": None}[value.lower()]))
        elif kind == "name" and value.upper() in ("SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "AS", "IN",
                                                    "GROUP", "ORDER", "BY", "TOP"):
            out.append(("keyword", value.upper()))
        else:
            out.append((kind, value))
    return out


def lookup(item: Item, path: str) -> Any:
    value: Any = item
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _UNDEFINED
        value = value[part]
    return value


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is _UNDEFINED or right is _UNDEFINED:
        return False
    if op in ("=", "!=", "<>"):
        equal = (left == right and type(left) is type(right)) or (
            isinstance(left, int | float) and isinstance(right, int | float) and not isinstance(left, bool)
            and not isinstance(right, bool) and left == right)
        return equal if op == "=" else not equal
    comparable = (isinstance(left, str) and isinstance(right, str)) or (
        isinstance(left, int | float) and isinstance(right, int | float)
        and not isinstance(left, bool) and not isinstance(right, bool))
    if not comparable:
        return False
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]


@dataclass
class Query:
    """A parsed query: what to select and which twins qualify."""

    count_alias: str | None
    projection: list[tuple[str, str]] | None   # (path, output name); None = SELECT *
    where: Predicate
    top: int | None = None

    def run(self, items: list[Item]) -> tuple[str, list[Any]]:
        """(x-ms-item-type, result items) over the twin documents ``items``."""
        selected = [item for item in items if self.where(item)]
        if self.top is not None:
            selected = selected[:self.top]
        if self.count_alias is not None:
            return "raw", [{self.count_alias: len(selected)}]
        if self.projection is None:
            return "twin", selected
        rows = []
        for item in selected:
            row = {}
            for path, name in self.projection:
                value = lookup(item, path)
                if value is not _UNDEFINED:
                    row[name] = value
            rows.append(row)
        return "raw", rows


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        token = self.peek()
        if token is None:
            raise _error("the query ends too early")
        self.pos += 1
        return token

    def accept(self, kind: str, value: Any = None) -> bool:
        token = self.peek()
        if token and token[0] == kind and (value is None or token[1] == value):
            self.pos += 1
            return True
        return False

    def expect(self, kind: str, value: Any = None) -> Any:
        token = self.take()
        if token[0] != kind or (value is not None and token[1] != value):
            wanted = value if value is not None else kind
            raise _error(f"expected {wanted}, found {token[1]!r}")
        return token[1]

    def parse(self) -> Query:
        self.expect("keyword", "SELECT")
        top = None
        if self.accept("keyword", "TOP"):
            top = self.expect("value")
            if not isinstance(top, int) or top < 0:
                raise _error("TOP needs a non-negative integer")
        count_alias, projection = self.select_list()
        self.expect("keyword", "FROM")
        source = self.expect("name")
        if source.lower() != "devices":
            raise _error(f"only FROM devices is supported (device twins), not {source!r}")
        where: Predicate = lambda item: True  # noqa: E731
        if self.accept("keyword", "WHERE"):
            where = self.or_expr()
        token = self.peek()
        if token is not None:
            if token == ("keyword", "GROUP") or token == ("keyword", "ORDER"):
                raise _error(f"{token[1]} BY is not supported by the emulator")
            raise _error(f"unexpected {token[1]!r} after the query")
        return Query(count_alias, projection, where, top)

    def select_list(self) -> tuple[str | None, list[tuple[str, str]] | None]:
        if self.accept("op", "*"):
            return None, None
        token = self.peek()
        if token and token[0] == "name" and token[1].upper() == "COUNT":
            self.take()
            self.expect("op", "(")
            self.expect("op", ")")
            alias = self.expect("name") if self.accept("keyword", "AS") else "$1"
            return alias, None
        projection = []
        while True:
            path = self.expect("name")
            name = self.expect("name") if self.accept("keyword", "AS") else path.split(".")[-1]
            projection.append((path, name))
            if not self.accept("op", ","):
                return None, projection

    def or_expr(self) -> Predicate:
        left = self.and_expr()
        while self.accept("keyword", "OR"):
            right = self.and_expr()
            left = (lambda a, b: lambda item: a(item) or b(item))(left, right)
        return left

    def and_expr(self) -> Predicate:
        left = self.not_expr()
        while self.accept("keyword", "AND"):
            right = self.not_expr()
            left = (lambda a, b: lambda item: a(item) and b(item))(left, right)
        return left

    def not_expr(self) -> Predicate:
        if self.accept("keyword", "NOT"):
            inner = self.not_expr()
            return lambda item: not inner(item)
        if self.accept("op", "("):
            inner = self.or_expr()
            self.expect("op", ")")
            return inner
        return self.condition()

    def condition(self) -> Predicate:
        kind, value = self.take()
        if kind == "name" and self.peek() == ("op", "("):
            return self.function(value)
        left = self.operand(kind, value)
        negate = self.accept("keyword", "NOT")
        if self.accept("keyword", "IN"):
            options = self.value_list()
            return lambda item: (any(_compare("=", left(item), o) for o in options)) != negate
        if negate:
            raise _error("NOT must be followed by IN here")
        op_kind, op = self.take()
        if op_kind != "op" or op not in ("=", "!=", "<>", "<", ">", "<=", ">="):
            raise _error(f"expected a comparison operator, found {op!r}")
        right = self.operand(*self.take())
        return lambda item: _compare(op, left(item), right(item))

    def function(self, name: str) -> Predicate:
        self.expect("op", "(")
        path = self.expect("name")
        upper = name.upper()
        if upper == "IS_DEFINED":
            self.expect("op", ")")
            return lambda item: lookup(item, path) is not _UNDEFINED
        if upper in ("STARTSWITH", "ENDSWITH"):
            self.expect("op", ",")
            text = self.expect("value")
            self.expect("op", ")")
            if not isinstance(text, str):
                raise _error(f"{upper} needs a string, got {text!r}")
            method = str.startswith if upper == "STARTSWITH" else str.endswith
            return lambda item: isinstance(v := lookup(item, path), str) and method(v, text)
        raise _error(f"function {name!r} is not supported (IS_DEFINED, STARTSWITH, ENDSWITH are)")

    def operand(self, kind: str, value: Any) -> Callable[[Item], Any]:
        if kind == "value":
            return lambda item: value
        if kind == "name":
            return lambda item: lookup(item, value)
        raise _error(f"expected a field or a value, found {value!r}")

    def value_list(self) -> list[Any]:
        self.expect("op", "[")
        values = []
        if self.accept("op", "]"):
            return values
        while True:
            values.append(self.expect("value"))
            if self.accept("op", "]"):
                return values
            self.expect("op", ",")


def parse_query(text: Any) -> Query:
    """Parse an IoT Hub query; raises ServiceError 400 with the reason when it is not supported."""
    if not isinstance(text, str) or not text.strip():
        raise _error('the body needs a "query" string such as "SELECT * FROM devices"')
    if len(text) > 8192:
        raise _error("the query is longer than IoT Hub's 8 KB limit")
    return _Parser(text).parse()
