"""Sorting and keyset paging of catalog nodes, and references to values inside their metadata.

Order
    A listing's order is always total: the requested sort fields, then the node's key, then its
    id. ``reverse`` flips every column of it (so the last entry of a listing is the first of the
    reversed one, in one request).

Sort fields (:func:`parse_sort`)
    A metadata key, dotted for nested objects (``"sample.temperature"``), or one of the built-ins
    ``_key``, ``_created_at``, ``_updated_at``, ``_structure_family``, ``_revision``; a leading
    ``-`` sorts descending.

Metadata values of mixed types
    Sort by their kind first, in this order: numbers (integers and floats together, by value),
    strings (by code point), booleans (false, then true), JSON null, arrays, objects, and last a
    missing key (so missing values come last ascending, first descending). Arrays and objects are
    not ordered among themselves: their ties go to the key and the id, like any tie. Both
    databases give the same order (PostgreSQL compares strings with the ``"C"`` collation, which
    is code point order on UTF-8, as SQLite's ``BINARY`` is).

Keyset cursors
    :func:`select_values` are the expressions to select alongside the rows; :func:`cursor_of` turns
    the last row's values into a cursor, :func:`encode_cursor` into an opaque URL-safe token which
    also fingerprints the order, the filters and a caller-chosen scope (a token from another query
    is refused), :func:`decode_cursor` validates a token back into a cursor (any problem is an
    :class:`InvalidRequestError`), and :func:`after_cursor` is the condition for the rows strictly
    after it.

A usage sketch (what the listing code does)::

    order = order_columns(parse_sort(sort), dialect, reverse)
    query = select(Node, *select_values(order)).where(base, where(filters, dialect))
    if page_token:
        query = query.where(after_cursor(order, decode_cursor(page_token, order, filters=filters)))
    rows = (await session.execute(query.order_by(*order_by(order)).limit(size + 1))).all()
    token = encode_cursor(order, cursor_of(order, rows[size - 1][1:]), filters=filters)

JSON references
    :func:`json_ref` addresses a dotted key inside the metadata, in SQL, with every key segment a
    bound parameter: on PostgreSQL a chain of ``->`` (text keys: object members only, never array
    indexes), on SQLite ``json_extract``/``json_type`` with a ``$."a"."b"`` path when the segments
    are plain printable ASCII, else a chain of ``json_each`` lookups on decoded keys (SQLite's
    path syntax cannot quote every key, and older versions compare path labels with the stored,
    escaped JSON text).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Integer,
    Numeric,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB

from ..errors import InvalidRequestError
from .models import Node

__all__ = [
    "BUILTIN_SORT_FIELDS",
    "MAX_KEY_SEGMENTS",
    "MAX_SORT_FIELDS",
    "JsonRef",
    "OrderSpec",
    "SortField",
    "after_cursor",
    "check_dialect",
    "cursor_of",
    "decode_cursor",
    "encode_cursor",
    "json_ref",
    "order_by",
    "order_columns",
    "parse_key",
    "parse_sort",
    "select_values",
]

Dialect = Literal["sqlite", "postgresql"]

MAX_KEY_SEGMENTS = 16
MAX_SEGMENT_LENGTH = 255
MAX_SORT_FIELDS = 16
MAX_TOKEN_LENGTH = 65_536
"""The longest page token decoded (it holds the last row's sort values: long strings make long
tokens)."""

BUILTIN_SORT_FIELDS = {
    "_key": "key",
    "_created_at": "created_at",
    "_updated_at": "updated_at",
    "_structure_family": "structure_family",
    "_revision": "revision",
}
"""The built-in sort fields and the :class:`~.models.Node` attributes they sort by."""

# The kinds of metadata values, in sort order (see the module's docstring).
RANK_NUMBER, RANK_STRING, RANK_BOOLEAN, RANK_NULL, RANK_ARRAY, RANK_OBJECT, RANK_MISSING = range(7)

_SAFE_SEGMENT = re.compile(r"[ !#-Z\]-~]+")  # printable ASCII but '"', '[' and '\' ('.' splits)


def check_dialect(dialect: str) -> Dialect:
    """``dialect`` if it is one the catalog's queries support (a ``ValueError`` if not: that is the
    server's mistake, not the client's)."""
    if dialect == "sqlite":
        return "sqlite"
    if dialect == "postgresql":
        return "postgresql"
    raise ValueError(f"unsupported database dialect {dialect!r}")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent to the database as text (``None``: it can)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if any("\ud800" <= character <= "\udfff" for character in value):
        return "must be Unicode text (no lone surrogates)"
    return None


def parse_key(key: object, what: str = "key") -> tuple[str, ...]:
    """The segments of a dotted metadata key; :class:`InvalidRequestError` if it is not one.

    A key is a string of 1 to :data:`MAX_KEY_SEGMENTS` segments separated by dots, each 1 to 255
    characters.
    """
    if not isinstance(key, str):
        raise InvalidRequestError(f"A {what} must be a string of dotted metadata keys")
    segments = tuple(key.split("."))
    if len(segments) > MAX_KEY_SEGMENTS:
        raise InvalidRequestError(
            f"A {what} has at most {MAX_KEY_SEGMENTS} dot-separated segments: {key[:80]!r}"
        )
    for segment in segments:
        if not segment:
            raise InvalidRequestError(f"A {what} must not have empty segments: {key[:80]!r}")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise InvalidRequestError(
                f"A {what}'s segments are at most {MAX_SEGMENT_LENGTH} characters"
            )
        problem = text_problem(segment)
        if problem is not None:
            raise InvalidRequestError(f"A {what} {problem}")
    return segments


class JsonRef:
    """A value inside a node's metadata, addressed by a key's segments, as SQL expressions.

    ``kind`` is the value's kind in the dialect's words (SQLite ``json_type``: ``null``, ``true``,
    ``false``, ``integer``, ``real``, ``text``, ``array``, ``object``; PostgreSQL
    ``jsonb_typeof``: ``null``, ``boolean``, ``number``, ``string``, ``array``, ``object``); SQL
    NULL when the key is missing.
    """

    def __init__(self, segments: Sequence[str], dialect: str, column: Any = None) -> None:
        self.segments = tuple(segments)
        self.dialect = check_dialect(dialect)
        target = Node.node_metadata if column is None else column
        if self.dialect == "postgresql":
            value: ColumnElement[Any] = type_coerce(target, JSONB)
            for segment in self.segments:
                value = value.op("->", return_type=JSONB)(bindparam(None, segment, type_=Text))
            self.jsonb = value
            self.kind: ColumnElement[Any] = func.jsonb_typeof(value)
        elif all(_SAFE_SEGMENT.fullmatch(segment) for segment in self.segments):
            path = "$" + "".join(f'."{segment}"' for segment in self.segments)
            self.kind = func.json_type(target, bindparam(None, path, type_=String))
            self.sqlite_value: ColumnElement[Any] = func.json_extract(
                target, bindparam(None, path, type_=String)
            )
            # The value's JSON text (SQLite >= 3.38): exact where json_extract is not (integers
            # beyond 64 bits come back from it as floats).
            self.sqlite_json: ColumnElement[Any] | None = target.op("->", return_type=String)(
                bindparam(None, path, type_=String)
            )
        else:
            self.kind, self.sqlite_value = _json_each_chain(target, self.segments)
            self.sqlite_json = None

    # Predicates on the value's kind (never NULL).

    def present(self) -> ColumnElement[bool]:
        return self.kind.is_not(None)

    def missing(self) -> ColumnElement[bool]:
        return self.kind.is_(None)

    def is_number(self) -> ColumnElement[bool]:
        if self.dialect == "postgresql":
            return func.coalesce(self.kind == "number", False)
        return func.coalesce(self.kind.in_(["integer", "real"]), False)

    def is_string(self) -> ColumnElement[bool]:
        return func.coalesce(
            self.kind == ("string" if self.dialect == "postgresql" else "text"), False
        )

    def is_array(self) -> ColumnElement[bool]:
        return func.coalesce(self.kind == "array", False)

    # Values.

    def text(self) -> ColumnElement[Any]:
        """The value as SQL text when it is a JSON string (else NULL), compared by code point."""
        if self.dialect == "postgresql":
            return self.raw_text().collate("C")
        return self.raw_text()

    def raw_text(self) -> ColumnElement[Any]:
        """The value as SQL text when it is a JSON string (else NULL), in the default collation."""
        if self.dialect == "postgresql":
            raw = self.jsonb.op("#>>", return_type=Text)(literal_column("'{}'"))
            return case((self.kind == "string", raw))
        return case((self.kind == "text", self.sqlite_value))

    def number(self) -> ColumnElement[Any]:
        """The value as an SQL number when it is a JSON number or boolean (0, 1), else NULL."""
        if self.dialect == "postgresql":
            raw = self.jsonb.op("#>>", return_type=Text)(literal_column("'{}'"))
            return case(
                (self.kind == "number", cast(raw, Numeric)),
                (self.kind == "boolean", case((raw == "true", 1), else_=0)),
                else_=None,
            ).cast(Numeric)
        return case(
            (self.kind.in_(["integer", "real", "true", "false"]), self.sqlite_value), else_=None
        )

    def rank(self) -> ColumnElement[Any]:
        """The value's kind as its place in the sort order (numbers, strings, booleans, null,
        arrays, objects, missing)."""
        if self.dialect == "postgresql":
            kinds = {"number": RANK_NUMBER, "string": RANK_STRING, "boolean": RANK_BOOLEAN}
        else:
            kinds = {
                "integer": RANK_NUMBER,
                "real": RANK_NUMBER,
                "text": RANK_STRING,
                "true": RANK_BOOLEAN,
                "false": RANK_BOOLEAN,
            }
        kinds.update(null=RANK_NULL, array=RANK_ARRAY, object=RANK_OBJECT)
        return case(kinds, value=self.kind, else_=RANK_MISSING).cast(Integer)


def json_ref(segments: Sequence[str], dialect: str) -> JsonRef:
    """The metadata value at ``segments`` (see :class:`JsonRef`)."""
    return JsonRef(segments, dialect)


def _json_each_chain(
    target: Any, segments: tuple[str, ...]
) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """SQLite: the ``json_type`` and ``json_extract`` of the member at ``segments``, looked up by
    decoded key with one ``json_each`` per segment (correlated scalar subqueries)."""
    levels = []
    source: Any = target
    for segment in segments:
        level = func.json_each(source).table_valued("key", "value", "type").alias()
        levels.append((level, segment))
        # json_each of a non-object would enumerate an array or fail on a scalar's text.
        source = case((level.c.type == "object", level.c.value))
    conditions = [
        level.c.key == bindparam(None, segment, type_=String) for level, segment in levels
    ]
    last = levels[-1][0]
    froms = [level for level, _ in levels]

    def scalar(column: Any) -> ColumnElement[Any]:
        joined: Any = froms[0]
        for level in froms[1:]:
            joined = joined.join(level, true())
        return select(column).select_from(joined).where(*conditions).limit(1).scalar_subquery()

    return scalar(last.c.type), scalar(last.c.value)


@dataclass(frozen=True)
class SortField:
    """One requested sort field: a built-in (``_key``...) or a metadata key's segments."""

    name: str
    """As requested, without the ``-``."""
    descending: bool
    builtin: str | None
    """The :class:`~.models.Node` attribute of a built-in; ``None`` for a metadata key."""
    segments: tuple[str, ...] = ()


