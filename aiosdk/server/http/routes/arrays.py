"""``/api/v1/array``: an array node's bytes, block by block or as a selection.

Bodies are raw C-order little-endian bytes. Every answer with data says what it holds:
``X-Aiosdk-Dtype`` (numpy's ``dtype.str``) and ``X-Aiosdk-Shape`` (``256,8192``; empty for a
0-d array), with an ``ETag`` of the stored chunks it was read from and ``Accept-Ranges: bytes``:
a ``Range`` (with ``If-Range``) resumes an interrupted read (see :mod:`...data.ranges`).
A raw read is zstd-encoded when the request's ``Accept-Encoding`` allows it and the data
compresses (see :mod:`..encoding`; never with a ``Range``).
A selection's raw bytes are streamed as they are read, a slab at a time, of any size (its
headers, a HEAD's whole answer, come from the structure and the chunks' file versions alone);
one that changes while it is sent is cut short, so that a body received whole is the one its
ETag names. Reads need ``read`` on the node, writes ``write`` (a node the caller may not read
is answered 404 like a missing one). Bodies go up to ``limits.max_data_body_bytes``.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response

from ...authorization import READ, WRITE
from ...catalog.nodes import InvalidContentError, NodeRead, Viewer
from ...data import export
from ...data.arrays import ArrayData, Selection, as_bytes
from ...data.structures import ArrayStructure, validate_array_structure
from ...errors import InvalidRequestError
from .. import encoding
from ..bodies import read_body
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

__all__ = [
    "MAX_EXPORT_BYTES",
    "OCTET_STREAM",
    "array_node",
    "parse_index",
    "parse_selection",
    "router",
]

router = APIRouter(prefix="/array", tags=["arrays"])

OCTET_STREAM = "application/octet-stream"
DTYPE_HEADER = "X-Aiosdk-Dtype"
SHAPE_HEADER = "X-Aiosdk-Shape"
MAX_EXPORT_BYTES = 1024**3
"""The largest selection ``GET /array/full`` exports in a format other than raw bytes (made
whole in memory; raw bytes are streamed, of any size)."""
_MAX_INDEX_TEXT = 32 * 44  # 32 axes of a:b:c with 19-digit numbers


async def array_node(
    call: RequestCall, path: str, action: str = READ
) -> tuple[NodeRead, Viewer, ArrayStructure]:
    """The array node at ``path``, which the caller may do ``action`` on, and its structure;
    :class:`~...errors.InvalidRequestError` (400) if the node is no array."""
    view, viewer = await data_node(call, path, "array", action)
    return view, viewer, ArrayStructure.of(view.node.structure)


def _shape_text(shape: tuple[int, ...]) -> str:
    return ",".join(map(str, shape))


# --- parameters ------------------------------------------------------------------------------


def parse_index(text: str, what: str) -> tuple[int, ...]:
    """``3,0`` as ``(3, 0)``; ``""`` as ``()`` (the block of a 0-d array)."""
    if not text:
        return ()
    parts = text.split(",")
    if len(parts) > 32 or not all(_is_digits(part.strip()) for part in parts):
        raise InvalidRequestError(
            f"{what} must be up to 32 non-negative integers separated by commas, like 3,0"
        )
    return tuple(int(part) for part in parts)


def _is_digits(text: str) -> bool:
    """Whether ``text`` is ASCII digits only, at most 19 ("²".isdigit() holds, and int() fails
    on it)."""
    return text.isascii() and text.isdigit() and len(text) <= 19


def parse_selection(text: str | None) -> Selection:
    """``10:20,::2,-1`` as ``(slice(10, 20), slice(None, None, 2), -1)``."""
    if text is None or not text.strip():
        return ()
    parts = text.split(",")
    if len(parts) > 32:
        raise InvalidRequestError("A selection has at most 32 indices")
    try:
        return tuple(_index_item(part) for part in parts)
    except ValueError:
        raise InvalidRequestError(
            "slice must be numpy basic indices separated by commas: integers and start:stop:step"
            " slices (each part optional, negative values allowed, no step of 0), like 10:20,::2"
        ) from None


def _index_item(part: str) -> int | slice:
    pieces = part.strip().split(":")
    if len(pieces) == 1:
        return _integer(pieces[0])
    if len(pieces) > 3:
        raise ValueError(part)
    start, stop, step = (_integer(p) if p.strip() else None for p in (*pieces, "")[:3])
    if step == 0:
        raise ValueError(part)
    return slice(start, stop, step)


def _integer(text: str) -> int:
    text = text.strip()
    if not _is_digits(text.removeprefix("-")):
        raise ValueError(text)
    return int(text)


IndexText = Annotated[str, Query(max_length=_MAX_INDEX_TEXT)]


# --- the routes ------------------------------------------------------------------------------

_NODE_404 = documented_error("No node at the path, or none the caller may read")
_BYTES_200 = {
    "description": "The data: raw C-order little-endian bytes (or the export asked for)",
    "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    "headers": {
        DTYPE_HEADER: {
            "description": "numpy's dtype.str of the data",
            "schema": {"type": "string"},
        },
        SHAPE_HEADER: {
            "description": "The data's shape, lengths separated by commas (empty for 0-d)",
            "schema": {"type": "string"},
        },
        "ETag": {
            "description": "A tag of the stored chunks read (ending -zstd inside the quotes for"
            " the zstd-encoded form)",
            "schema": {"type": "string"},
        },
        **encoding.ENCODING_HEADERS,
    },
}
_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _BYTES_200,
    206: {"description": "The part of the data the Range asked for (Content-Range says which)"},
    304: NOT_MODIFIED,
    400: documented_error("Invalid path, block index or selection, or the node is no array"),
    404: _NODE_404,
    416: documented_error("The Range asked for is beyond the data's end"),
    422: documented_error(
        "The node's structure is invalid, or the selection is too large to export in the format"
        " asked for."
    ),
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    }
}
_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: documented_error("Invalid path, block index, offset or shape, or the node is no array"),
    403: documented_error("The caller may not write the node, or its token is read-only"),
    404: _NODE_404,
    413: documented_error("The body exceeds limits.max_data_body_bytes"),
    422: documented_error(
        "The body is not the size its block or region needs (the message says how many bytes),"
        " or the region lies outside the array without extend."
    ),
}


def _headers(structure: ArrayStructure, shape: tuple[int, ...]) -> dict[str, str]:
    return {DTYPE_HEADER: structure.dtype.str, SHAPE_HEADER: _shape_text(shape)}


@router.get(
    "/block/{path:path}",
    summary="Read a block",
    response_class=Response,
    responses=_READ_RESPONSES,
)
async def get_block(path: str, request: Request, call: Current, block: IndexText = "") -> Response:
    """The block ``block`` (``3,0``; empty for a 0-d array) of the array at ``path``, in its
    true shape (edge blocks are smaller than the chunks)."""
    view, _, structure = await array_node(call, path)
    index = parse_index(block, "block")
    structure.check_block(index)
    await done_reading(call)
    found = await ArrayData(call.state.blobs, view.node.id, structure).read_block(index)
    return await data_response(
        request, [found.body], found.etag, _headers(structure, found.shape), OCTET_STREAM
    )


@router.get(
    "/full/{path:path}",
    summary="Read an array or a selection",
    response_class=Response,
    responses={
        **_READ_RESPONSES,
        200: {**_BYTES_200, "content": export.documented_content("array")},
        406: documented_error("The format asked for is not one of the array's (listed)"),
    },
)
async def get_full(
    path: str,
    request: Request,
    call: Current,
    slice: Annotated[str | None, Query(max_length=_MAX_INDEX_TEXT)] = None,
    format: Annotated[str | None, Query(max_length=255)] = None,
) -> Response:
    """The array at ``path``, or the part ``slice`` picks (numpy basic indexing: integers and
    ``start:stop:step``, negative values too, like ``10:20,::2``); exported as ``format`` (a
    MIME type or a suffix) or as the ``Accept`` header asks, when it asks for another than raw
    bytes (at most :data:`MAX_EXPORT_BYTES`; raw bytes are streamed, of any size)."""
    view, _, structure = await array_node(call, path)
    selection = parse_selection(slice)
    fmt = export.resolve_format("array", structure.to_json(), format, request.headers.get("accept"))
    await done_reading(call)
    data = ArrayData(call.state.blobs, view.node.id, structure)
    read = await data.selection(selection)
    headers = _headers(structure, read.shape)
    if fmt is None:
        return await data_response(request, read, read.etag, headers, OCTET_STREAM)
    if read.nbytes > MAX_EXPORT_BYTES:
        raise InvalidContentError(
            f"The selection is {read.nbytes:,} bytes; at most {MAX_EXPORT_BYTES // 2**20} MiB"
            f" exported as {fmt.mime} in one answer: export a smaller selection"
        )
    body = await export.render_array(await read.whole(), fmt)
    return Response(body, media_type=fmt.mime, headers=headers)


@router.put(
    "/block/{path:path}",
    status_code=204,
    summary="Write a block",
    response_class=Response,
    responses=_WRITE_RESPONSES,
    openapi_extra=_BODY,
)
async def put_block(path: str, request: Request, call: Current, block: IndexText = "") -> Response:
    """Replace the block ``block`` of the array at ``path`` with the body: the raw bytes of the
    block's true shape (smaller than the chunks at the edge), exactly."""
    view, _, structure = await array_node(call, path, WRITE)
    index = parse_index(block, "block")
    structure.check_block(index)
    await done_reading(call)  # no pooled connection held while the body comes in
    body = await read_body(request, structure.block_nbytes(index))
    await ArrayData(call.state.blobs, view.node.id, structure).write_block(index, body)
    return Response(status_code=204)


