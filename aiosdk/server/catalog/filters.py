"""Catalog queries: the ``filters`` parameter, parsed, validated and compiled to SQL over
:class:`~.models.Node` (SQLite and PostgreSQL), and ``distinct``. Sorting and keyset cursors are
in :mod:`.ordering` (re-exported here).

Interface (what the nodes and listings code calls)::

    parse_filters(raw: str | None) -> list[Filter]           # InvalidRequestError when malformed
    where(filters: Sequence[Filter], dialect: str) -> ColumnElement[bool]
    parse_sort(fields: Iterable[str]) -> list[SortField]
    order_columns(sort, dialect, reverse=False) -> list[OrderSpec]
    order_by(order) -> list                                   # for .order_by(*...)
    select_values(order) -> list                              # select alongside the rows
    cursor_of(order, values) -> list[Any]
    after_cursor(order, cursor) -> ColumnElement[bool]        # rows strictly after the cursor
    encode_cursor(order, cursor, *, filters=(), scope="") -> str
    decode_cursor(token, order, *, filters=(), scope="") -> list[Any]   # InvalidRequestError
    await bound_regex_time(session, filters)                  # before the queries
    await distinct(session, base_where, dialect, metadata_keys=..., structure_families=...,
                   specs=..., counts=...) -> dict                        # the API's JSON shape

``dialect`` is the engine's ``dialect.name``: ``"sqlite"`` or ``"postgresql"``.

The wire form (a JSON array of objects, all of which must hold)::

    {"op": "eq" | "noteq", "key": "a.b", "value": scalar}
    {"op": "lt" | "le" | "gt" | "ge", "key": "a.b", "value": number | string}
    {"op": "contains", "key": "a.b", "value": scalar}
    {"op": "in" | "notin", "key": "a.b", "values": [scalar, ...]}
    {"op": "fulltext", "text": "some words"}
    {"op": "regex", "key": "a.b", "pattern": "^r[0-9]+", "case_sensitive": true}
    {"op": "keypresent", "key": "a.b", "exists": true}
    {"op": "like", "key": "a.b", "pattern": "run\\_%"}
    {"op": "specs", "include": ["run"], "exclude": ["old"]}
    {"op": "structure_family", "value": "array"}

A scalar is a string, a number, a boolean or null. Keys are dotted paths through nested objects
(1 to 16 segments of 1 to 255 characters; a segment never indexes an array). Limits: at most 32
filters, strings (values, patterns, text) at most 1000 characters, at most 1000 ``values``,
integers within 64 bits; no NaN or infinities. Unknown members are refused.

Semantics
    - Equality is type-aware: ``1`` matches ``1`` and ``1.0`` but not ``"1"`` or ``true``;
      ``null`` matches JSON null only (not a missing key). ``noteq`` and ``notin`` are the exact
      negations of ``eq`` and ``in``: they also match nodes without the key.
    - ``lt``/``le``/``gt``/``ge`` match values of the same kind only: a number with numbers, a
      string with strings (by code point).
    - ``contains``: the value is a JSON array with an element equal (type-aware) to ``value``;
      never a substring, never a nested array's element.
    - ``fulltext``: every whitespace-separated word occurs, as a substring, in some string value
      anywhere in the metadata (nested objects and arrays included, keys not), case-insensitively
      by the database's ``lower()`` (ASCII letters always; other letters per the database:
      SQLite folds only ASCII).
    - ``regex``: string values in whose first 10,000 characters the pattern matches somewhere
      (a search, not a full match; ``$`` also matches at the 10,000th character). The syntax is
      the database's: the :mod:`regex` module's (``re``-compatible ``VERSION0``) on SQLite (a
      ``aiosdk_regexp`` function registered on every connection by :mod:`..storage.db`), POSIX
      ARE (``~``, ``~*``) on PostgreSQL; their common ground (literals, ``.``, classes,
      ``*+?{m,n}``, ``|``, groups, anchors, ``\\d\\s\\w``) means the same on both. A pattern
      the ``regex`` module refuses or warns about (``[[:alpha:]``) is a 400 up front; one only
      PostgreSQL refuses is a 400 from the database (an SQLSTATE 22 error). Matching is bounded
      in time (a pattern like ``^(a+)+$`` backtracks exponentially): past 2 s of matching per
      statement on SQLite, 5 s per statement on PostgreSQL (:func:`bound_regex_time`), the
      request is a 400 saying the regular expression took too long.
    - ``like``: SQL ``LIKE`` on string values, case-sensitive on both databases: ``%`` any run,
      ``_`` one character, a backslash escapes the next character (``\\%``, ``\\_``, ``\\\\``).
    - ``keypresent``: whether the key is there (a JSON null counts as there).
    - ``specs``: every ``include`` is among the node's specs, no ``exclude`` is.
    - ``structure_family``: the node's structure family equals ``value``.

Everything is evaluated by the database; keys and values are always bound parameters.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import regex
from sqlalchemy import (
    ColumnElement,
    Integer,
    Numeric,
    String,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal_column,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import InvalidRequestError
from ..storage.db import REGEX_MAX_VALUE_LENGTH
from .models import Node
from .ordering import (
    JsonRef,
    OrderSpec,
    SortField,
    after_cursor,
    check_dialect,
    cursor_of,
    decode_cursor,
    encode_cursor,
    order_by,
    order_columns,
    parse_key,
    parse_sort,
    select_values,
    text_problem,
)

__all__ = [
    "MAX_DISTINCT_VALUES",
    "MAX_FILTERS",
    "MAX_STRING_LENGTH",
    "MAX_VALUES",
    "Comparison",
    "Contains",
    "Filter",
    "FullText",
    "In",
    "KeyPresent",
    "Like",
    "OrderSpec",
    "Regex",
    "SortField",
    "Specs",
    "StructureFamily",
    "after_cursor",
    "bound_regex_time",
    "cursor_of",
    "decode_cursor",
    "distinct",
    "encode_cursor",
    "order_by",
    "order_columns",
    "parse_filters",
    "parse_sort",
    "select_values",
    "where",
]

MAX_FILTERS = 32
MAX_STRING_LENGTH = 1000
MAX_VALUES = 1000
MAX_RAW_LENGTH = 200_000
MAX_SPECS = 100
MAX_DISTINCT_KEYS = 32
MAX_DISTINCT_VALUES = 10_000
"""The most values one list of a ``distinct`` answer holds (the most frequent)."""
POSTGRES_REGEX_TIMEOUT_MS = 5_000
SQLITE_REGEXP = "aiosdk_regexp"  # registered by storage.db._configure_sqlite

Scalar = str | int | float | bool | None


def _key_wire(segments: tuple[str, ...]) -> str:
    return ".".join(segments)


@dataclass(frozen=True)
class Comparison:
    """``eq``, ``noteq``, ``lt``, ``le``, ``gt``, ``ge``."""

    op: Literal["eq", "noteq", "lt", "le", "gt", "ge"]
    key: tuple[str, ...]
    value: Scalar

    def wire(self) -> dict[str, Any]:
        return {"op": self.op, "key": _key_wire(self.key), "value": self.value}


@dataclass(frozen=True)
class Contains:
    """The metadata value is an array with an element equal to ``value``."""

    key: tuple[str, ...]
    value: Scalar

    def wire(self) -> dict[str, Any]:
        return {"op": "contains", "key": _key_wire(self.key), "value": self.value}


@dataclass(frozen=True)
class In:
    """``in`` (equal to one of ``values``) or ``notin`` (missing, or none of them)."""

    op: Literal["in", "notin"]
    key: tuple[str, ...]
    values: tuple[Scalar, ...]

    def wire(self) -> dict[str, Any]:
        return {"op": self.op, "key": _key_wire(self.key), "values": list(self.values)}


@dataclass(frozen=True)
class FullText:
    """Every word occurs in some string value of the metadata, case-insensitively."""

    words: tuple[str, ...]

    def wire(self) -> dict[str, Any]:
        return {"op": "fulltext", "text": " ".join(self.words)}


@dataclass(frozen=True)
class Regex:
    """A string value in which ``pattern`` matches."""

    key: tuple[str, ...]
    pattern: str
    case_sensitive: bool

    def wire(self) -> dict[str, Any]:
        return {
            "op": "regex",
            "key": _key_wire(self.key),
            "pattern": self.pattern,
            "case_sensitive": self.case_sensitive,
        }


@dataclass(frozen=True)
class KeyPresent:
    """The key is there (``exists``) or not."""

    key: tuple[str, ...]
    exists: bool

    def wire(self) -> dict[str, Any]:
        return {"op": "keypresent", "key": _key_wire(self.key), "exists": self.exists}


@dataclass(frozen=True)
class Like:
    """A string value matching the SQL ``LIKE`` pattern (backslash escapes)."""

    key: tuple[str, ...]
    pattern: str

    def wire(self) -> dict[str, Any]:
        return {"op": "like", "key": _key_wire(self.key), "pattern": self.pattern}


@dataclass(frozen=True)
class Specs:
    """Every ``include`` among the node's specs, no ``exclude``."""

    include: tuple[str, ...]
    exclude: tuple[str, ...]

    def wire(self) -> dict[str, Any]:
        return {"op": "specs", "include": list(self.include), "exclude": list(self.exclude)}