def parse_sort(fields: Iterable[str]) -> list[SortField]:
    """The sort fields of the repeated ``sort`` parameters (see the module's docstring);
    :class:`InvalidRequestError` for a malformed one, or more than :data:`MAX_SORT_FIELDS`."""
    parsed: list[SortField] = []
    seen: set[str] = set()
    for field in fields:
        if not isinstance(field, str):
            raise InvalidRequestError("A sort field must be a string")
        descending = field.startswith("-")
        name = field[1:] if descending else field
        if not name:
            raise InvalidRequestError("A sort field must name a metadata key or a built-in field")
        if name in seen:
            raise InvalidRequestError(f"The sort field {name[:80]!r} is given twice")
        seen.add(name)
        builtin = BUILTIN_SORT_FIELDS.get(name)
        if builtin is not None:
            parsed.append(SortField(name, descending, builtin))
        else:
            parsed.append(SortField(name, descending, None, parse_key(name, "sort field")))
        if len(parsed) > MAX_SORT_FIELDS:
            raise InvalidRequestError(f"At most {MAX_SORT_FIELDS} sort fields")
    return parsed


ColumnKind = Literal["int", "number", "text", "datetime"]


@dataclass(frozen=True)
class OrderSpec:
    """One column of a total order: an SQL expression and its direction.

    ``kind`` is what its values are (and what a cursor may hold for it); ``nullable`` columns hold
    NULL only among rows that an earlier column of the same sort field already tells apart, so
    NULLs never need a place of their own in the order.
    """

    name: str
    expression: ColumnElement[Any]
    descending: bool
    kind: ColumnKind
    nullable: bool
    dialect: Dialect


