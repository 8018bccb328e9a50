"""Export formats: what each structure family can be read as besides its wire form, and the
rendering into them.

A format is asked for by ``?format=`` (a MIME type, or a file suffix with or without its dot:
``parquet``, ``.parquet``) or by an ``Accept`` header; :func:`resolve_format` picks it, or
``None`` for the family's own wire form (raw bytes for arrays, an Arrow IPC stream for tables
and sparse arrays), and refuses a format the node cannot be had in with
:class:`NotAcceptableError` (406), whose message lists those it can. The renderers do their
CPU work in a worker thread, never in the event loop; a table is rendered a partition at a
time (:class:`TableRendering`), never whole; data of a type a format cannot hold
(pyarrow refusing it) is :class:`~..catalog.nodes.InvalidContentError` (422) saying so.

=========  ===================================================================================
family     formats
=========  ===================================================================================
array      raw bytes (``application/octet-stream``), ``.npy``, CSV (1-d and 2-d; no header),
           JSON (nested lists; at most :data:`MAX_JSON_VALUES` values)
table      Arrow IPC stream, Parquet, CSV (with a header), JSON (a list of records; at most
           :data:`MAX_JSON_VALUES` values, rows times columns)
sparse     Arrow IPC stream (the COO table), ``.npy`` (dense; at most :data:`MAX_DENSE_BYTES`)
=========  ===================================================================================
"""

from __future__ import annotations

import base64
import datetime
import decimal
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import numpy
import pyarrow
import pyarrow.csv
import pyarrow.ipc
import pyarrow.parquet

from ..catalog.nodes import InvalidContentError
from ..errors import ApiError

__all__ = [
    "ARROW",
    "CSV",
    "JSON",
    "MAX_DENSE_BYTES",
    "MAX_JSON_VALUES",
    "NPY",
    "PARQUET",
    "RAW",
    "Format",
    "NotAcceptableError",
    "check_json_values",
    "formats",
    "formats_answer",
    "render_array",
    "render_sparse",
    "TableRendering",
    "resolve_format",
    "table_stream",
]

MAX_JSON_VALUES = 4_000_000
"""The most values (array elements; table cells, rows times columns) exported as JSON; more is
refused (422). Counted, not sized: JSON text is 10 to 50 times its data in memory."""
MAX_DENSE_BYTES = 256 * 1024 * 1024
"""The largest dense array a sparse array is exported as; larger is refused (422)."""


@dataclass(frozen=True)
class Format:
    """An export format: its MIME type and the file suffixes that name it."""

    mime: str
    suffixes: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """The format as ``GET /formats`` lists it."""
        return {"mime": self.mime, "suffixes": list(self.suffixes)}


RAW = Format("application/octet-stream", (".bin",))
"""An array's raw little-endian C-order bytes (its wire form)."""
NPY = Format("application/x-npy", (".npy",))
CSV = Format("text/csv", (".csv",))
JSON = Format("application/json", (".json",))
ARROW = Format("application/vnd.apache.arrow.stream", (".arrow", ".arrows"))
"""An Arrow IPC stream (the wire form of tables and sparse arrays)."""
PARQUET = Format("application/vnd.apache.parquet", (".parquet",))

_NATIVE = {"array": RAW, "table": ARROW, "sparse": ARROW}


class NotAcceptableError(ApiError):
    """A format the node cannot be exported as (406); the message lists those it can."""

    status = 406
    error_type = "invalid_request"


def formats(family: str, structure: Mapping[str, Any] | None) -> list[Format]:
    """The formats a node of ``family`` with ``structure`` can be read as (its wire form
    first); none for a family without data (a container)."""
    if family == "array":
        ndim = len((structure or {}).get("shape", ()))
        return [RAW, NPY, *([CSV] if 1 <= ndim <= 2 else []), JSON]
    if family == "table":
        return [ARROW, PARQUET, CSV, JSON]
    if family == "sparse":
        return [ARROW, NPY]
    return []


def documented_content(family: str) -> dict[str, Any]:
    """The OpenAPI ``content`` of a read's 200 for ``family``: its wire form, then each export
    (for any structure: CSV of an array needs 1 or 2 dimensions)."""
    every = formats(family, {"shape": [1]})
    return {fmt.mime: {"schema": {"type": "string", "format": "binary"}} for fmt in every}