@dataclass(frozen=True)
class StructureFamily:
    """The node's structure family is ``value``."""

    value: str

    def wire(self) -> dict[str, Any]:
        return {"op": "structure_family", "value": self.value}


Filter = Comparison | Contains | In | FullText | Regex | KeyPresent | Like | Specs | StructureFamily
"""One parsed filter; each has ``wire()``, its canonical JSON form."""

# Parsing.

_MEMBERS: dict[str, tuple[set[str], set[str]]] = {
    # op: (required members, optional members), besides "op"
    "eq": ({"key", "value"}, set()),
    "noteq": ({"key", "value"}, set()),
    "lt": ({"key", "value"}, set()),
    "le": ({"key", "value"}, set()),
    "gt": ({"key", "value"}, set()),
    "ge": ({"key", "value"}, set()),
    "contains": ({"key", "value"}, set()),
    "in": ({"key", "values"}, set()),
    "notin": ({"key", "values"}, set()),
    "fulltext": ({"text"}, set()),
    "regex": ({"key", "pattern"}, {"case_sensitive"}),
    "keypresent": ({"key"}, {"exists"}),
    "like": ({"key", "pattern"}, set()),
    "specs": (set(), {"include", "exclude"}),
    "structure_family": ({"value"}, set()),
}


def parse_filters(raw: str | None) -> list[Filter]:
    """The filters of the ``filters`` query parameter (JSON text; ``None`` or empty: none).

    :class:`InvalidRequestError`, naming the problem, for bad JSON, an unknown op, a missing or
    unknown member, a bad key, a value of the wrong type, or a limit exceeded.
    """
    if raw is None or not raw.strip():
        return []
    if len(raw) > MAX_RAW_LENGTH:
        raise InvalidRequestError(f"filters is at most {MAX_RAW_LENGTH} characters")
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"filters is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(document, list):
        raise InvalidRequestError("filters must be a JSON array of filter objects")
    if len(document) > MAX_FILTERS:
        raise InvalidRequestError(f"At most {MAX_FILTERS} filters")
    return [_parse_filter(index, item) for index, item in enumerate(document)]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_regex(pattern: str, case_sensitive: bool, where: str) -> None:
    """Refuse a pattern the SQLite matcher (:mod:`regex`, as :mod:`..storage.db` compiles it)
    refuses, or warns about (nothing is printed: a warning is the client's problem, a 400)."""
    flags = regex.VERSION0 | (0 if case_sensitive else regex.IGNORECASE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            regex.compile(pattern, flags)
        except (regex.error, RecursionError, OverflowError, ValueError) as exc:
            raise InvalidRequestError(f"{where}: invalid regular expression: {exc}") from None
    if caught:
        raise InvalidRequestError(
            f"{where}: ambiguous regular expression: {str(caught[0].message)[:200]}"
        )


def _parse_filter(index: int, item: Any) -> Filter:
    where = f"filters[{index}]"
    if not isinstance(item, dict):
        raise InvalidRequestError(f"{where} must be an object")
    op = item.get("op")
    if not isinstance(op, str) or op not in _MEMBERS:
        raise InvalidRequestError(
            f"{where}: unknown op {op!r}; expected one of {', '.join(_MEMBERS)}"
        )
    required, optional = _MEMBERS[op]
    members = set(item) - {"op"}
    if required - members:
        raise InvalidRequestError(f"{where} ({op}) needs {', '.join(sorted(required - members))}")
    if members - required - optional:
        raise InvalidRequestError(
            f"{where} ({op}): unknown members {', '.join(sorted(members - required - optional))}"
        )
    where = f"{where} ({op})"
    key = parse_key(item["key"], f"{where} key") if "key" in required else ()
    if op in ("eq", "noteq"):
        return Comparison(op, key, _scalar(item["value"], where))  # type: ignore[arg-type]
    if op in ("lt", "le", "gt", "ge"):
        value = _scalar(item["value"], where)
        if value is None or isinstance(value, bool):
            raise InvalidRequestError(f"{where}: value must be a number or a string")
        return Comparison(op, key, value)  # type: ignore[arg-type]
    if op == "contains":
        return Contains(key, _scalar(item["value"], where))
    if op in ("in", "notin"):
        values = item["values"]
        if not isinstance(values, list):
            raise InvalidRequestError(f"{where}: values must be an array of scalars")
        if len(values) > MAX_VALUES:
            raise InvalidRequestError(f"{where}: at most {MAX_VALUES} values")
        return In(op, key, tuple(_scalar(value, where) for value in values))  # type: ignore[arg-type]
    if op == "fulltext":
        words = tuple(_string(item["text"], f"{where} text").split())
        if not words:
            raise InvalidRequestError(f"{where}: text must have at least one word")
        return FullText(words)
    if op == "regex":
        pattern = _string(item["pattern"], f"{where} pattern")
        case_sensitive = _boolean(item.get("case_sensitive", True), f"{where} case_sensitive")
        _check_regex(pattern, case_sensitive, where)
        return Regex(key, pattern, case_sensitive)
    if op == "keypresent":
        return KeyPresent(key, _boolean(item.get("exists", True), f"{where} exists"))
    if op == "like":
        pattern = _string(item["pattern"], f"{where} pattern")
        _like_tokens(pattern, where)
        return Like(key, pattern)
    if op == "specs":
        include = _names(item.get("include", []), f"{where} include")
        exclude = _names(item.get("exclude", []), f"{where} exclude")
        return Specs(include, exclude)
    return StructureFamily(_string(item["value"], f"{where} value"))


def _scalar(value: Any, where: str) -> Scalar:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise InvalidRequestError(f"{where}: integers must fit in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequestError(f"{where}: numbers must be finite")
        return value
    if isinstance(value, str):
        return _string(value, where + " value")
    raise InvalidRequestError(
        f"{where}: a value must be a string, a number, a boolean or null (not an array or object)"
    )


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"{where} must be a string")
    if len(value) > MAX_STRING_LENGTH:
        raise InvalidRequestError(f"{where} is at most {MAX_STRING_LENGTH} characters")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidRequestError(f"{where} {problem}")
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{where} must be true or false")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidRequestError(f"{where} must be an array of strings")
    if len(value) > MAX_SPECS:
        raise InvalidRequestError(f"{where}: at most {MAX_SPECS} specs")
    return tuple(_string(name, where) for name in value)


def _like_tokens(pattern: str, where: str) -> list[tuple[bool, str]]:
    """A ``LIKE`` pattern as (wildcard?, character) pairs; a lone trailing backslash is refused."""
    tokens: list[tuple[bool, str]] = []
    characters = iter(pattern)
    for character in characters:
        if character == "\\":
            escaped = next(characters, None)
            if escaped is None:
                raise InvalidRequestError(f"{where}: a pattern must not end with a lone backslash")
            tokens.append((False, escaped))
        else:
            tokens.append((character in "%_", character))
    return tokens


# Compiling.


def where(filters: Sequence[Filter], dialect: str) -> ColumnElement[bool]:
    """The SQL condition over :class:`~.models.Node` that all ``filters`` hold (never NULL)."""
    checked = check_dialect(dialect)
    conditions = [_compile(item, checked) for item in filters]
    return and_(true(), *conditions) if conditions else true()


def _compile(item: Filter, dialect: str) -> ColumnElement[bool]:
    if isinstance(item, StructureFamily):
        return Node.structure_family == bindparam(None, item.value, type_=String)
    if isinstance(item, Specs):
        return _specs(item, dialect)
    if isinstance(item, FullText):
        return and_(*(_word(word, dialect) for word in item.words))
    ref = JsonRef(item.key, dialect)
    if isinstance(item, KeyPresent):
        return ref.present() if item.exists else ref.missing()
    if isinstance(item, Comparison):
        if item.op == "eq":
            return _equal(ref, item.value)
        if item.op == "noteq":
            return not_(_equal(ref, item.value))
        return _order_compare(ref, item.op, item.value)
    if isinstance(item, In):
        matched = _one_of(ref, item.values)
        return matched if item.op == "in" else not_(matched)
    if isinstance(item, Contains):
        return _contains(ref, item.value)
    if isinstance(item, Regex):
        return _regex(ref, item, dialect)
    return _like(ref, item, dialect)


def _jsonb(value: Any) -> Any:
    return bindparam(None, value, type_=JSONB)


def _equal(ref: JsonRef, value: Scalar) -> ColumnElement[bool]:
    """Type-aware equality, never NULL."""
    if ref.dialect == "postgresql":
        # jsonb equality is type-aware, and compares numbers by value (1 = 1.0).
        return func.coalesce(ref.jsonb == _jsonb(value), False)
    return _sqlite_equal(ref.kind, ref.sqlite_value, value)


def _sqlite_equal(kind: Any, value_column: Any, value: Scalar) -> ColumnElement[bool]:
    if value is None:
        return func.coalesce(kind == "null", False)
    if isinstance(value, bool):
        return func.coalesce(kind == ("true" if value else "false"), False)
    if isinstance(value, (int, float)):
        return func.coalesce(
            and_(kind.in_(["integer", "real"]), value_column == bindparam(None, value)), False
        )
    return func.coalesce(
        and_(kind == "text", value_column == bindparam(None, value, type_=String)), False
    )


def _one_of(ref: JsonRef, values: Sequence[Scalar]) -> ColumnElement[bool]:
    if not values:
        return false()
    if ref.dialect == "postgresql":
        return func.coalesce(ref.jsonb.in_([_jsonb(value) for value in values]), False)
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    strings = [v for v in values if isinstance(v, str)]
    others = [v for v in values if v is None or isinstance(v, bool)]
    conditions: list[ColumnElement[bool]] = [
        _sqlite_equal(ref.kind, ref.sqlite_value, value) for value in dict.fromkeys(others)
    ]
    if numbers:
        conditions.append(and_(ref.kind.in_(["integer", "real"]), ref.sqlite_value.in_(numbers)))
    if strings:
        conditions.append(
            and_(
                ref.kind == "text",
                ref.sqlite_value.in_([bindparam(None, s, type_=String) for s in strings]),
            )
        )
    return func.coalesce(or_(*conditions), False)


def _order_compare(ref: JsonRef, op: str, value: Scalar) -> ColumnElement[bool]:
    if isinstance(value, str):
        column = ref.text()
        bound: Any = bindparam(None, value, type_=String)
    else:
        column = ref.number() if ref.dialect == "postgresql" else ref.sqlite_value
        bound = _number_bind(value, ref.dialect)
        kinds = ref.is_number()
        compared = _operator(column, op, bound)
        return func.coalesce(and_(kinds, compared), False)
    return func.coalesce(and_(ref.is_string(), _operator(column, op, bound)), False)


def _number_bind(value: Any, dialect: str) -> Any:
    if dialect == "postgresql":
        # repr: the shortest decimal that reads back as the float, as JSON writes it.
        return bindparam(None, Decimal(repr(value)), type_=Numeric)
    return bindparam(None, value)


def _operator(column: Any, op: str, bound: Any) -> ColumnElement[bool]:
    if op == "lt":
        return column < bound  # type: ignore[no-any-return]
    if op == "le":
        return column <= bound  # type: ignore[no-any-return]
    if op == "gt":
        return column > bound  # type: ignore[no-any-return]
    return column >= bound  # type: ignore[no-any-return]


def _contains(ref: JsonRef, value: Scalar) -> ColumnElement[bool]:
    if ref.dialect == "postgresql":
        # An array contains [value] when one of its own elements equals value (not an element of
        # a nested array: containment of a scalar looks at the top level only).
        return func.coalesce(
            and_(ref.is_array(), ref.jsonb.op("@>", is_comparison=True)(_jsonb([value]))), False
        )
    elements = (
        func.json_each(case((ref.kind == "array", ref.sqlite_value)))
        .table_valued("value", "type")
        .alias()
    )
    found = exists(
        select(literal_column("1"))
        .select_from(elements)
        .where(_sqlite_equal(elements.c.type, elements.c.value, value))
    )
    return func.coalesce(and_(ref.is_array(), found), False)


def _word(word: str, dialect: str) -> ColumnElement[bool]:
    bound = bindparam(None, word, type_=String)
    if dialect == "postgresql":
        strings = (
            func.jsonb_path_query(
                type_coerce(Node.node_metadata, JSONB), literal_column("'strict $.**'")
            )
            .table_valued("value")
            .render_derived()
        )
        item = type_coerce(strings.c.value, JSONB)
        text = item.op("#>>", return_type=String)(literal_column("'{}'"))
        condition = and_(
            func.jsonb_typeof(item) == "string",
            func.strpos(func.lower(text), func.lower(bound)) > 0,
        )
    else:
        strings = func.json_tree(Node.node_metadata).table_valued("value", "type").alias()
        condition = and_(
            strings.c.type == "text",
            func.instr(func.lower(strings.c.value), func.lower(bound)) > 0,
        )
    return exists(select(literal_column("1")).select_from(strings).where(condition))


async def bound_regex_time(session: AsyncSession, filters: Sequence[Filter]) -> None:
    """Bound the time the rest of the transaction may spend on ``filters``' regular expressions.

    On PostgreSQL, when there is a regex filter: ``SET LOCAL statement_timeout`` of
    :data:`POSTGRES_REGEX_TIMEOUT_MS` (a statement past it is a 400, see
    :mod:`..storage.db`). On SQLite nothing to do: the matcher bounds itself (each statement's
    matches get :data:`~..storage.db.REGEX_TIME_BUDGET` seconds). Call it before the queries.
    """
    if not any(isinstance(item, Regex) for item in filters):
        return
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            sql_text(f"SET LOCAL statement_timeout = {int(POSTGRES_REGEX_TIMEOUT_MS)}")
        )