def order_columns(
    sort: Sequence[SortField], dialect: str, reverse: bool = False
) -> list[OrderSpec]:
    """The total order for ``sort``: its fields (three columns for a metadata key: kind, number,
    string), then the key (unless sorted by already), then the id; all flipped by ``reverse``."""
    checked = check_dialect(dialect)
    specs: list[OrderSpec] = []

    def add(name: str, expression: Any, descending: bool, kind: ColumnKind, nullable: bool) -> None:
        specs.append(OrderSpec(name, expression, descending != reverse, kind, nullable, checked))

    def string_column(column: Any) -> Any:
        return column.collate("C") if checked == "postgresql" else column

    for field in sort:
        if field.builtin is None:
            ref = JsonRef(field.segments, checked)
            prefix = "m:" + field.name
            add(prefix + "#kind", ref.rank(), field.descending, "int", False)
            add(prefix + "#number", ref.number(), field.descending, "number", True)
            add(prefix + "#text", ref.text(), field.descending, "text", True)
            continue
        column = getattr(Node, field.builtin)
        if field.builtin in ("key", "structure_family"):
            add(field.name, string_column(column), field.descending, "text", False)
        elif field.builtin == "revision":
            add(field.name, column, field.descending, "int", False)
        else:
            add(field.name, column, field.descending, "datetime", False)
    if not any(field.builtin == "key" for field in sort):
        add("_key", string_column(Node.key), False, "text", False)
    add("_id", Node.id, False, "text", False)
    return specs