def formats_answer(family: str, structure: Mapping[str, Any] | None) -> dict[str, Any]:
    """The body of ``GET /formats/{path}``."""
    return {"formats": [fmt.as_json() for fmt in formats(family, structure)]}


def _listing(available: Sequence[Format]) -> str:
    return ", ".join(f"{fmt.mime} ({', '.join(fmt.suffixes)})" for fmt in available) or "none"


def _media_ranges(accept: str) -> list[tuple[float, str]]:
    """The media ranges of an ``Accept`` header with their weights, best first (ties: in the
    header's order); those weighted 0 left out."""
    ranges: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        if not media:
            continue
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
                if not math.isfinite(weight):
                    weight = 0.0
        if weight > 0:
            ranges.append((-weight, index, media.lower()))
    return [(-weight, media) for weight, _, media in sorted(ranges)]


def _matches(media: str, fmt: Format) -> bool:
    if media == "*/*":
        return True
    if media.endswith("/*"):
        return fmt.mime.startswith(media[:-1])
    return media == fmt.mime


def resolve_format(
    family: str,
    structure: Mapping[str, Any] | None,
    requested: str | None,
    accept: str | None,
) -> Format | None:
    """The export format a request asks for: by ``requested`` (``?format=``: a MIME type or a
    suffix, with or without its dot), else by ``accept`` (the ``Accept`` header); ``None`` when
    it asks for the family's wire form (no ``format``, no ``Accept``, or one its wire form or a
    wildcard satisfies first). :class:`NotAcceptableError` (406) for a format the node cannot
    be had in (the message lists those it can)."""
    available = formats(family, structure)
    native = _NATIVE.get(family)
    if requested is not None:
        wanted = requested.strip().lower()
        suffix = wanted if wanted.startswith(".") else "." + wanted
        for fmt in available:
            if wanted == fmt.mime or suffix in fmt.suffixes:
                return None if fmt == native else fmt
        raise NotAcceptableError(
            f"{family!r} nodes cannot be exported as {requested[:100]!r};"
            f" the formats are: {_listing(available)}"
        )
    if accept is None or not accept.strip():
        return None
    for _weight, media in _media_ranges(accept):
        if media.endswith("/*"):  # a wildcard: the wire form if it matches, else the first
            chosen = native if native is not None and _matches(media, native) else None
            chosen = chosen or next((fmt for fmt in available if _matches(media, fmt)), None)
        else:
            chosen = next((fmt for fmt in available if fmt.mime == media), None)
        if chosen is not None:
            return None if chosen == native else chosen
    raise NotAcceptableError(
        f"{family!r} nodes cannot be had as {accept[:200]!r}; the formats are:"
        f" {_listing(available)}"
    )


# --- arrays ---------------------------------------------------------------------------------


def _little_endian(values: numpy.ndarray[Any, Any]) -> numpy.ndarray[Any, Any]:
    dtype = values.dtype
    if dtype.byteorder == ">":
        values = values.astype(dtype.newbyteorder("<"))
    return numpy.ascontiguousarray(values)


def _npy(values: numpy.ndarray[Any, Any]) -> bytes:
    sink = io.BytesIO()
    numpy.lib.format.write_array(sink, _little_endian(values), allow_pickle=False)
    return sink.getvalue()


def _csv_column(values: numpy.ndarray[Any, Any]) -> Any:
    """One column of an array as an Arrow array CSV can hold (complex as ``a+bj`` text)."""
    kind = values.dtype.kind
    if kind == "c":
        return pyarrow.array([f"{v.real!r}{v.imag:+}j" for v in values.tolist()])
    if kind == "f" and values.dtype.itemsize == 2:
        values = values.astype(numpy.float32)  # exactly: CSV writes no float16
    if kind == "S":
        return pyarrow.array(values.tolist(), pyarrow.binary())
    return pyarrow.array(values)


def _array_csv(values: numpy.ndarray[Any, Any]) -> bytes:
    matrix = values.reshape(-1, 1) if values.ndim == 1 else values
    columns = [_csv_column(matrix[:, j]) for j in range(matrix.shape[1])]
    table = pyarrow.table(columns, names=[str(j) for j in range(len(columns))])
    sink = io.BytesIO()
    pyarrow.csv.write_csv(table, sink, pyarrow.csv.WriteOptions(include_header=False))
    return sink.getvalue()


