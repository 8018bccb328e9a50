"""Tables: a node of the ``table`` family, read and written as Arrow IPC streams.

A table is a sequence of partitions that share one Arrow schema (the node's ``structure``
holds it, with the columns and the rows of each partition). A whole read is one request: the
server sends the stored partitions one after another as one IPC stream (measured faster than
a request per partition, whose authenticated round trips cost the server more than the bytes);
a pandas ``DataFrame`` is made only at the end, and only when asked for (``as_="pandas"``, the
default, like Tiled). Bodies go into one buffer that Arrow decodes in place.
Decoding, conversion and encoding of large tables run in a worker thread, never on the loop.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, overload

import anyio

from .._core.bulk import BufferSink
from .._core.compression import Compression, accept_encoding
from .._core.concurrency import Prefetch, run_bounded, to_the_end
from .._core.context import ClientContext
from .._core.downloads import download_to_file, file_suffix
from .._core.errors import AiosdkError, ConfigurationError, ProtocolError
from .._core.optional import require
from .._core.progress import Progress, check_progress
from .frames import to_pandas
from .metadata import JSONObject
from .nodes import AsyncNode, call, route

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

    from .containers import AsyncContainer

__all__ = [
    "ARROW_STREAM",
    "PARTITION_BYTES",
    "AsyncTableClient",
    "discard",
    "export_to",
    "encode_ipc",
    "fetch_arrow",
    "send_ipc",
    "to_arrow",
    "write_dataframe",
]

T = TypeVar("T")

ARROW_STREAM = "application/vnd.apache.arrow.stream"
"""The media type of table bodies: the Arrow IPC streaming format."""
PARTITION_BYTES = 16 * 2**20
"""``write_dataframe(partitions=None)`` splits a table into partitions of about this size."""
WORKER_BYTES = 2**20
"""Decoding or encoding more bytes than this runs in a worker thread (conversions from and to
pandas always do: they may read the time zone database too)."""
UPLOAD_CONCURRENCY = 4
"""Partitions encoded and uploaded at once by ``write_dataframe``."""

TableKind = Literal["pandas", "arrow"]
"""What a table read gives: a pandas ``DataFrame``, or a pyarrow ``Table``."""
AsPandas = Literal["pandas"]
AsArrow = Literal["arrow"]


def _pyarrow() -> Any:
    return require("pyarrow", "tables")


async def _in_worker(nbytes: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``: in a worker thread when it handles more than :data:`WORKER_BYTES` (a
    large decode or conversion would stall every other task of the loop), else right here (a
    thread hop costs more than a small one)."""
    if nbytes > WORKER_BYTES:
        return await anyio.to_thread.run_sync(fn, *args)
    return fn(*args)


# -- bodies ----------------------------------------------------------------------------------


class _Body(BufferSink):
    """A download sink that gathers a body into one Arrow buffer, decoded in place.

    When the transport says the body's size first (:meth:`begin`), the buffer is allocated
    once at that size and the body goes straight into it (the fast transport receives it
    there, the socket writing into it); otherwise its spans are kept and joined once
    at the end (no copy at all for a body that came as one span). A restart (a body at offset
    0 again, after a broken connection) begins again: what was gathered is dropped."""

    __slots__ = ("_joined", "buffer", "size", "spans")

    def __init__(self) -> None:
        self.spans: list[bytes | memoryview] = []
        self.size = 0
        self.buffer: memoryview | None = None
        self._joined: Any = None

    def begin(self, size: int | None) -> None:
        """A body of ``size`` bytes (``None``: not known) starts at offset 0."""
        self.spans.clear()
        self.size = 0
        self.buffer = self._joined = None
        if size:
            self._joined = _pyarrow().allocate_buffer(size)
            self.buffer = memoryview(self._joined).cast("B")

    def filled(self, offset: int, size: int) -> None:
        """``buffer[offset : offset + size]`` was received."""
        self.size = offset + size

    def __call__(self, offset: int, span: bytes | memoryview) -> None:
        if offset != self.size:
            raise ProtocolError(f"a body span at offset {offset}, expected {self.size}")
        end = offset + len(span)
        if self.buffer is None:
            self.spans.append(span)
        elif end <= len(self.buffer):
            self.buffer[offset:end] = span
        else:
            raise ProtocolError(f"the body is longer than the {len(self.buffer)} bytes announced")
        self.size = end

    def result(self) -> Any:
        """The body as one Arrow buffer."""
        pa = _pyarrow()
        if self._joined is not None:
            if self.size != self._joined.size:
                raise ProtocolError(f"the body has {self.size} bytes, not {self._joined.size}")
            return self._joined
        if len(self.spans) == 1:
            return pa.py_buffer(self.spans[0])
        joined = pa.allocate_buffer(self.size)
        view = memoryview(joined).cast("B")
        at = 0
        for span in self.spans:
            view[at : at + len(span)] = span
            at += len(span)
        self.spans.clear()
        return joined


