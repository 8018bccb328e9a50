"""Views computed on the server: a table's rows filtered, sorted and cut, an array's selection
reduced; each written to the blob store under a new id exactly as a node's data is (see
:mod:`..data.tables`, :mod:`..data.arrays`), so that the normal data routes read it.

Interface (what the session service calls)::

    table_query(message: proto.TableView) -> TableQuery       # InvalidRequestError when malformed
    array_query(message: proto.ArrayView) -> ArrayQuery
    await compute_view(blobs, source: DataRef, query, result_id) -> (family, structure)
    await write_table_object(blobs, result_id, table) -> structure
    await write_array_object(blobs, result_id, array) -> structure

A table view takes, in this order: the rows every ``where`` filter holds for, sorted by the
``sort`` keys, the first ``head`` or last ``tail`` of them, with the ``columns`` asked for (all
when none). The source is read a partition at a time, each filtered as it is read (only the
columns kept or sorted by are kept); the result is written in partitions of about
:data:`PARTITION_BYTES`. A table result holds at most :data:`MAX_VIEW_BYTES`.

Filters are the catalog's (:func:`..catalog.filters.parse_filters`), a key naming a column (its
dotted segments joined again: a key ``a.b`` names the column ``"a.b"``; nested fields are not
looked into). Their semantics follow the catalog's as far as the column types allow:

- ``eq``/``noteq``/``in``/``notin``: a value of the column's kind: a number for a numeric
  column (``1`` matches ``1.0``), a string for a string column, a boolean for a boolean one, an
  ISO 8601 string for a temporal one (cast to the column's type: a zoned timestamp needs an
  offset, ``Z`` or ``+01:00``). ``null`` matches null (the closest a table has to a missing
  key). ``noteq`` and ``notin`` are the exact negations: they match nulls too. Unlike the
  catalog, whose metadata has no schema, a value of another kind than the column's is refused
  (it could never match) rather than matching nothing.
- ``lt``/``le``/``gt``/``ge``: numbers with numeric columns, strings with string columns (by
  code point, as the catalog) and ISO 8601 strings with temporal ones; nulls never match.
- ``contains``: a list column holding an element equal to the value (as the catalog); on a
  string column, the value as a substring (which the catalog never does: a metadata string is
  no array).
- ``keypresent``: the value is not null (``exists: false``: it is null).
- ``regex``: a search in string values, with RE2's syntax (pyarrow's), which lacks
  backreferences and lookaround (refused, 400) and runs in linear time; no 10,000-character cut.
- ``like``: SQL ``LIKE`` on string values, case-sensitive, backslash escapes (as the catalog).
- ``fulltext``, ``specs`` and ``structure_family`` are about nodes: refused.

Dictionary-encoded columns are compared by their values, decimals as ``float64``. Columns of
the view types ``string_view`` and ``binary_view`` (which pyarrow cannot filter or take yet) are
``large_string`` and ``large_binary`` in the result. Sorting follows the catalog's
direction rules: ascending puts nulls last, descending first; ties keep the source's order.

An array view takes numpy's basic indexing of the source (negative indices and steps too), then
``sum``, ``mean``, ``min`` or ``max`` along one axis of the selection's result (negative counts
from the end) or all of them: a 0-d array (the data routes serve 0-d arrays: one block ``()``).
numpy's rules hold (a sum of ``int8`` is ``int64``, integer sums wrap); the ``mean``, ``min``
and ``max`` of nothing are refused, and types numpy cannot reduce so (a sum of strings, a mean
of datetimes). A selection read holds at most :data:`MAX_VIEW_BYTES`. An array result is
chunked in C order, about :data:`CHUNK_BYTES` a chunk.

Everything that reads, computes or writes data runs in worker threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
import pyarrow
import pyarrow.compute as pc

from ... import proto
from ..._core.concurrency import to_the_end
from ..catalog.filters import (
    Comparison,
    Contains,
    Filter,
    FullText,
    In,
    KeyPresent,
    Like,
    Regex,
    Specs,
    StructureFamily,
    parse_filters,
)
from ..catalog.nodes import InvalidContentError
from ..data import tables
from ..data.arrays import ArrayData, Selection, as_bytes
from ..data.export import table_stream
from ..data.store import BlobStore
from ..data.structures import MAX_DIMS, ArrayStructure, validate_array_structure
from ..errors import InvalidRequestError

__all__ = [
    "CHUNK_BYTES",
    "MAX_VIEW_BYTES",
    "PARTITION_BYTES",
    "REDUCTIONS",
    "ArrayQuery",
    "DataRef",
    "TableQuery",
    "array_query",
    "compute_view",
    "table_query",
    "write_array_object",
    "write_table_object",
]

PARTITION_BYTES = 64 * 1024**2
"""About how many bytes (once read) a partition of a table result holds."""
CHUNK_BYTES = 4 * 1024**2
"""About how many bytes a chunk of an array result holds (at most, unless one element is more)."""
MAX_VIEW_BYTES = 1024**3
"""The most a table view's result, or an array view's selection, may hold in memory."""
REDUCTIONS = ("sum", "mean", "min", "max")
"""The reductions an array view may take."""


@dataclass(frozen=True)
class DataRef:
    """Where a view's source data is: the family, id and structure of a node, or of a server
    object whose data is stored as a node's."""

    family: str
    id: str
    structure: dict[str, Any]