def _json_ready(values: numpy.ndarray[Any, Any]) -> Any:
    """Nested lists of JSON values for ``values``: non-finite floats as null, complex numbers
    as ``[real, imag]``, datetimes as ISO 8601 text, timedeltas as counts of their unit,
    bytes as Latin-1 text."""
    kind = values.dtype.kind
    if kind == "c":
        return _json_ready(numpy.stack([values.real, values.imag], axis=-1))
    if kind == "f":
        finite = numpy.isfinite(values)
        if not finite.all():
            objects = values.astype(object)
            objects[~finite] = None
            return objects.tolist()
        return values.tolist()
    if kind == "M":
        return numpy.datetime_as_string(values).tolist()
    if kind == "m":
        return values.astype(numpy.int64).tolist()
    if kind == "S":
        return numpy.char.decode(values, "latin-1").tolist()
    return values.tolist()


def check_json_values(count: int) -> None:
    """Refuse (:class:`~..catalog.nodes.InvalidContentError`, 422) a JSON export of ``count``
    values, more than :data:`MAX_JSON_VALUES`; call it before reading the data."""
    if count > MAX_JSON_VALUES:
        raise InvalidContentError(
            f"JSON exports hold at most {MAX_JSON_VALUES:,} values; this is {count:,}: export"
            " a slice or fewer columns, or as another format"
        )


def _dumps(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=default
    ).encode()


def _array_json(values: numpy.ndarray[Any, Any]) -> bytes:
    return _dumps(_json_ready(values))


_ARRAY_RENDERERS: dict[Format, Callable[[numpy.ndarray[Any, Any]], bytes]] = {
    RAW: lambda values: _little_endian(values).tobytes(),
    NPY: _npy,
    CSV: _array_csv,
    JSON: _array_json,
}


async def render_array(values: numpy.ndarray[Any, Any], fmt: Format) -> bytes:
    """``values`` (an array or a selection of one) in ``fmt``, one of :func:`formats` of
    arrays (in a worker thread)."""
    renderer = _ARRAY_RENDERERS.get(fmt)
    if renderer is None or (fmt == CSV and not 1 <= values.ndim <= 2):
        raise NotAcceptableError(
            f"An array of {values.ndim} dimensions cannot be had as {fmt.mime}"
        )
    if fmt == JSON:
        check_json_values(values.size)
    return await anyio.to_thread.run_sync(_rendered, renderer, values, fmt)


# --- tables ---------------------------------------------------------------------------------


def table_stream(table: Any) -> bytes:
    """``table`` (a :class:`pyarrow.Table`) as an Arrow IPC stream, its batches as they are
    (blocking: call it in a worker thread)."""
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _rendered(renderer: Callable[[Any], bytes], data: Any, fmt: Format) -> bytes:
    """``renderer(data)``; pyarrow refusing a type the format cannot hold (a CSV of datetimes
    in months, a Parquet of intervals) is a 422 saying so, not a 500."""
    try:
        return renderer(data)
    except pyarrow.ArrowException as exc:
        raise InvalidContentError(f"The data cannot be written as {fmt.mime}: {exc}") from None


