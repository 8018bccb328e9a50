"""``/api/v1/sparse``: a sparse (COO) node's entries, as one Arrow IPC stream.

Reads need ``read`` on the node, writes ``write`` (a node the caller may not read is answered
404 like a missing one). A write replaces every entry, sets the structure's ``nnz`` and bumps
the node's revision in the request's unit of work.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response

from ...authorization import WRITE
from ...data import export, sparse
from ..bodies import BodyResponse, read_body
from ..dependencies import Current
from ..openapi import documented_error
from .data_nodes import commit_structure, data_node, done_reading, locked_data_node
from .organizations import conflict
from .tables import ARROW_BODY, ARROW_STREAM

__all__ = ["router"]

router = APIRouter(prefix="/sparse", tags=["sparse"])

_NODE_404 = documented_error("No node at the path, or none the caller may read")
_BAD_PATH = documented_error("Invalid path, or the node is not a sparse array")


@router.get(
    "/full/{path:path}",
    summary="Read a sparse array",
    response_class=Response,
    responses={
        200: {
            "description": "The COO table as an Arrow IPC stream (or the export asked for)",
            "content": export.documented_content("sparse"),
        },
        400: _BAD_PATH,
        404: _NODE_404,
        406: documented_error("The format asked for is not one of the sparse array's (listed)"),
        422: documented_error("The array is too large to export dense."),
    },
)
async def get_sparse(
    path: str,
    request: Request,
    call: Current,
    format: Annotated[str | None, Query(max_length=255)] = None,
) -> Response:
    """The entries of the sparse array at ``path`` (columns ``coord_0`` … and ``data``) as an
    Arrow IPC stream; or exported as ``format`` (``npy``: dense) or as ``Accept`` asks."""
    view, _ = await data_node(call, path, "sparse")
    node = view.node
    structure: dict[str, Any] = node.structure
    fmt = export.resolve_format("sparse", structure, format, request.headers.get("accept"))
    await done_reading(call)
    stream = await call.state.blobs.get(sparse.coo_key(node.id))
    if stream is None:
        stream = memoryview(await anyio.to_thread.run_sync(sparse.empty_coo, structure))
    if fmt is None:
        return BodyResponse([stream], 200, {}, ARROW_STREAM)
    table = await anyio.to_thread.run_sync(sparse.read_coo, stream)
    return Response(await export.render_sparse(table, structure, fmt), media_type=fmt.mime)


@router.put(
    "/full/{path:path}",
    status_code=204,
    summary="Write a sparse array",
    response_class=Response,
    responses={
        400: _BAD_PATH,
        403: documented_error("The caller may not write the node, or its token is read-only"),
        404: _NODE_404,
        409: conflict("The node was replaced meanwhile: retry"),
        413: documented_error("The body exceeds limits.max_data_body_bytes"),
        422: documented_error(
            "The body is not an Arrow IPC stream of coord_0 … (int64) and data (the node's"
            " data type), holds nulls, or a coordinate outside the shape."
        ),
    },
    openapi_extra=ARROW_BODY,
)
async def put_sparse(path: str, request: Request, call: Current) -> Response:
    """Replace every entry of the sparse array at ``path`` with the body's."""
    read, viewer = await data_node(call, path, "sparse", WRITE)
    await done_reading(call)  # no pooled connection held while the body comes in
    body = await read_body(request)
    stored, nnz = await anyio.to_thread.run_sync(sparse.checked_coo, body, read.node.structure)
    del body
    view = await locked_data_node(call, viewer, path, read)
    await call.state.blobs.put(sparse.coo_key(view.node.id), stored)
    await commit_structure(call, view, {**(view.node.structure or {}), "nnz": nnz})
    return Response(status_code=204)