@router.patch(
    "/full/{path:path}",
    status_code=204,
    summary="Write a region",
    response_class=Response,
    responses={
        **_WRITE_RESPONSES,
        409: conflict("The node was replaced meanwhile: retry"),
    },
    openapi_extra=_BODY,
)
async def patch_region(
    path: str,
    request: Request,
    call: Current,
    offset: IndexText,
    shape: IndexText,
    extend: bool = False,
) -> Response:
    """Write the body (the raw bytes of ``shape``) into the array at ``path`` at ``offset``;
    with ``extend``, a region past the array's end grows it (its structure's shape changes,
    its revision goes up), else it is refused."""
    read, viewer, structure = await array_node(call, path, WRITE)
    start = parse_index(offset, "offset")
    lengths = parse_index(shape, "shape")
    if len(start) != structure.ndim or len(lengths) != structure.ndim:
        raise InvalidRequestError(
            f"offset and shape need {structure.ndim} lengths each (the array's dimensions)"
        )
    nbytes = structure.dtype.itemsize
    for length in lengths:
        nbytes *= length
    await done_reading(call)  # no pooled connection held while the body comes in
    body = await read_body(request, nbytes)
    end = tuple(o + n for o, n in zip(start, lengths, strict=True))
    if all(e <= n for e, n in zip(end, structure.shape, strict=True)):
        data = ArrayData(call.state.blobs, read.node.id, structure)
        await data.write_region(start, lengths, body)
        return Response(status_code=204)
    if not extend:
        raise InvalidContentError(
            f"The region {_shape_text(start)} + {_shape_text(lengths)} lies outside the array's"
            f" shape {list(structure.shape)}: write inside it, or extend it (extend=true)"
        )
    view = await locked_data_node(call, viewer, path, read)
    current = ArrayStructure.of(view.node.structure)  # as it is now, locked
    grown = current.to_json()
    grown["shape"] = [max(e, n) for e, n in zip(end, current.shape, strict=True)]
    extended = ArrayStructure.of(validate_array_structure(grown))
    data = ArrayData(call.state.blobs, view.node.id, extended)
    values = np.frombuffer(body, extended.dtype).reshape(lengths)
    # What lies past the current shape is written first (no reader sees it before the new
    # shape commits); what lies inside it, last thing before the commit, once everything else
    # the request does has succeeded: a failed request leaves the visible array as it was.
    inside, outside = _split(start, lengths, current.shape)
    for region_start, region_lengths in outside:
        await data.write_region(region_start, region_lengths, _part(values, start, region_start,
                                                                    region_lengths))  # fmt: skip
    if extended.shape != current.shape:
        await commit_structure(call, view, extended.to_json())

    async def finish() -> None:
        if inside is not None:
            await data.write_region(inside[0], inside[1], _part(values, start, *inside))
        if extended.shape != current.shape:
            await data.save_metadata(always=True)

    call.work.before_commit(finish)
    return Response(status_code=204)


