"""``/api/v1/table``: a table node's partitions as Arrow IPC streams.

Reads need ``read`` on the node, writes ``write`` (a node the caller may not read is answered
404 like a missing one). A write of a partition changes the node's structure (its
``npartitions`` and ``nrows``) and bumps its revision in the request's unit of work: the
answer is sent once that has committed, and a keyed ``POST`` (``Idempotency-Key``) appends one
partition however often it is sent. Bodies go up to ``limits.max_data_body_bytes``.

A read of all columns as an Arrow stream (a partition, or the whole table) is the stored
files' bytes as they are, mapped, not copied, with an ``ETag`` and ``Accept-Ranges: bytes``:
a ``Range`` with ``If-Range`` resumes an interrupted read (see :mod:`...data.ranges`), and
zstd-encoded when the request's ``Accept-Encoding`` allows it and the bytes compress (see
:mod:`..encoding`; never with a ``Range``). Column
selections and exports are rendered one partition at a time in a worker thread and streamed
as each is done: the server holds one partition's rendering, never the table's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from ...authorization import WRITE
from ...data import export, tables
from ...data.store import BlobStore
from ...errors import InvalidRequestError
from .. import encoding
from ..bodies import StreamedResponse, read_body
from ..dependencies import Current, RequestCall
from ..openapi import documented_error
from .data_nodes import (
    NOT_MODIFIED,
    commit_structure,
    data_node,
    data_response,
    done_reading,
    locked_data_node,
)
from .organizations import conflict

__all__ = ["ARROW_BODY", "ARROW_STREAM", "AppendAnswer", "router"]

router = APIRouter(prefix="/table", tags=["tables"])

ARROW_STREAM = export.ARROW.mime
_BINARY = {"schema": {"type": "string", "format": "binary"}}
ARROW_BODY = {
    "requestBody": {
        "required": True,
        "description": "An Arrow IPC stream (read as one whatever its Content-Type)",
        "content": {ARROW_STREAM: _BINARY, export.RAW.mime: _BINARY},
    }
}
"""The request body of a write: an Arrow IPC stream."""


class AppendAnswer(BaseModel):
    """The index of the partition an append wrote."""

    partition: int


# --- the routes --------------------------------------------------------------------------------

_NODE_404 = documented_error("No node at the path, or none the caller may read")
_BAD_PARAMETERS = documented_error(
    "Invalid path, partition index or column, or the node is not a table"
)
_NOT_ACCEPTABLE = documented_error("The format asked for is not one of the table's (listed)")
_STREAM_200 = {
    "description": "An Arrow IPC stream",
    "content": {ARROW_STREAM: {}},
    "headers": {
        "ETag": {
            "description": "A tag of the stored partitions (all columns as an Arrow stream only;"
            " ending -zstd inside the quotes for the zstd-encoded form)",
            "schema": {"type": "string"},
        },
        **encoding.ENCODING_HEADERS,
    },
}
_BAD_BODY = documented_error(
    "The body is not an Arrow IPC stream of the table's schema, or its data is invalid."
)
_TOO_LARGE = documented_error("The body exceeds limits.max_data_body_bytes")
_WRITE_403 = documented_error("The caller may not write the node, or its token is read-only")
Columns = Annotated[list[str], Query(alias="column", description="Only these columns, in order")]
Partition = Annotated[int, Query(description="A partition's index, from 0")]


async def _stored(
    blobs: BlobStore, node: Any, indexes: Sequence[int]
) -> tuple[list[memoryview], list[str]]:
    """The stored streams of the partitions ``indexes`` (an unwritten one, or none at all: the
    schema without rows), mapped from their files in a directory store, and a tag of each. A
    partition rewritten meanwhile keeps, here, the version that was opened."""
    found: list[tuple[memoryview, str] | None] = [None]
    if indexes:  # (no partition yet: a file left by a failed first write is not one)
        found = await tables.stored_partitions(blobs, node.id, indexes)
    empty: memoryview | None = None
    streams, tags = [], []
    for item in found:
        if item is None:
            if empty is None:
                schema = tables.decode_schema(node.structure["arrow_schema"])
                empty = memoryview(await anyio.to_thread.run_sync(tables.empty_stream, schema))
            item = (empty, "unwritten")
        streams.append(item[0])
        tags.append(item[1])
    return streams, tags


async def _streamed(
    streams: list[memoryview],
    columns: Sequence[str],
    fmt: export.Format,
    headers: dict[str, str],
) -> Response:
    """``streams`` (of ``columns`` only, if given) rendered in ``fmt`` and sent partition by
    partition as each is rendered (in a worker thread), never whole in memory. The first is
    rendered before the answer starts, so that a type the format cannot hold is a 422; to a
    HEAD, that is all that is rendered (see :class:`~..bodies.StreamedResponse`)."""
    selected = list(columns) or None

    def start() -> tuple[export.TableRendering, list[bytes]]:
        first = tables.read_stream(streams[0], selected)
        rendering = export.TableRendering(first.schema, fmt)
        return rendering, rendering.add(first)

    def render(index: int) -> list[bytes]:
        return rendering.add(tables.read_stream(streams[index], selected))

    rendering, first = await anyio.to_thread.run_sync(start)

    async def body() -> AsyncIterator[bytes]:
        rendered = first
        for index in range(1, len(streams)):
            for part in rendered:
                yield part
            rendered = await anyio.to_thread.run_sync(render, index)
        for part in rendered + await anyio.to_thread.run_sync(rendering.finish):
            yield part

    return StreamedResponse(body, None, 200, headers, fmt.mime)


async def _answer(
    request: Request,
    blobs: BlobStore,
    node: Any,
    indexes: Sequence[int],
    columns: list[str],
    fmt: export.Format | None,
    rows: int,
) -> Response:
    """The answer of a read of the partitions ``indexes`` of ``node`` (holding ``rows`` rows,
    in ``X-Aiosdk-Rows``): their stored bytes as they are when the read wants all columns
    in the wire form (with an ETag, resumable with ``Range``), else streamed."""
    structure = node.structure
    headers = {"X-Aiosdk-Rows": str(rows)}
    if columns:
        schema = tables.decode_schema(structure["arrow_schema"])
        tables.check_columns(schema, columns)
    streams, tags = await _stored(blobs, node, indexes)
    if fmt is None and not columns:
        joined = tables.joined_spans(streams)
        if joined is not None:
            etag = tables.table_tag(node.id, structure, [str(i) for i in indexes] + tags)
            return await data_response(request, joined, etag, headers, ARROW_STREAM)
    return await _streamed(streams, columns, fmt or export.ARROW, headers)


_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _STREAM_200,
    304: NOT_MODIFIED,
    206: {
        "description": "The part of the stream the Range asked for (Content-Range says which)",
        "content": {ARROW_STREAM: {}},
    },
    400: _BAD_PARAMETERS,
    404: _NODE_404,
    406: _NOT_ACCEPTABLE,
    416: documented_error("The Range asked for is beyond the stream's end"),
    422: documented_error(
        "The table cannot be exported as asked (too large for JSON, or a type the format"
        " cannot hold)."
    ),
}


@router.get(
    "/partition/{path:path}",
    summary="Read a partition",
    response_class=Response,
    responses=_READ_RESPONSES,
)
async def get_partition(
    path: str,
    partition: Partition,
    request: Request,
    call: Current,
    column: Columns = [],  # noqa: B006
) -> Response:
    """Partition ``partition`` of the table at ``path`` (of the ``column``\\ s given, in their
    order), as an Arrow IPC stream: all columns as stored, with an ``ETag`` (a ``Range`` with
    ``If-Range`` resumes it)."""
    view, _ = await data_node(call, path, "table")
    node = view.node
    _check_index(node.structure, partition, appending=False)
    await done_reading(call)
    rows = node.structure["nrows"][partition]
    return await _answer(request, call.state.blobs, node, [partition], column, None, rows)


@router.get(
    "/full/{path:path}",
    summary="Read a table",
    response_class=Response,
    responses={
        **_READ_RESPONSES,
        200: {**_STREAM_200, "content": export.documented_content("table")},
    },
)
async def get_full(
    path: str,
    request: Request,
    call: Current,
    column: Columns = [],  # noqa: B006
    format: Annotated[str | None, Query(max_length=255)] = None,
) -> Response:
    """Every partition of the table at ``path``, in order, as one Arrow IPC stream (of the
    ``column``\\ s given); or exported as ``format`` (a MIME type or a suffix: ``parquet``,
    ``.csv``) or as the ``Accept`` header asks. All columns as an Arrow stream are the stored
    partitions' bytes, joined (with an ``ETag``: a ``Range`` with ``If-Range`` resumes the
    read); anything else is rendered and sent partition by partition (no ``Range``)."""
    view, _ = await data_node(call, path, "table")
    node = view.node
    fmt = export.resolve_format("table", node.structure, format, request.headers.get("accept"))
    if fmt == export.JSON:  # refused before any data is read
        width = len(column) or len(node.structure["columns"])
        export.check_json_values(sum(node.structure["nrows"]) * width)
    await done_reading(call)
    indexes = range(node.structure["npartitions"])
    rows = sum(node.structure["nrows"])
    return await _answer(request, call.state.blobs, node, indexes, column, fmt, rows)


def _check_index(structure: dict[str, Any], index: int, *, appending: bool) -> None:
    count = structure["npartitions"]
    if appending and index == count and count >= tables.MAX_PARTITIONS:
        raise InvalidRequestError(f"A table has at most {tables.MAX_PARTITIONS:,} partitions")
    if 0 <= index < count or (appending and index == count):
        return
    if appending:
        raise InvalidRequestError(
            f"No partition {index}: the table has {count}; write 0 to {count - 1}, or {count}"
            " (the next)"
        )
    raise InvalidRequestError(f"No partition {index}: the table has {count}")


async def _write(call: RequestCall, request: Request, path: str, index: int | None) -> int:
    read, viewer = await data_node(call, path, "table", WRITE)
    schema = tables.decode_schema(read.node.structure["arrow_schema"])
    if index is not None:
        _check_index(read.node.structure, index, appending=True)
    await done_reading(call)  # no pooled connection held while the body comes in
    body = await read_body(request)
    stored, nrows = await anyio.to_thread.run_sync(tables.checked_stream, body, schema)
    del body
    view = await locked_data_node(call, viewer, path, read)
    structure = dict(view.node.structure or {})
    if index is None:
        index = structure["npartitions"]
    _check_index(structure, index, appending=True)
    # (put takes any buffer: a body kept as it came is a bytearray, not copied into bytes)
    await call.state.blobs.put(tables.partition_key(view.node.id, index), stored)
    await commit_structure(call, view, tables.structure_after_write(structure, index, nrows))
    return index


_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _BAD_PARAMETERS,
    403: _WRITE_403,
    404: _NODE_404,
    409: conflict("The node was replaced meanwhile: retry"),
    413: _TOO_LARGE,
    422: _BAD_BODY,
}


@router.put(
    "/partition/{path:path}",
    status_code=204,
    summary="Write a partition",
    response_class=Response,
    responses=_WRITE_RESPONSES,
    openapi_extra=ARROW_BODY,
)
async def put_partition(
    path: str, partition: Partition, request: Request, call: Current
) -> Response:
    """Replace partition ``partition`` of the table at ``path`` with the body (an Arrow IPC
    stream of the table's schema), or write the next one (``partition`` = ``npartitions``)."""
    await _write(call, request, path, partition)
    return Response(status_code=204)


@router.post(
    "/partition/{path:path}",
    summary="Append a partition",
    response_model=AppendAnswer,
    responses=_WRITE_RESPONSES,
    openapi_extra=ARROW_BODY,
)
async def append_partition(path: str, request: Request, call: Current) -> AppendAnswer:
    """Append the body (an Arrow IPC stream of the table's schema) to the table at ``path`` as
    a new partition; the answer says its index."""
    return AppendAnswer(partition=await _write(call, request, path, None))