@dataclass(frozen=True)
class TableQuery:
    """A table view, checked (see :func:`table_query`)."""

    columns: tuple[str, ...] = ()
    """The columns kept, in this order; empty: all."""
    filters: tuple[Filter, ...] = ()
    """The catalog's filters, ANDed, each key naming a column."""
    sort: tuple[tuple[str, bool], ...] = ()
    """(column, descending) keys, the first the most significant."""
    head: int | None = None
    tail: int | None = None


@dataclass(frozen=True)
class ArrayQuery:
    """An array view, checked (see :func:`array_query`)."""

    selection: Selection = ()
    """numpy basic indices, one per leading axis."""
    reduce: str | None = None
    """One of :data:`REDUCTIONS`, or ``None``."""
    axis: int | None = None
    """The axis of the selection's result reduced along; ``None``: all of them."""


# --- the queries as the wire says them ---------------------------------------------------------

_NODE_FILTERS = (FullText, Specs, StructureFamily)


_MOST_ROWS = 2**63 - 1


def table_query(message: proto.TableView) -> TableQuery:
    """``message`` checked; :class:`~..errors.InvalidRequestError` naming what is wrong (a
    malformed ``where_json``, a filter about nodes, head and tail together, a repeated or empty
    column). Whether the columns are the table's is checked against it (:func:`compute_view`)."""
    columns = tuple(message.columns)
    for column in columns:
        _check_column_name(column, "columns")
    if len(set(columns)) != len(columns):
        repeated = next(c for c in columns if columns.count(c) > 1)
        raise InvalidRequestError(f"columns holds {repeated[:100]!r} more than once")
    filters = tuple(parse_filters(message.where_json))
    for index, item in enumerate(filters):
        if isinstance(item, _NODE_FILTERS):
            op = item.wire()["op"]
            raise InvalidRequestError(
                f"where[{index}] ({op}) is about catalog nodes, not rows: a table view takes"
                " eq, noteq, lt, le, gt, ge, in, notin, contains, keypresent, regex and like"
            )
    sort = []
    for key in message.sort:
        _check_column_name(key.column, "sort")
        sort.append((key.column, bool(key.descending)))
    if message.head is not None and message.tail is not None:
        raise InvalidRequestError("Give head or tail, not both")
    # (Rows past 2**63 - 1 there never are; pyarrow's slice takes no more.)
    head = None if message.head is None else min(message.head, _MOST_ROWS)
    tail = None if message.tail is None else min(message.tail, _MOST_ROWS)
    return TableQuery(columns, filters, tuple(sort), head, tail)


def _check_column_name(name: str, what: str) -> None:
    if not name:
        raise InvalidRequestError(f"{what}: a column name must not be empty")