def _regex(ref: JsonRef, item: Regex, dialect: str) -> ColumnElement[bool]:
    pattern = bindparam(None, item.pattern, type_=String)
    if dialect == "postgresql":
        operator = "~" if item.case_sensitive else "~*"
        prefix = func.substr(ref.raw_text(), 1, REGEX_MAX_VALUE_LENGTH)
        matched = prefix.op(operator, is_comparison=True)(pattern)
        return func.coalesce(and_(ref.is_string(), matched), False)
    flags = bindparam(None, 0 if item.case_sensitive else 1, type_=Integer)
    matched = getattr(func, SQLITE_REGEXP)(pattern, ref.text(), flags) == 1
    return func.coalesce(and_(ref.is_string(), matched), False)


def _like(ref: JsonRef, item: Like, dialect: str) -> ColumnElement[bool]:
    tokens = _like_tokens(item.pattern, "like")
    if dialect == "postgresql":
        # PostgreSQL's LIKE escapes with a backslash by default.
        pattern = "".join(
            character if wildcard else ("\\" + character if character in "%_\\" else character)
            for wildcard, character in tokens
        )
        matched = ref.text().op("LIKE", is_comparison=True)(bindparam(None, pattern, type_=String))
    else:
        # SQLite's LIKE ignores ASCII case; GLOB does not (and matches the whole string too).
        glob = "".join(
            ("*" if character == "%" else "?")
            if wildcard
            else (f"[{character}]" if character in "*?[" else character)
            for wildcard, character in tokens
        )
        matched = ref.text().op("GLOB", is_comparison=True)(bindparam(None, glob, type_=String))
    return func.coalesce(and_(ref.is_string(), matched), False)