def _decode(buffer: Any) -> Any:
    pa = _pyarrow()
    try:
        return pa.ipc.open_stream(buffer).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ProtocolError(f"the server's answer is not an Arrow IPC stream: {exc}") from exc


async def fetch_arrow(
    ctx: ClientContext,
    path: str,
    params: Mapping[str, Any] | None = None,
    compression: Compression = None,
) -> pa.Table:
    """The Arrow table a ``GET`` of ``path`` answers with (an IPC stream), decoded in place;
    ``compression="zstd"`` lets the server send it zstd-encoded (see
    :mod:`aiosdk._core.compression`)."""
    headers = {"Accept": ARROW_STREAM, **accept_encoding(compression)}
    body = _Body()
    await ctx.download("GET", path, params=params, headers=headers, sink=body)
    size = body.size
    return await _in_worker(size, lambda: _decode(body.result()))


def encode_ipc(table: pa.Table) -> pa.Buffer:
    """``table`` as one Arrow IPC stream (its schema, then its record batches)."""
    pa = _pyarrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


async def send_ipc(
    ctx: ClientContext,
    method: str,
    path: str,
    table: pa.Table,
    params: Mapping[str, Any],
    lookup: str,
) -> Any:
    """``table`` sent as an IPC stream to the node at ``lookup``; the server's JSON answer
    (``None`` if it has none). A ``PUT`` (a partition replaced, or the next one written) is
    idempotent by itself: it goes without an ``Idempotency-Key``, which would have the server
    keep a record of the whole body; an append (``POST``) keeps its key."""
    body = await _in_worker(table.nbytes, encode_ipc, table)
    headers = {"Content-Type": ARROW_STREAM}
    return await call(
        ctx,
        method,
        path,
        params=params,
        content=memoryview(body),
        headers=headers,
        lookup=lookup,
        idempotency_key=method != "PUT",
    )


async def export_to(
    node: AsyncNode,
    prefix: str,
    file: str | os.PathLike[str] | IO[bytes],
    format: str | None,
    params: Mapping[str, Any],
    progress: Progress,
) -> None:
    """Stream ``node``'s data, rendered by the server in ``format`` (a media type or a suffix;
    ``None``: ``file``'s suffix), from ``GET prefix/<path>`` into ``file``."""
    check_progress(progress)
    fmt = format if format is not None else file_suffix(file)
    if not isinstance(fmt, str) or not fmt:
        raise ConfigurationError(
            f"say which format to export {node.path!r} in: format='.parquet' (or a media type,"
            " or a path with a suffix); await node.formats() lists them"
        )
    await download_to_file(
        node._ctx, route(prefix, node.path), {**params, "format": fmt}, file, progress, node.path
    )


# -- tables ----------------------------------------------------------------------------------


def _check_kind(as_: object) -> TableKind:
    if as_ not in ("pandas", "arrow"):
        raise ConfigurationError(f'as_ must be "pandas" or "arrow", not {as_!r}')
    return as_