def array_query(message: proto.ArrayView) -> ArrayQuery:
    """``message`` checked; :class:`~..errors.InvalidRequestError` naming what is wrong (an
    axis both an index and a slice, a step of 0, too many axes, an unknown reduction, an axis
    without a reduction). Whether it fits the array is checked against it
    (:func:`compute_view`)."""
    if len(message.selection) > MAX_DIMS:
        raise InvalidRequestError(f"A selection has at most {MAX_DIMS} axes")
    selection: list[int | slice] = []
    for position, item in enumerate(message.selection):
        sliced = (item.start, item.stop, item.step)
        if item.index is not None:
            if any(part is not None for part in sliced):
                raise InvalidRequestError(
                    f"selection[{position}] is an index or a slice (start, stop, step), not both"
                )
            selection.append(item.index)
            continue
        if item.step == 0:
            raise InvalidRequestError(f"selection[{position}]: a slice's step must not be 0")
        selection.append(slice(*sliced))
    if message.reduce is not None and message.reduce not in REDUCTIONS:
        raise InvalidRequestError(
            f"reduce {message.reduce[:50]!r} is not one of {', '.join(REDUCTIONS)}"
        )
    if message.axis is not None and message.reduce is None:
        raise InvalidRequestError("axis is the axis of a reduction: give reduce too")
    return ArrayQuery(tuple(selection), message.reduce, message.axis)


# --- computing a view --------------------------------------------------------------------------


_NAMES = {
    "table": "a table",
    "array": "an array",
    "sparse": "a sparse array",
    "container": "a container",
}


async def compute_view(
    blobs: BlobStore, source: DataRef, query: TableQuery | ArrayQuery, result_id: str
) -> tuple[str, dict[str, Any]]:
    """Compute ``query`` on ``source`` and write the result under ``result_id`` as a node's
    data is; the result's family and structure. :class:`~..errors.InvalidRequestError` when
    the query does not fit the source (a table view of an array, an unknown column, a filter
    value of another kind than its column's, an index out of bounds, an axis out of range...),
    checked before any data is read. A failure leaves nothing written under ``result_id``."""
    want = "table" if isinstance(query, TableQuery) else "array"
    if source.family != want:
        raise InvalidRequestError(
            f"{_NAMES[want].capitalize()} view needs {_NAMES[want]}; the source is"
            f" {_NAMES.get(source.family, repr(source.family))}"
        )
    try:
        if isinstance(query, TableQuery):
            return "table", await _table_view(blobs, source, query, result_id)
        return "array", await _array_view(blobs, source, query, result_id)
    except BaseException:
        await to_the_end(lambda: blobs.remove([result_id]))
        raise


# --- tables ------------------------------------------------------------------------------------

Mask = Callable[[Any], Any]
"""A compiled filter: a table's rows → a boolean array without nulls."""


def _column_name(key: tuple[str, ...]) -> str:
    return ".".join(key)


def _compute_type(type_: Any) -> Any:
    """The type a column's values are compared as: a dictionary's values', ``float32`` for
    ``float16`` (which pyarrow's comparisons lack), ``float64`` for decimals (as JSON numbers
    are compared)."""
    if pyarrow.types.is_dictionary(type_):
        type_ = type_.value_type
    if pyarrow.types.is_float16(type_):
        return pyarrow.float32()
    return pyarrow.float64() if pyarrow.types.is_decimal(type_) else type_


_PLAIN = {
    pyarrow.string_view(): pyarrow.large_string(),
    pyarrow.binary_view(): pyarrow.large_binary(),
}
"""View types pyarrow cannot filter or take (yet), and what a table view makes of them."""


def _plain_schema(schema: Any) -> Any:
    """``schema`` with its columns of view types (:data:`_PLAIN`) as their plain types."""
    for index, field_ in enumerate(schema):
        plain = _PLAIN.get(field_.type)
        if plain is not None:
            schema = schema.set(index, field_.with_type(plain))
    return schema