def _specs(item: Specs, dialect: str) -> ColumnElement[bool]:
    def has(spec: str) -> ColumnElement[bool]:
        if dialect == "postgresql":
            specs = type_coerce(Node.specs, JSONB)
            return specs.op("@>", is_comparison=True)(_jsonb([spec]))
        elements = func.json_each(Node.specs).table_valued("value", "type").alias()
        return exists(
            select(literal_column("1"))
            .select_from(elements)
            .where(
                elements.c.type == "text", elements.c.value == bindparam(None, spec, type_=String)
            )
        )

    conditions = [has(spec) for spec in item.include]
    conditions += [not_(has(spec)) for spec in item.exclude]
    return and_(true(), *conditions)


# Distinct.


async def distinct(
    session: AsyncSession,
    base_where: ColumnElement[bool],
    dialect: str,
    *,
    metadata_keys: Iterable[str] = (),
    structure_families: bool = False,
    specs: bool = False,
    counts: bool = False,
) -> dict[str, Any]:
    """The distinct values among the nodes matching ``base_where`` (the caller's visibility,
    container and filters), each counted in SQL with ``GROUP BY``, in the API's shape::

        {"metadata": {key: [{"value": v, "count": n | None}]},
         "structure_families": [...], "specs": [{"value": [..], "count": ...}],
         "truncated": {"metadata": [key, ...], "structure_families": true, "specs": true}}

    ``structure_families`` and ``specs`` are there only when asked for. Values equal under the
    filters' type-aware equality are one value (``1`` and ``1.0``: reported as ``1``); a missing
    key is not a value, JSON null is. Values come by count (descending), then in the sort order
    of :mod:`.ordering`. ``count`` is ``None`` unless ``counts``.

    Each list holds at most :data:`MAX_DISTINCT_VALUES` values, the most frequent (ordered and
    cut in SQL). ``truncated`` is there only when a list was cut, and names the cut lists (its
    members are there only for them). Among values tied on the count at the cut, which ones are
    kept follows the database's order, which for arrays and objects differs between SQLite
    (their JSON text) and PostgreSQL (``jsonb`` order).

    On SQLite, integers beyond 64 bits are compared as floats (as the filters compare them):
    those equal as floats are one value, reported by one of their exact literals; for a key
    with segments outside printable ASCII (or a SQLite before 3.38), as a float.
    """
    checked = check_dialect(dialect)
    keys = list(dict.fromkeys(metadata_keys))
    if len(keys) > MAX_DISTINCT_KEYS:
        raise InvalidRequestError(f"At most {MAX_DISTINCT_KEYS} metadata_keys")
    parsed = [(key, parse_key(key, "metadata key")) for key in keys]
    answer: dict[str, Any] = {"metadata": {}}
    truncated: dict[str, Any] = {}
    for key, segments in parsed:
        groups = await _metadata_groups(session, base_where, JsonRef(segments, checked))
        answer["metadata"][key], cut = _ranked(groups, counts)
        if cut:
            truncated.setdefault("metadata", []).append(key)
    if structure_families:
        count = func.count().label("n")
        families = (
            select(Node.structure_family, count)
            .where(base_where)
            .group_by(Node.structure_family)
            .order_by(count.desc(), Node.structure_family)
            .limit(MAX_DISTINCT_VALUES + 1)
        )
        rows = await session.execute(families)
        answer["structure_families"], cut = _ranked([(row[0], row[1]) for row in rows], counts)
        if cut:
            truncated["structure_families"] = True
    if specs:
        count = func.count().label("n")
        specs_text = type_coerce(Node.specs, String)
        spec_lists = (
            select(Node.specs, count)
            .where(base_where)
            .group_by(Node.specs)
            .order_by(count.desc(), specs_text if checked == "sqlite" else Node.specs)
            .limit(MAX_DISTINCT_VALUES + 1)
        )
        # _ranked merges equal lists that SQLite (grouping by the stored text) kept apart.
        answer["specs"], cut = _ranked(
            [(list(row[0] or []), row[1]) for row in await session.execute(spec_lists)], counts
        )
        if cut:
            truncated["specs"] = True
    if truncated:
        answer["truncated"] = truncated
    return answer