async def _convert(table: pa.Table, as_: TableKind) -> Any:
    if as_ == "arrow":
        return table
    require("pandas", "reading tables as pandas DataFrames")
    # Always in a worker: besides its CPU, a conversion may read the time zone database.
    return await anyio.to_thread.run_sync(to_pandas, table)


async def to_arrow(df: object) -> pa.Table:
    """``df`` (a pandas ``DataFrame``, a pyarrow ``Table`` or ``RecordBatch``) as a pyarrow
    ``Table``; :class:`~aiosdk.ConfigurationError` for anything else, or for a DataFrame
    Arrow cannot represent (a column of mixed types, say)."""
    pa = _pyarrow()
    if isinstance(df, pa.Table):
        return df
    if isinstance(df, pa.RecordBatch):
        return pa.Table.from_batches([df])
    pandas = sys.modules.get("pandas")  # a DataFrame was made with pandas: it is imported
    if pandas is None or not isinstance(df, pandas.DataFrame):
        raise ConfigurationError(
            f"expected a pandas DataFrame or a pyarrow Table, not {type(df).__name__}"
        )
    try:  # in a worker: besides its CPU, a conversion may read the time zone database
        return await anyio.to_thread.run_sync(pa.Table.from_pandas, df)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ConfigurationError(
            f"this DataFrame cannot be stored as an Arrow table: {exc}"
        ) from exc


def _split(nrows: int, nbytes: int, partitions: object) -> list[tuple[int, int]]:
    """``(offset, length)`` of each partition: ``partitions`` of them (as even as can be), or
    for ``None`` as many as keep each near :data:`PARTITION_BYTES` (one for a small table)."""
    if partitions is None:
        count = min(max(1, math.ceil(nbytes / PARTITION_BYTES)), max(1, nrows))
    elif isinstance(partitions, int) and not isinstance(partitions, bool) and partitions >= 1:
        count = partitions
    else:
        raise ConfigurationError(f"partitions must be an int >= 1 or None, not {partitions!r}")
    size, extra = divmod(nrows, count)
    bounds, offset = [], 0
    for i in range(count):
        length = size + (i < extra)
        bounds.append((offset, length))
        offset += length
    return bounds


def _schema_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize()).decode("ascii")