def _kind(type_: Any) -> str:
    """A column type's kind, as the filters see it."""
    type_ = _compute_type(type_)
    types = pyarrow.types
    if types.is_boolean(type_):
        return "boolean"
    if types.is_integer(type_) or types.is_floating(type_):  # (decimals: as float64)
        return "number"
    if types.is_string(type_) or types.is_large_string(type_) or types.is_string_view(type_):
        return "string"
    if types.is_temporal(type_):
        return "temporal"
    if types.is_binary(type_) or types.is_large_binary(type_) or types.is_fixed_size_binary(type_):
        return "binary"
    lists = (types.is_list, types.is_large_list, types.is_fixed_size_list, types.is_list_view)
    if any(is_list(type_) for is_list in lists) or types.is_large_list_view(type_):
        return "list"
    return "other"


def _values(table: Any, name: str) -> Any:
    """The column ``name`` of ``table`` as it is compared (see :func:`_compute_type`)."""
    column = table.column(name)
    wanted = _compute_type(column.type)
    return column if wanted == column.type else column.cast(wanted)


class _Column:
    """A filter's column (or a list column's elements): its name and type, and the filter's
    place, for messages."""

    def __init__(self, name: str, type_: Any, where: str) -> None:
        self.name = name
        self.type = type_
        self.kind = _kind(type_)
        self.where = where

    @classmethod
    def of(cls, schema: Any, key: tuple[str, ...], where: str) -> _Column:
        """The column of ``schema`` that ``key`` names; refused if there is none."""
        name = _column_name(key)
        if name not in schema.names:
            hint = " (a key names one column, dots included)" if len(key) > 1 else ""
            raise InvalidRequestError(
                f"{where}: the table has no column {name[:100]!r}{hint}; its columns are"
                f" {schema.names[:50]}"
            )
        return cls(name, schema.field(name).type, where)

    def refuse(self, what: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"{self.where}: the column {self.name[:100]!r} holds {self.type}: {what}"
        )

    def operand(self, value: Any, *, ordered: bool = False) -> Any:
        """``value`` (not null) as a scalar to compare the column with; refused if it is not
        of the column's kind (or, ``ordered``, if the kind has no order the catalog knows)."""
        kind = self.kind
        if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
            return pyarrow.scalar(value)
        if kind == "string" and isinstance(value, str):
            return pyarrow.scalar(value, _compute_type(self.type))
        if kind == "boolean" and isinstance(value, bool) and not ordered:
            return pyarrow.scalar(value)
        if kind == "temporal" and isinstance(value, str):
            try:
                return pyarrow.scalar(value).cast(_compute_type(self.type))
            except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError) as exc:
                raise self.refuse(f"{value[:100]!r} is not one of its values: {exc}") from None
        wanted = {
            "number": "a number",
            "string": "a string",
            "boolean": "true or false" if not ordered else "no ordered comparison",
            "temporal": "an ISO 8601 string",
        }.get(kind, "no comparison with a value")
        raise self.refuse(f"it takes {wanted}, not {value!r}"[:300])


def _equal(column: _Column, value: Any) -> Mask:
    """Rows whose value equals ``value`` (``None``: is null)."""
    name = column.name
    if value is None:
        return lambda table: pc.is_null(table.column(name))
    operand = column.operand(value)
    return lambda table: pc.fill_null(pc.equal(_values(table, name), operand), False)


def _one_of(column: _Column, values: Sequence[Any]) -> Mask:
    """Rows whose value is one of ``values`` (``None`` among them: nulls too)."""
    name = column.name
    value_type = _compute_type(column.type)
    operands = [column.operand(value) for value in values if value is not None]
    kept = []
    for operand in operands:
        try:  # (a number the column's type cannot hold equals none of its values)
            kept.append(operand.cast(value_type))
        except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
            continue
    value_set = pyarrow.array([item.as_py() for item in kept], value_type)
    nulls = any(value is None for value in values)

    def mask(table: Any) -> Any:
        found = pc.is_in(_values(table, name), value_set=value_set, skip_nulls=True)
        return pc.or_(found, pc.is_null(table.column(name))) if nulls else found

    return mask


_ORDERS = {"lt": pc.less, "le": pc.less_equal, "gt": pc.greater, "ge": pc.greater_equal}


