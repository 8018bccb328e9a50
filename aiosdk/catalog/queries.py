"""Queries on a container's children, as Tiled names them, and how they go on the wire.

Build them with :class:`Key`: ``Key("color") == "red"``, ``Key("sample.temperature") > 20``,
``Key("tags").contains("raw")``, ``Key("kind").in_(["a", "b"])``, ``Key("note").exists()``; or
construct them directly (``Eq("color", "red")``). :meth:`~aiosdk.AsyncContainer.search` ANDs
them. The server evaluates them in the database; the client checks what it can before sending
(key shapes, value types and sizes), so a malformed query fails here with a
:class:`~aiosdk.ConfigurationError` (a ``ValueError``) naming the problem.

Equality is type-aware: ``Key("x") == 1`` matches ``1`` and ``1.0``, never ``"1"`` or ``true``.
Comparisons only match values of the same kind (numbers with numbers, strings with strings).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from .._core.errors import ConfigurationError

__all__ = [
    "ASCENDING",
    "DESCENDING",
    "Comparison",
    "Contains",
    "Eq",
    "FullText",
    "In",
    "Key",
    "KeyPresent",
    "Like",
    "NotEq",
    "NotIn",
    "Query",
    "Regex",
    "Scalar",
    "Specs",
    "StructureFamily",
    "check_sorting",
    "encode_filters",
    "encode_sort",
]

ASCENDING: Final = 1
"""Sort direction: smallest first (missing values last)."""
DESCENDING: Final = -1
"""Sort direction: largest first (missing values first)."""

Scalar: TypeAlias = str | int | float | bool | None
"""A JSON scalar: what a metadata value is compared with."""

MAX_FILTERS = 32
MAX_KEY_SEGMENTS = 16
MAX_SEGMENT_LENGTH = 255
MAX_TEXT_LENGTH = 1000
MAX_VALUES = 1000
BUILTIN_SORT_FIELDS = frozenset(
    {"_key", "_created_at", "_updated_at", "_structure_family", "_revision"}
)


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise ConfigurationError(f"a query key must be a string, not {type(key).__name__}")
    segments = key.split(".")
    if len(segments) > MAX_KEY_SEGMENTS:
        raise ConfigurationError(
            f"query key {key[:80]!r} has {len(segments)} dotted segments; at most"
            f" {MAX_KEY_SEGMENTS}"
        )
    for segment in segments:
        if not segment:
            raise ConfigurationError(f"query key {key[:80]!r} has an empty segment")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise ConfigurationError(
                f"query key {key[:80]!r} has a segment longer than {MAX_SEGMENT_LENGTH} characters"
            )
    return key


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT_LENGTH:
        raise ConfigurationError(
            f"{what} is {len(value)} characters long; at most {MAX_TEXT_LENGTH}"
        )
    return value


def _check_scalar(value: object, what: str) -> Scalar:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError(f"{what} must be a finite number, not {value!r}")
        return value
    if isinstance(value, str):
        return _check_text(value, what)
    raise ConfigurationError(
        f"{what} must be a JSON scalar (str, int, float, bool or None), not {type(value).__name__}"
    )


def _check_values(values: Iterable[object], what: str) -> tuple[Scalar, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ConfigurationError(f"{what} must be a list of values, not {type(values).__name__}")
    checked = tuple(_check_scalar(v, f"a value of {what}") for v in values)
    if len(checked) > MAX_VALUES:
        raise ConfigurationError(f"{what} has {len(checked)} values; at most {MAX_VALUES}")
    return checked


def _check_strings(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ConfigurationError(f"{what} must be a list of strings, not {type(values).__name__}")
    return tuple(_check_text(v, f"a value of {what}") for v in values)


class Query:
    """Base class of the queries: each one is one element of the ``filters`` array."""

    def _wire(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Eq(Query):
    """The metadata value at ``key`` equals ``value`` (type-aware: ``1`` is not ``"1"``)."""

    key: str
    value: Scalar

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_scalar(self.value, "the value")

    def _wire(self) -> dict[str, Any]:
        return {"op": "eq", "key": self.key, "value": self.value}


@dataclass(frozen=True)
class NotEq(Query):
    """The metadata value at ``key`` is absent, or differs from ``value``."""

    key: str
    value: Scalar

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_scalar(self.value, "the value")

    def _wire(self) -> dict[str, Any]:
        return {"op": "noteq", "key": self.key, "value": self.value}


Operator = Literal["lt", "le", "gt", "ge"]


@dataclass(frozen=True)
class Comparison(Query):
    """The metadata value at ``key`` compares with ``value`` by ``operator``: ``"lt"``, ``"le"``,
    ``"gt"`` or ``"ge"``; only values of the same kind (numbers, or strings) match."""

    operator: Operator
    key: str
    value: float | str

    def __post_init__(self) -> None:
        if self.operator not in ("lt", "le", "gt", "ge"):
            raise ConfigurationError(
                f"operator must be 'lt', 'le', 'gt' or 'ge', not {self.operator!r}"
            )
        _check_key(self.key)
        if isinstance(self.value, bool) or not isinstance(self.value, int | float | str):
            raise ConfigurationError(
                "a comparison's value must be a number or a string, not"
                f" {type(self.value).__name__}"
            )
        _check_scalar(self.value, "the value")

    def _wire(self) -> dict[str, Any]:
        return {"op": self.operator, "key": self.key, "value": self.value}


@dataclass(frozen=True)
class Contains(Query):
    """The metadata value at ``key`` is a list that contains ``value``."""

    key: str
    value: Scalar

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_scalar(self.value, "the value")

    def _wire(self) -> dict[str, Any]:
        return {"op": "contains", "key": self.key, "value": self.value}


@dataclass(frozen=True, init=False)
class In(Query):
    """The metadata value at ``key`` is one of ``value`` (at most 1000 values)."""

    key: str
    value: tuple[Scalar, ...]

    def __init__(self, key: str, value: Iterable[Scalar]) -> None:
        object.__setattr__(self, "key", _check_key(key))
        object.__setattr__(self, "value", _check_values(value, "In's values"))

    def _wire(self) -> dict[str, Any]:
        return {"op": "in", "key": self.key, "values": list(self.value)}


@dataclass(frozen=True, init=False)
class NotIn(Query):
    """The metadata value at ``key`` is absent, or none of ``value``."""

    key: str
    value: tuple[Scalar, ...]

    def __init__(self, key: str, value: Iterable[Scalar]) -> None:
        object.__setattr__(self, "key", _check_key(key))
        object.__setattr__(self, "value", _check_values(value, "NotIn's values"))

    def _wire(self) -> dict[str, Any]:
        return {"op": "notin", "key": self.key, "values": list(self.value)}


@dataclass(frozen=True)
class FullText(Query):
    """Every word of ``text`` appears (case-insensitively) among the metadata's values."""

    text: str

    def __post_init__(self) -> None:
        _check_text(self.text, "the text")

    def _wire(self) -> dict[str, Any]:
        return {"op": "fulltext", "text": self.text}