class AsyncTableClient(AsyncNode):
    """A table: partitions of rows sharing one Arrow schema.

    ``await t.read()`` (a pandas ``DataFrame``; ``as_="arrow"`` for a pyarrow ``Table``),
    ``await t.read(columns=["t", "v"])``, ``await t.read_partition(2)``,
    ``async for part in t.iter_partitions(): ...``, ``await t.append_partition(df)``,
    ``await t.write_partition(df, 0)``, ``await t.export("events.parquet")``.
    """

    def _apply(self, item: Mapping[str, Any]) -> None:
        super()._apply(item)
        self._schema: Any = None

    def _structure(self) -> dict[str, Any]:
        structure = self._item.get("structure")
        if not isinstance(structure, dict):
            raise ProtocolError(f"the table {self.path!r} has no structure")
        return structure

    @property
    def columns(self) -> list[str]:
        """The names of the columns, in order."""
        return [str(name) for name in self._structure().get("columns", ())]

    @property
    def npartitions(self) -> int:
        """How many partitions the table had when it was read (or last written here)."""
        return int(self._structure().get("npartitions", 0))

    @property
    def schema(self) -> pa.Schema:
        """The table's Arrow schema (a ``pyarrow.Schema``)."""
        if self._schema is None:
            pa = _pyarrow()
            try:
                text = self._structure()["arrow_schema"]
                self._schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
            except (KeyError, TypeError, ValueError, pa.ArrowInvalid) as exc:
                raise ProtocolError(f"the table {self.path!r} has no valid schema: {exc}") from exc
        return self._schema

    def _params(self, columns: Sequence[str] | None) -> dict[str, Any]:
        if columns is None:
            return {}
        if (
            isinstance(columns, str)
            or not isinstance(columns, Sequence)
            or not all(isinstance(c, str) for c in columns)
        ):
            raise ConfigurationError(f"columns must be a list of column names, not {columns!r}")
        unknown = [c for c in columns if c not in self.columns]
        if unknown:
            raise ConfigurationError(
                f"the table {self.path!r} has no column {unknown[0]!r} (it has {self.columns})"
            )
        return {"column": list(columns)}

    def _index(self, partition: object) -> int:
        if not isinstance(partition, int) or isinstance(partition, bool):
            raise ConfigurationError(f"a partition is an int, not {partition!r}")
        return partition + self.npartitions if partition < 0 else partition

    @overload
    async def read(
        self,
        columns: Sequence[str] | None = None,
        *,
        as_: AsPandas = "pandas",
        compression: Compression = None,
    ) -> pd.DataFrame: ...
    @overload
    async def read(
        self,
        columns: Sequence[str] | None = None,
        *,
        as_: AsArrow,
        compression: Compression = None,
    ) -> pa.Table: ...
    async def read(
        self,
        columns: Sequence[str] | None = None,
        *,
        as_: TableKind = "pandas",
        compression: Compression = None,
    ) -> Any:
        """The whole table (only ``columns``, if given), its partitions in order: a pandas
        ``DataFrame``, or with ``as_="arrow"`` a pyarrow ``Table``. One request brings it as
        one Arrow IPC stream (the server sends the stored partitions as they are), decoded in
        place; a broken connection resumes where it stopped under the ``"forceful"`` retry
        mode. ``compression="zstd"`` lets the server send the stream zstd-encoded when it
        compresses (the ``zstandard`` package decodes it; an encoded body is received again
        from its start after a broken connection)."""
        kind = _check_kind(as_)
        table = await fetch_arrow(
            self._ctx, route("/table/full", self.path), self._params(columns), compression
        )
        return await _convert(table, kind)

    def _fetcher(
        self, params: dict[str, Any], compression: Compression
    ) -> Callable[[int], Awaitable[pa.Table]]:
        path = route("/table/partition", self.path)
        accept_encoding(compression)  # (checked before any request)

        def fetch(i: int) -> Awaitable[pa.Table]:
            return fetch_arrow(self._ctx, path, {"partition": i, **params}, compression)

        return fetch

    @overload
    async def read_partition(
        self,
        partition: int,
        columns: Sequence[str] | None = None,
        *,
        as_: AsPandas = "pandas",
        compression: Compression = None,
    ) -> pd.DataFrame: ...
    @overload
    async def read_partition(
        self,
        partition: int,
        columns: Sequence[str] | None = None,
        *,
        as_: AsArrow,
        compression: Compression = None,
    ) -> pa.Table: ...
    async def read_partition(
        self,
        partition: int,
        columns: Sequence[str] | None = None,
        *,
        as_: TableKind = "pandas",
        compression: Compression = None,
    ) -> Any:
        """Partition number ``partition`` (negative counts from the end), only ``columns`` if
        given; a pandas ``DataFrame``, or with ``as_="arrow"`` a pyarrow ``Table``;
        ``compression`` as :meth:`read` has it."""
        kind = _check_kind(as_)
        fetch = self._fetcher(self._params(columns), compression)
        table = await fetch(self._index(partition))
        return await _convert(table, kind)

    async def iter_partitions(
        self,
        columns: Sequence[str] | None = None,
        *,
        concurrency: int = 4,
        as_: TableKind = "pandas",
        compression: Compression = None,
    ) -> AsyncIterator[Any]:
        """Each partition in order (pandas ``DataFrame``\\ s, or pyarrow ``Table``\\ s with
        ``as_="arrow"``), the next ones fetched while the caller works: at most
        ``concurrency`` in flight or waiting to be taken. Stopping early cancels the rest.
        ``compression`` as :meth:`read` has it."""
        kind = _check_kind(as_)
        fetch = self._fetcher(self._params(columns), compression)
        parts = Prefetch(iter(range(self.npartitions)), fetch, concurrency)
        try:
            async for part in parts:
                yield await _convert(part, kind)
        finally:
            await parts.aclose()

    async def append_partition(self, df: object) -> int:
        """Append ``df`` (a pandas ``DataFrame`` or a pyarrow ``Table`` of the table's schema)
        as a new partition; its number. A schema that differs is an
        :class:`~aiosdk.UnprocessableEntityError`."""
        table = await to_arrow(df)
        path = route("/table/partition", self.path)
        answer = await send_ipc(self._ctx, "POST", path, table, {}, self.path)
        try:
            partition = int(answer["partition"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"unexpected answer to an append: {answer!r}") from exc
        self._wrote(partition, table.num_rows)
        return partition

    async def write_partition(self, df: object, partition: int) -> None:
        """Replace partition number ``partition`` with ``df`` (of the table's schema), or add it
        if it is the next one (``partition == npartitions``)."""
        index = self._index(partition)
        table = await to_arrow(df)
        path = route("/table/partition", self.path)
        await send_ipc(self._ctx, "PUT", path, table, {"partition": index}, self.path)
        self._wrote(index, table.num_rows)

    def _wrote(self, partition: int, rows: int) -> None:
        """Keep the node as read in step with a partition written here: its structure, and its
        revision (each write bumps it by one; a write by someone else meanwhile still makes a
        later write based on this read a conflict)."""
        self.revision += 1
        structure = self._structure()
        nrows = list(structure.get("nrows") or [])
        nrows.extend([0] * (partition + 1 - len(nrows)))
        nrows[partition] = rows
        structure["nrows"] = nrows
        structure["npartitions"] = max(self.npartitions, partition + 1)

    async def export(
        self,
        file: str | os.PathLike[str] | IO[bytes],
        format: str | None = None,
        *,
        columns: Sequence[str] | None = None,
        progress: Progress = None,
    ) -> None:
        """Save the table (only ``columns`` if given) to ``file`` (a path, or a binary file
        open for writing) in ``format``: a media type or a suffix (``".parquet"``, ``".csv"``,
        ``".arrow"``, ``".json"``; :meth:`formats` lists them), by default the path's suffix.
        The server renders it; the bytes are streamed to the file as they arrive (a path is
        written under a temporary name and renamed when complete)."""
        await export_to(self, "/table/full", file, format, self._params(columns), progress)


async def write_dataframe(
    container: AsyncContainer,
    df: object,
    *,
    key: str,
    partitions: int | None = None,
    metadata: JSONObject | None = None,
    specs: Sequence[str] | None = None,
) -> AsyncTableClient:
    """Create the table ``key`` in ``container`` from ``df`` (a pandas ``DataFrame`` or a
    pyarrow ``Table``) in ``partitions`` partitions (``None``: about 16 MiB each, or one),
    uploaded concurrently. If an upload fails, the new node is deleted (best effort)."""
    table = await to_arrow(df)
    bounds = _split(table.num_rows, table.nbytes, partitions)
    structure = {
        "arrow_schema": _schema_text(table.schema),
        "columns": list(table.schema.names),
        "npartitions": len(bounds),
        "nrows": [length for _, length in bounds],
    }
    node = await container.new("table", key, metadata=metadata, specs=specs, structure=structure)
    if not isinstance(node, AsyncTableClient):
        raise ProtocolError(f"created {node.path!r} is not a table")
    path = route("/table/partition", node.path)

    async def upload(i: int) -> None:
        offset, length = bounds[i]
        await send_ipc(
            node._ctx, "PUT", path, table.slice(offset, length), {"partition": i}, node.path
        )
        node._wrote(i, length)

    try:
        await run_bounded(range(len(bounds)), upload, UPLOAD_CONCURRENCY)
    except BaseException:
        await discard(node)
        raise
    return node


async def discard(node: AsyncNode) -> None:
    """Delete ``node``, just created by a write that failed: best effort, bounded, run to its
    end whatever cancels the caller (anyio's cancellations and asyncio's own
    ``Task.cancel()``, which an anyio shield alone lets through)."""

    async def delete() -> None:
        with anyio.move_on_after(10), contextlib.suppress(AiosdkError):
            await node.delete(recursive=True)

    await to_the_end(delete)
