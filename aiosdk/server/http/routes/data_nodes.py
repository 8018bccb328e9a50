"""What every data route (arrays, tables, sparse arrays) needs: the node of a family at a path
(checked for the caller's permission), that node locked for a write, its structure changed in
the request's unit of work, and the answer of a read (ETag, Range, negotiated encoding)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import Request, Response
from sqlalchemy import update

from ...authorization import READ, WRITE
from ...catalog import events, nodes
from ...catalog.models import EventKind, Node
from ...catalog.nodes import NodeRead, NodeView, Viewer
from ...data.arrays import SelectionRead
from ...data.ranges import requested_range
from ...errors import ConflictError, InvalidRequestError
from ...storage import utcnow
from .. import encoding
from ..bodies import BodyResponse, StreamedResponse
from ..dependencies import RequestCall, viewer_of

__all__ = [
    "NOT_MODIFIED",
    "commit_structure",
    "data_node",
    "data_response",
    "done_reading",
    "locked_data_node",
]

NOT_MODIFIED = {"description": "Not modified: the If-None-Match named the current ETag (no body)"}
"""The OpenAPI entry of a read's 304."""

_NAMES = {"array": "an array", "table": "a table", "sparse": "a sparse array"}


async def data_node(
    call: RequestCall, path: str, family: str, action: str = READ
) -> tuple[NodeRead, Viewer]:
    """The node of ``family`` at ``path``, which the caller may do ``action`` on, read without
    the unit of work's lock (for reads, and for a write's checks before its body is read);
    :class:`~...errors.InvalidRequestError` (400) if it is of another family."""
    viewer = await viewer_of(call)
    reads = call.state.catalog.reads if action == READ else None
    view = await nodes.read_node(call.session, viewer, path, reads)
    nodes.require(viewer, view, action)
    node = view.node
    if node.structure_family != family:
        raise InvalidRequestError(
            f"{node.path!r} is a {node.structure_family}, not {_NAMES[family]}: use its own routes"
        )
    return view, viewer


async def done_reading(call: RequestCall) -> None:
    """End a read's transaction: its pooled connection goes back before the data is read and
    sent (a read writes nothing)."""
    if call.work.opened:
        await call.session.rollback()


async def locked_data_node(
    call: RequestCall, viewer: Viewer, path: str, read: NodeRead
) -> NodeView:
    """The node ``read`` found at ``path``, locked for the write (``FOR UPDATE``, SQLite's
    write lock), still writable and still the same node (whose schema, shape and data type
    never change: what the body was checked against holds)."""
    await call.work.begin_write()
    view = await nodes.resolve(call.session, viewer, path, lock="update")
    nodes.require(viewer, view, WRITE)
    if view.node.id != read.node.id:
        raise ConflictError(f"{path[:300]!r} was replaced meanwhile: retry")
    return view


async def commit_structure(call: RequestCall, view: NodeView, structure: dict[str, Any]) -> None:
    """Give the locked node of ``view`` its new ``structure`` and bump its revision, in the
    request's unit of work, recording the change for the watchers of its container."""
    node: Node = view.node
    session = call.session
    await session.execute(
        update(Node)
        .where(Node.id == node.id)
        .values(
            {Node.structure: structure, Node.revision: Node.revision + 1, Node.updated_at: utcnow()}
        )
        .execution_options(synchronize_session=False)
    )
    await session.refresh(node)
    if node.parent_id is not None:
        await events.record(
            call.work, call.state.catalog.wakeups, node.parent_id, EventKind.UPDATED, node
        )


async def data_response(
    request: Request,
    body: Sequence[memoryview] | SelectionRead,
    etag: str | None,
    headers: dict[str, str],
    media_type: str,
) -> Response:
    """``body`` (spans sent one after another, or a selection read as it is sent) as the answer
    to ``request``: whole (200; zstd-encoded when the request allows it and the body
    compresses, see :mod:`..encoding`), the part its ``Range`` asks for (206; with
    ``If-Range``, only while ``etag`` is still the data's), or 304 when its ``If-None-Match``
    names ``etag`` (or its zstd form's); nothing of a selection is read for a 304, a 416 or a
    HEAD request."""
    headers = {**headers, "Accept-Ranges": "bytes", **encoding.VARY}
    if etag is not None:
        headers["ETag"] = etag
        matched = encoding.etag_matches(request.headers, etag)
        if matched is not None:
            return Response(status_code=304, headers={**headers, "ETag": matched})
    if isinstance(body, SelectionRead):
        size = body.nbytes
        pieces: Callable[[], AsyncIterator[memoryview]] = body.pieces
    else:
        spans = list(body)
        size = sum(len(span) for span in spans)

        async def each() -> AsyncIterator[memoryview]:
            for span in spans:
                yield span

        pieces = each
    encoded = await encoding.negotiated(request, pieces, size, headers, media_type)
    if encoded is not None:
        return encoded
    part = requested_range(request.headers, size, etag)
    start, stop, status = (0, size, 200) if part is None else (part.start, part.stop, 206)
    if part is not None:
        headers["Content-Range"] = part.content_range
    if isinstance(body, SelectionRead):
        selection = body
        return StreamedResponse(
            lambda: selection.pieces(start, stop), stop - start, status, headers, media_type
        )
    return BodyResponse(_cut(spans, start, stop), status, headers, media_type)


def _cut(spans: Sequence[memoryview], start: int, stop: int) -> list[memoryview]:
    """The bytes ``start:stop`` of ``spans`` joined, as slices of them."""
    kept, at = [], 0
    for span in spans:
        first, last = max(start - at, 0), min(stop - at, len(span))
        if first < last:
            kept.append(span if (first, last) == (0, len(span)) else span[first:last])
        at += len(span)
    return kept