def _contains(column: _Column, value: Any) -> Mask:
    name = column.name
    if column.kind == "string":
        if not isinstance(value, str):
            raise column.refuse(f"contains takes a string (a substring), not {value!r}"[:300])
        return lambda table: pc.fill_null(pc.match_substring(_values(table, name), value), False)
    if column.kind != "list":
        raise column.refuse("contains needs a list column (or a string one: a substring)")
    element = _Column(f"{name}[]", _compute_type(column.type).value_type, column.where)
    operand = None if value is None else element.operand(value)

    def mask(table: Any) -> Any:
        lists = table.column(name).combine_chunks()
        if pyarrow.types.is_dictionary(lists.type):
            lists = lists.dictionary_decode()
        elements = pc.list_flatten(lists)
        if pyarrow.types.is_dictionary(elements.type):
            elements = elements.dictionary_decode()
        if operand is None:
            hits = pc.is_null(elements)
        else:
            hits = pc.fill_null(pc.equal(elements, operand), False)
        parents = pc.list_parent_indices(lists).to_numpy()
        found = np.zeros(table.num_rows, dtype=bool)
        found[parents[hits.to_numpy(zero_copy_only=False)]] = True
        return pyarrow.array(found)

    return mask


def _strings(column: _Column, op: str) -> str:
    if column.kind != "string":
        raise column.refuse(f"{op} needs a string column")
    return column.name


def _compiled(schema: Any, index: int, item: Filter) -> Mask:
    """``item`` (the ``index``-th filter) as a mask of a table of ``schema``'s rows;
    :class:`~..errors.InvalidRequestError` if it does not fit the column it names."""
    op = item.wire()["op"]
    where = f"where[{index}] ({op})"
    if isinstance(item, Comparison):
        column = _Column.of(schema, item.key, where)
        if item.op in ("eq", "noteq"):
            equal = _equal(column, item.value)
            return equal if item.op == "eq" else lambda table: pc.invert(equal(table))
        compare = _ORDERS[item.op]
        operand = column.operand(item.value, ordered=True)
        name = column.name
        return lambda table: pc.fill_null(compare(_values(table, name), operand), False)
    if isinstance(item, In):
        one_of = _one_of(_Column.of(schema, item.key, where), item.values)
        return one_of if item.op == "in" else lambda table: pc.invert(one_of(table))
    if isinstance(item, Contains):
        return _contains(_Column.of(schema, item.key, where), item.value)
    if isinstance(item, KeyPresent):
        name = _Column.of(schema, item.key, where).name
        check = pc.is_valid if item.exists else pc.is_null
        return lambda table: check(table.column(name))
    if isinstance(item, Regex):
        name = _strings(_Column.of(schema, item.key, where), op)
        pattern, ignore_case = item.pattern, not item.case_sensitive
        try:  # (RE2 compiles it: a pattern it refuses is refused before any data is read)
            pc.match_substring_regex(pyarrow.array([""]), pattern, ignore_case=ignore_case)
        except pyarrow.ArrowInvalid as exc:
            raise InvalidRequestError(
                f"{where}: a regular expression RE2 (pyarrow's) does not take: {exc}"
            ) from None

        def regex(table: Any) -> Any:
            found = pc.match_substring_regex(_values(table, name), pattern, ignore_case=ignore_case)
            return pc.fill_null(found, False)

        return regex
    if isinstance(item, Like):
        name = _strings(_Column.of(schema, item.key, where), op)
        pattern = item.pattern
        return lambda table: pc.fill_null(pc.match_like(_values(table, name), pattern), False)
    raise InvalidRequestError(f"{where} is about catalog nodes, not rows")


_SORTABLE = frozenset({"number", "string", "boolean", "temporal", "binary"})


@dataclass(frozen=True)
class _TablePlan:
    """A table query checked against the table's schema, its filters compiled."""

    schema: Any
    """The table's schema, view types as plain ones (:func:`_plain_schema`)."""
    plain: bool
    """Whether that is the stored schema (else the partitions are cast to it)."""
    masks: tuple[Mask, ...]
    kept: tuple[str, ...]
    """The columns kept from each partition: the result's, then those sorted by only."""
    columns: tuple[str, ...]
    """The result's columns."""