def order_by(order: Sequence[OrderSpec]) -> list[Any]:
    """The ``ORDER BY`` clauses of ``order``."""
    return [spec.expression.desc() if spec.descending else spec.expression.asc() for spec in order]


def select_values(order: Sequence[OrderSpec]) -> list[Any]:
    """The expressions to select alongside each row, so that :func:`cursor_of` can be built from
    the last one: select them after the entity, and pass the row's values after it."""
    return [spec.expression.label(f"_order_{index}") for index, spec in enumerate(order)]


def cursor_of(order: Sequence[OrderSpec], values: Sequence[Any]) -> list[Any]:
    """The cursor of a row: its :func:`select_values` (exactly as many as ``order`` has)."""
    if len(values) != len(order):
        raise ValueError(f"a cursor has {len(order)} values, got {len(values)}")
    return list(values)


def after_cursor(order: Sequence[OrderSpec], cursor: Sequence[Any]) -> ColumnElement[bool]:
    """The rows strictly after ``cursor`` in ``order``: lexicographic over columns of either
    direction; a NULL cursor value equals only NULL and is after nothing (see
    :class:`OrderSpec`)."""
    if len(cursor) != len(order):
        raise ValueError(f"a cursor has {len(order)} values, got {len(cursor)}")
    condition: ColumnElement[bool] = false()
    for spec, value in reversed(list(zip(order, cursor, strict=True))):
        if value is None:
            condition = and_(spec.expression.is_(None), condition)
            continue
        bound = _bind(spec, value)
        after = spec.expression < bound if spec.descending else spec.expression > bound
        condition = or_(after, and_(spec.expression == bound, condition))
    return condition