async def _metadata_groups(
    session: AsyncSession, base_where: ColumnElement[bool], ref: JsonRef
) -> list[tuple[Any, int]]:
    """The (value, count) groups of ``ref``, most frequent first, at most
    ``MAX_DISTINCT_VALUES + 1`` of them (one more: the sign of a cut)."""
    if ref.dialect == "postgresql":
        value = type_coerce(ref.jsonb, JSONB)
        groups = (
            select(value.label("value"), func.count().label("n"))
            .select_from(Node)
            .where(base_where, ref.present())
            .group_by(value)
            .subquery()
        )
        # The tie order of ordering's sort (kind, then number or code point), then jsonb's own.
        grouped = JsonRef((), "postgresql", column=groups.c.value)
        query = (
            select(groups.c.value, groups.c.n)
            .order_by(
                groups.c.n.desc(),
                grouped.rank(),
                case((grouped.kind == "number", grouped.number())),
                grouped.text(),
                groups.c.value,
            )
            .limit(MAX_DISTINCT_VALUES + 1)
        )
        return [(row[0], row[1]) for row in await session.execute(query)]
    # Integers and reals are one kind (SQLite groups 1 with 1.0); booleans are 1 and 0 of their
    # own kinds; arrays and objects are their JSON text.
    kind = case((ref.kind.in_(["integer", "real"]), "number"), else_=ref.kind)
    rank = case(
        (kind == "number", 0),
        (kind == "text", 1),
        (kind.in_(["false", "true"]), 2),
        (kind == "null", 3),
        (kind == "array", 4),
        else_=5,
    )
    exact: Any = literal_column("NULL")
    if ref.sqlite_json is not None and _sqlite_has_arrow(session):
        big = and_(ref.kind == "integer", func.typeof(ref.sqlite_value) == "real")
        exact = func.min(case((big, ref.sqlite_json)))
    count = func.count().label("n")
    query = (
        select(kind, ref.sqlite_value, count, exact)
        .select_from(Node)
        .where(base_where, ref.present())
        .group_by(kind, ref.sqlite_value)
        .order_by(count.desc(), rank, ref.sqlite_value)
        .limit(MAX_DISTINCT_VALUES + 1)
    )
    rows: Sequence[Any] = (await session.execute(query)).all()
    return [
        (json.loads(row[3]) if row[3] is not None else _sqlite_decode(row[0], row[1]), row[2])
        for row in rows
    ]