def _plan(stored: Any, query: TableQuery) -> _TablePlan:
    schema = _plain_schema(stored)
    tables.check_columns(schema, query.columns)
    tables.check_columns(schema, [column for column, _ in query.sort])
    for column, _ in query.sort:
        type_ = schema.field(column).type
        if _kind(type_) not in _SORTABLE:
            raise InvalidRequestError(f"sort: the column {column[:100]!r} holds {type_}: no order")
    masks = tuple(_compiled(schema, index, item) for index, item in enumerate(query.filters))
    empty = schema.empty_table()
    for index, mask in enumerate(masks):
        try:  # (a comparison pyarrow has no kernel for is refused before any data is read)
            mask(empty)
        except (pyarrow.ArrowNotImplementedError, pyarrow.ArrowInvalid, TypeError) as exc:
            raise InvalidRequestError(f"where[{index}] does not fit its column: {exc}") from None
    columns = query.columns or tuple(schema.names)
    kept = tuple(dict.fromkeys([*columns, *(column for column, _ in query.sort)]))
    return _TablePlan(schema, schema.equals(stored), masks, kept, columns)


def _filtered(stream: memoryview, plan: _TablePlan) -> Any:
    """The rows of a stored partition ``stream`` that every mask keeps, of the kept columns."""
    part = tables.read_stream(stream)
    if not plan.plain:
        part = part.cast(plan.schema)
    kept = part.select(list(plan.kept))
    if not plan.masks:
        return kept
    mask = plan.masks[0](part)
    for more in plan.masks[1:]:
        mask = pc.and_(mask, more(part))
    return kept.filter(mask)


def _sorted_cut(table: Any, query: TableQuery, columns: Sequence[str]) -> Any:
    """``table`` sorted by ``query``'s keys, cut to its head or tail, of ``columns``."""
    if query.sort:
        # Ascending puts nulls last, descending first (the catalog's order of missing values).
        keys = {f"k{n}": _values(table, column) for n, (column, _) in enumerate(query.sort)}
        sort_keys = [
            (f"k{n}", "descending", "at_start") if descending else (f"k{n}", "ascending", "at_end")
            for n, (_, descending) in enumerate(query.sort)
        ]
        indices = pc.sort_indices(pyarrow.table(keys), sort_keys=sort_keys)
        table = table.take(indices)
    if query.head is not None:
        table = table.slice(0, query.head)
    elif query.tail is not None:
        table = table.slice(max(table.num_rows - query.tail, 0))
    return table.select(list(columns))


async def _table_view(
    blobs: BlobStore, source: DataRef, query: TableQuery, result_id: str
) -> dict[str, Any]:
    plan = _plan(tables.decode_schema(source.structure["arrow_schema"]), query)
    parts = []
    held = 0
    for index in range(source.structure.get("npartitions", 0)):
        (found,) = await tables.stored_partitions(blobs, source.id, [index])
        if found is None:  # (declared, never written: no rows)
            continue
        part = await anyio.to_thread.run_sync(_filtered, found[0], plan)
        held += part.nbytes
        if held > MAX_VIEW_BYTES:
            raise InvalidRequestError(
                f"The view would hold more than {MAX_VIEW_BYTES // 2**20} MiB: filter more rows"
                " out, or keep fewer columns"
            )
        parts.append(part)

    def combined() -> Any:
        whole = pyarrow.concat_tables(parts) if parts else plan.schema.empty_table()
        return _sorted_cut(whole.select(list(plan.kept)), query, plan.columns)

    return await write_table_object(blobs, result_id, await anyio.to_thread.run_sync(combined))