def _bind(spec: OrderSpec, value: Any) -> Any:
    if spec.kind == "number":
        if spec.dialect == "postgresql":
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
            return bindparam(None, number, type_=Numeric)
        if isinstance(value, Decimal):  # sqlite3 binds no Decimal
            value = int(value) if value == value.to_integral_value() else float(value)
        return bindparam(None, value)
    if spec.kind in ("datetime", "int"):
        return bindparam(None, value, type_=spec.expression.type)
    return bindparam(None, value, type_=String)


# Cursor tokens: URL-safe base64 (unpadded) of {"v": [values], "q": fingerprint}, each value
# tagged with its type so that it decodes exactly: null, ["i", int], ["f", float],
# ["d", "decimal"], ["s", str], ["t", "iso datetime"].


def fingerprint(order: Sequence[OrderSpec], filters: Iterable[Any] = (), scope: str = "") -> str:
    """What a cursor token is bound to: the order's columns and directions, the filters (their
    ``wire()``), and the caller's ``scope`` (a container's path, a listing's parameters...)."""
    described = {
        "order": [[spec.name, spec.descending] for spec in order],
        "filters": [item.wire() for item in filters],
        "scope": scope,
    }
    canonical = json.dumps(described, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def encode_cursor(
    order: Sequence[OrderSpec],
    cursor: Sequence[Any],
    *,
    filters: Iterable[Any] = (),
    scope: str = "",
) -> str:
    """The opaque token of ``cursor`` (from :func:`cursor_of`) for this order, filters and scope."""
    values = [_encode_value(value) for value in cursor_of(order, cursor)]
    body = {"v": values, "q": fingerprint(order, filters, scope)}
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(
    token: str,
    order: Sequence[OrderSpec],
    *,
    filters: Iterable[Any] = (),
    scope: str = "",
) -> list[Any]:
    """The cursor of a token from :func:`encode_cursor`; :class:`InvalidRequestError` if it is
    malformed, or was made for another order, filters or scope."""
    invalid = InvalidRequestError("Invalid page_token: it is malformed or from another query")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, binascii.Error, RecursionError):
        raise invalid from None
    if not isinstance(body, dict) or set(body) != {"v", "q"}:
        raise invalid
    if body["q"] != fingerprint(order, filters, scope):
        raise InvalidRequestError(
            "Invalid page_token: it was made for another query (sort, filters or container)"
        )
    values = body["v"]
    if not isinstance(values, list) or len(values) != len(order):
        raise invalid
    try:
        return [_decode_value(spec, value) for spec, value in zip(order, values, strict=True)]
    except (ValueError, TypeError, InvalidOperation, OverflowError):
        raise invalid from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _encode_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return ["i", int(value)]
    if isinstance(value, int):
        return ["i", value]
    if isinstance(value, float):
        return ["f", value]
    if isinstance(value, Decimal):
        return ["d", str(value)]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, datetime):
        return ["t", value.isoformat()]
    raise TypeError(f"cannot put a {type(value).__name__} in a cursor")


def _decode_value(spec: OrderSpec, encoded: Any) -> Any:
    if encoded is None:
        if not spec.nullable:
            raise ValueError("null in a column that is never null")
        return None
    if not isinstance(encoded, list) or len(encoded) != 2 or not isinstance(encoded[0], str):
        raise ValueError("not a tagged value")
    tag, value = encoded
    if spec.kind == "int" and tag == "i" and type(value) is int and abs(value) < 2**63:
        return value
    if spec.kind == "number":
        if tag == "i" and type(value) is int and abs(value) < 2**63:
            return value
        if tag == "f" and type(value) is float and math.isfinite(value):
            return value
        # Decimals are PostgreSQL's numerics; SQLite's numbers are integers and floats.
        if tag == "d" and spec.dialect == "postgresql" and isinstance(value, str):
            if len(value) > 1100:
                raise ValueError("an oversized number")
            number = Decimal(value)
            if not number.is_finite():
                raise ValueError("not a finite number")
            return number
    if spec.kind == "text" and tag == "s" and isinstance(value, str) and not text_problem(value):
        return value
    if spec.kind == "datetime" and tag == "t" and isinstance(value, str) and len(value) <= 64:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("a naive datetime")
        return moment.astimezone(timezone.utc)
    raise ValueError(f"a {tag!r} value in a {spec.kind} column")