Box = tuple[tuple[int, ...], tuple[int, ...]]
"""A region: its offset and its lengths."""


def _split(
    start: tuple[int, ...], lengths: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[Box | None, list[Box]]:
    """The region ``start`` + ``lengths`` as its part inside ``shape`` (``None`` if none) and
    the boxes that make up the rest (at most one per axis)."""
    end = tuple(s + n for s, n in zip(start, lengths, strict=True))
    inside_end = tuple(min(e, n) for e, n in zip(end, shape, strict=True))
    inside = None
    if all(s < e for s, e in zip(start, inside_end, strict=True)):
        inside = (start, tuple(e - s for s, e in zip(start, inside_end, strict=True)))
    outside: list[Box] = []
    for axis in range(len(shape)):
        # Within the shape along the axes before, past it along this one, anything after.
        first = max(start[axis], shape[axis])
        if first >= end[axis] or any(start[a] >= inside_end[a] for a in range(axis)):
            continue
        box_start = (*start[:axis], first, *start[axis + 1 :])
        box_end = (*inside_end[:axis], end[axis], *end[axis + 1 :])
        outside.append((box_start, tuple(e - s for s, e in zip(box_start, box_end, strict=True))))
    return inside, outside


def _part(
    values: np.ndarray[Any, Any],
    start: tuple[int, ...],
    box_start: tuple[int, ...],
    box_lengths: tuple[int, ...],
) -> memoryview:
    """The bytes of the box ``box_start`` + ``box_lengths`` of ``values`` (at ``start``)."""
    where = tuple(
        slice(b - s, b - s + n) for s, b, n in zip(start, box_start, box_lengths, strict=True)
    )
    return as_bytes(values[where])