def _partitions(table: Any) -> list[tuple[bytes, int]]:
    """``table`` cut into partitions of about :data:`PARTITION_BYTES` (at most
    :data:`~..data.tables.MAX_PARTITIONS`), each as its stored stream and its row count."""
    rows = table.num_rows
    if rows == 0:
        return []
    per_row = max(table.nbytes / rows, 1.0)
    size = max(1, int(PARTITION_BYTES // per_row), -(-rows // tables.MAX_PARTITIONS))
    pieces = (table.slice(start, size) for start in range(0, rows, size))
    return [(table_stream(piece), piece.num_rows) for piece in pieces]


async def write_table_object(blobs: BlobStore, result_id: str, table: Any) -> dict[str, Any]:
    """Write ``table`` (a :class:`pyarrow.Table`) under ``result_id`` as a table node's
    partitions are stored; its structure (an empty table: no partitions). The table's schema
    is the structure's (metadata included); repeated column names are refused
    (:class:`~..catalog.nodes.InvalidContentError`)."""
    structure = tables.validate_structure({"arrow_schema": tables.encode_schema(table.schema)})
    partitions = await anyio.to_thread.run_sync(_partitions, table)
    for index, (stream, rows) in enumerate(partitions):
        await blobs.put(tables.partition_key(result_id, index), stream)
        structure = tables.structure_after_write(structure, index, rows)
    return structure


# --- arrays ------------------------------------------------------------------------------------


def _reduced(values: np.ndarray[Any, Any], op: str, axis: int | None) -> np.ndarray[Any, Any]:
    """``values`` reduced by ``op`` along ``axis`` (``None``: all, a 0-d result)."""
    count = values.size if axis is None else values.shape[axis]
    if count == 0 and op != "sum":
        raise InvalidRequestError(f"The {op} of nothing: the reduced axis has no elements")
    reduction: Callable[..., Any] = getattr(np, op)
    try:
        return np.asarray(reduction(values, axis=axis))
    except TypeError:  # (numpy's UFuncTypeError among them)
        raise InvalidRequestError(f"Cannot take the {op} of {values.dtype.str} values") from None


async def _array_view(
    blobs: BlobStore, source: DataRef, query: ArrayQuery, result_id: str
) -> dict[str, Any]:
    structure = ArrayStructure.of(source.structure)
    read = await ArrayData(blobs, source.id, structure).selection(query.selection)
    axis = query.axis
    if axis is not None:
        ndim = len(read.shape)
        if not -ndim <= axis < ndim:
            raise InvalidRequestError(
                f"axis {axis} is out of range: the selection has {ndim} dimensions"
                + (f" (axes 0 to {ndim - 1}, or -{ndim} to -1)" if ndim else "")
            )
        axis %= ndim
    if read.nbytes > MAX_VIEW_BYTES:
        raise InvalidRequestError(
            f"The selection is {read.nbytes:,} bytes; a view reads at most"
            f" {MAX_VIEW_BYTES // 2**20} MiB: select less"
        )
    values = await read.whole()
    if query.reduce is not None:
        values = await anyio.to_thread.run_sync(_reduced, values, query.reduce, axis)
    try:
        return await write_array_object(blobs, result_id, values)
    except InvalidContentError as exc:  # (a result of a type arrays do not hold)
        raise InvalidRequestError(exc.message) from None


def _chunks(shape: tuple[int, ...], itemsize: int) -> list[int]:
    """Chunks of about :data:`CHUNK_BYTES` in C order: whole along the last axes, cut along the
    first one that makes them too large (and one element along those before it)."""
    chunks = [max(length, 1) for length in shape]
    for axis in range(len(chunks)):
        inner = math.prod(chunks[axis + 1 :]) * itemsize
        if chunks[axis] * inner <= CHUNK_BYTES:
            break
        chunks[axis] = max(1, CHUNK_BYTES // inner)
    return chunks


async def write_array_object(
    blobs: BlobStore, result_id: str, array: np.ndarray[Any, Any]
) -> dict[str, Any]:
    """Write ``array`` under ``result_id`` as an array node's zarr v3 array is stored (its
    ``zarr.json`` and chunks of about :data:`CHUNK_BYTES`); its structure. A dtype arrays do
    not hold is refused (:class:`~..catalog.nodes.InvalidContentError`); a big-endian one is
    stored little-endian."""
    dtype = array.dtype
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    structure = validate_array_structure(
        {
            "data_type": dtype.str,
            "shape": list(array.shape),
            "chunks": _chunks(array.shape, dtype.itemsize),
        }
    )
    body = await anyio.to_thread.run_sync(lambda: as_bytes(array.astype(dtype, copy=False)))
    data = ArrayData(blobs, result_id, ArrayStructure.of(structure))
    await data.write_region((0,) * array.ndim, array.shape, body)
    return structure