class _Pieces:
    """A write-only binary file that keeps what is written to it until :meth:`take` hands
    it on: the sink of a pyarrow writer whose output goes out partition by partition."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        piece = bytes(data)
        self._pieces.append(piece)
        self._position += len(piece)
        return len(piece)

    def tell(self) -> int:
        return self._position

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[bytes]:
        """What was written since the last call, in the pieces it was written in."""
        pieces, self._pieces = self._pieces, []
        return pieces


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} values cannot be written as JSON")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _json_records(table: Any) -> bytes:
    records = _finite(table.to_pylist())
    try:
        return _dumps(records, _json_default)[1:-1]  # without the list's brackets
    except TypeError as exc:
        raise InvalidContentError(f"The table cannot be written as JSON: {exc}") from None


class TableRendering:
    """A table in an export format, written partition by partition: :meth:`add` each part (a
    :class:`pyarrow.Table` of ``schema``) in order, then :meth:`finish`; each gives the bytes
    to send next (in pieces, as the writer made them: never joined). Arrow is one IPC stream
    (each part's dictionaries replacing the last ones), Parquet a row group (or more) per
    part, CSV one header then the rows, JSON one list of records. Blocking: call them in a
    worker thread, one at a time. A type the format cannot hold is
    :class:`~..catalog.nodes.InvalidContentError` (422), raised by the first part that has
    it."""

    def __init__(self, schema: Any, fmt: Format) -> None:
        if fmt not in (ARROW, PARQUET, CSV, JSON):
            raise NotAcceptableError(f"A table cannot be had as {fmt.mime}")
        self.fmt = fmt
        self._schema = schema
        self._sink = _Pieces()
        self._writer: Any = None
        self._records = 0  # JSON: the parts with rows written so far

    def _open(self) -> Any:
        if self.fmt == ARROW:
            return pyarrow.ipc.new_stream(self._sink, self._schema)
        if self.fmt == PARQUET:
            return pyarrow.parquet.ParquetWriter(self._sink, self._schema)
        return pyarrow.csv.CSVWriter(self._sink, self._schema)

    def add(self, table: Any) -> list[bytes]:
        """The bytes of ``table``, the next part (the format's head before the first)."""
        if self.fmt == JSON:
            head = b"" if self._records or self._sink.tell() else b"["
            self._sink.write(head)
            if table.num_rows:
                self._sink.write(b"," if self._records else b"")
                self._sink.write(_json_records(table))
                self._records += 1
            return self._sink.take()
        try:
            if self._writer is None:
                self._writer = self._open()
            self._writer.write_table(table)
        except pyarrow.ArrowException as exc:
            raise InvalidContentError(
                f"The data cannot be written as {self.fmt.mime}: {exc}"
            ) from None
        return self._sink.take()

    def finish(self) -> list[bytes]:
        """The bytes that end the export (a Parquet footer, an IPC end of stream)."""
        if self.fmt == JSON:
            return [b"" if self._sink.tell() else b"[", b"]"]
        try:
            if self._writer is None:
                self._writer = self._open()
            self._writer.close()
        except pyarrow.ArrowException as exc:
            raise InvalidContentError(
                f"The data cannot be written as {self.fmt.mime}: {exc}"
            ) from None
        return self._sink.take()


# --- sparse arrays ----------------------------------------------------------------------------


def _dense(table: Any, shape: tuple[int, ...], dtype: numpy.dtype[Any]) -> memoryview:
    """The ``.npy`` file of a sparse array made dense, in one buffer: its header, then the
    dense array filled in place there (not made apart and copied)."""
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    head = io.BytesIO()
    header = {"descr": numpy.lib.format.dtype_to_descr(dtype), "fortran_order": False}
    numpy.lib.format.write_array_header_1_0(head, {**header, "shape": shape})
    start = head.tell()
    count = math.prod(shape)
    body = bytearray(start + count * dtype.itemsize)  # zeros
    body[:start] = head.getvalue()
    dense = numpy.frombuffer(body, dtype, count, start).reshape(shape)
    coords = tuple(
        table.column(f"coord_{axis}").to_numpy(zero_copy_only=False) for axis in range(len(shape))
    )
    data = table.column("data").to_numpy(zero_copy_only=False)
    numpy.add.at(dense, coords, data)  # duplicates summed, as COO.todense() does (bools: or)
    return memoryview(body)


async def render_sparse(
    table: Any, structure: Mapping[str, Any], fmt: Format
) -> bytes | memoryview:
    """A sparse array (its COO ``table``, as stored, and its node's ``structure``) in ``fmt``,
    one of :func:`formats` of sparse arrays (in a worker thread)."""
    if fmt == ARROW:
        return await anyio.to_thread.run_sync(table_stream, table)
    if fmt != NPY:
        raise NotAcceptableError(f"A sparse array cannot be had as {fmt.mime}")
    shape = tuple(int(n) for n in structure["shape"])
    dtype = numpy.dtype(structure["data_type"])
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_DENSE_BYTES:
        raise InvalidContentError(
            f"A sparse array is exported dense (.npy) only up to {MAX_DENSE_BYTES // 2**20} MiB;"
            f" this one would be {size:,} bytes: export it as Arrow"
        )
    return await anyio.to_thread.run_sync(_dense, table, shape, dtype)