def _sqlite_has_arrow(session: AsyncSession) -> bool:
    """Whether the SQLite library has the ``->`` operator (3.38)."""
    version = getattr(session.get_bind().dialect.dbapi, "sqlite_version_info", (0,))
    return tuple(version) >= (3, 38)


def _sqlite_decode(kind: str, value: Any) -> Any:
    if kind == "true":
        return True
    if kind == "false":
        return False
    if kind == "null":
        return None
    if kind in ("array", "object"):
        return json.loads(value)
    return value


def _normalized(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


def _value_order(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (2, int(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    if value is None:
        return (3, 0)
    return (4 if isinstance(value, list) else 5, json.dumps(value, sort_keys=True))


def _ranked(groups: Iterable[tuple[Any, int]], counts: bool) -> tuple[list[dict[str, Any]], bool]:
    """The API's list of ``groups`` (at most :data:`MAX_DISTINCT_VALUES`), and whether it was
    cut."""
    merged: dict[tuple[int, Any], list[Any]] = {}
    for value, count in groups:
        value = _normalized(value)
        order = _value_order(value)
        if order in merged:  # 1 and 1.0 grouped apart by a database: one value
            merged[order][1] += count
        else:
            merged[order] = [value, count]
    ordered = sorted(merged.items(), key=lambda entry: (-entry[1][1], entry[0]))
    cut = len(ordered) > MAX_DISTINCT_VALUES
    listed = [
        {"value": value, "count": count if counts else None}
        for _, (value, count) in ordered[:MAX_DISTINCT_VALUES]
    ]
    return listed, cut