@dataclass(frozen=True)
class Regex(Query):
    """The metadata value at ``key`` is a string that ``pattern`` matches (searching, as
    ``re.search`` does)."""

    key: str
    pattern: str
    case_sensitive: bool = True

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_text(self.pattern, "the pattern")
        if not isinstance(self.case_sensitive, bool):
            raise ConfigurationError("case_sensitive must be True or False")

    def _wire(self) -> dict[str, Any]:
        return {
            "op": "regex",
            "key": self.key,
            "pattern": self.pattern,
            "case_sensitive": self.case_sensitive,
        }


@dataclass(frozen=True)
class KeyPresent(Query):
    """The metadata has (``exists=True``) or has not (``False``) a value at ``key``."""

    key: str
    exists: bool = True

    def __post_init__(self) -> None:
        _check_key(self.key)
        if not isinstance(self.exists, bool):
            raise ConfigurationError("exists must be True or False")

    def _wire(self) -> dict[str, Any]:
        return {"op": "keypresent", "key": self.key, "exists": self.exists}


@dataclass(frozen=True)
class Like(Query):
    """The metadata value at ``key`` is a string matching the SQL LIKE ``pattern`` (``%`` any
    run of characters, ``_`` one character)."""

    key: str
    pattern: str

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_text(self.pattern, "the pattern")

    def _wire(self) -> dict[str, Any]:
        return {"op": "like", "key": self.key, "pattern": self.pattern}


@dataclass(frozen=True, init=False)
class Specs(Query):
    """The node's specs include every one of ``include`` and none of ``exclude``."""

    include: tuple[str, ...]
    exclude: tuple[str, ...]

    def __init__(self, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
        object.__setattr__(self, "include", _check_strings(include, "include"))
        object.__setattr__(self, "exclude", _check_strings(exclude, "exclude"))

    def _wire(self) -> dict[str, Any]:
        return {"op": "specs", "include": list(self.include), "exclude": list(self.exclude)}


@dataclass(frozen=True)
class StructureFamily(Query):
    """The node is of structure family ``value`` (``"container"``, ``"array"``, ...)."""

    value: str

    def __post_init__(self) -> None:
        _check_text(self.value, "the structure family")

    def _wire(self) -> dict[str, Any]:
        return {"op": "structure_family", "value": self.value}


class Key:
    """A metadata key (dotted for nested values: ``"sample.temperature"``) to build queries with.

    ``Key(k) == v`` is :class:`Eq`, ``!=`` :class:`NotEq`, ``<``, ``<=``, ``>``, ``>=``
    :class:`Comparison`; :meth:`in_`, :meth:`not_in`, :meth:`contains`, :meth:`like`,
    :meth:`regex` and :meth:`exists` the others.
    """

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = _check_key(key)

    def __repr__(self) -> str:
        return f"Key({self.key!r})"

    def __hash__(self) -> int:
        return hash(("Key", self.key))

    def __eq__(self, value: object) -> Eq:  # type: ignore[override]
        return Eq(self.key, value)  # type: ignore[arg-type]  # checked by Eq

    def __ne__(self, value: object) -> NotEq:  # type: ignore[override]
        return NotEq(self.key, value)  # type: ignore[arg-type]  # checked by NotEq

    def __lt__(self, value: float | str) -> Comparison:
        return Comparison("lt", self.key, value)

    def __le__(self, value: float | str) -> Comparison:
        return Comparison("le", self.key, value)

    def __gt__(self, value: float | str) -> Comparison:
        return Comparison("gt", self.key, value)

    def __ge__(self, value: float | str) -> Comparison:
        return Comparison("ge", self.key, value)

    def in_(self, values: Iterable[Scalar]) -> In:
        """The value is one of ``values``."""
        return In(self.key, values)

    def not_in(self, values: Iterable[Scalar]) -> NotIn:
        """The value is absent, or none of ``values``."""
        return NotIn(self.key, values)

    def contains(self, value: Scalar) -> Contains:
        """The value is a list containing ``value``."""
        return Contains(self.key, value)

    def like(self, pattern: str) -> Like:
        """The value is a string matching the SQL LIKE ``pattern``."""
        return Like(self.key, pattern)

    def regex(self, pattern: str, case_sensitive: bool = True) -> Regex:
        """The value is a string that the regular expression ``pattern`` matches."""
        return Regex(self.key, pattern, case_sensitive)

    def exists(self, exists: bool = True) -> KeyPresent:
        """The key is present (or, with ``exists=False``, absent)."""
        return KeyPresent(self.key, exists)


def encode_filters(queries: Iterable[Query]) -> str | None:
    """The ``filters`` query parameter for ``queries`` (``None`` for no query)."""
    wire = []
    for query in queries:
        if not isinstance(query, Query):
            raise ConfigurationError(
                f"not a query: {query!r} (build one with Key(...) == value, or Eq(...), ...)"
            )
        wire.append(query._wire())
    if not wire:
        return None
    if len(wire) > MAX_FILTERS:
        raise ConfigurationError(f"{len(wire)} queries combined; at most {MAX_FILTERS}")
    return json.dumps(wire, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def check_sorting(pairs: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """``pairs`` checked: each a (metadata key or built-in field, ASCENDING | DESCENDING)."""
    checked = []
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ConfigurationError(
                f"sort by (key, direction) pairs, e.g. ('temperature', DESCENDING), not {pair!r}"
            )
        key, direction = pair
        if direction not in (ASCENDING, DESCENDING) or isinstance(direction, bool):
            raise ConfigurationError(
                f"a sort direction is ASCENDING (1) or DESCENDING (-1), not {direction!r}"
            )
        if not (isinstance(key, str) and key in BUILTIN_SORT_FIELDS):
            _check_key(key)
            if key.startswith("-"):
                raise ConfigurationError(
                    f"cannot sort by {key!r}: a leading '-' means descending on the wire"
                )
        checked.append((key, int(direction)))
    return tuple(checked)


def encode_sort(pairs: Iterable[tuple[str, int]]) -> list[str]:
    """The repeated ``sort`` query parameter: each field, ``-`` first for descending."""
    return [key if direction == ASCENDING else f"-{key}" for key, direction in pairs]
