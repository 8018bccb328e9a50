"""``/api/v1/buckets``: buckets in namespaces and the objects in them, by key.

Who may do what follows the namespace's permissions (see :mod:`...authorization`): ``read`` to
list and read, ``write`` to make and remove buckets and to write and remove objects; a namespace
the caller may not read is answered 404 like a missing one. The logic lives in
:mod:`...objects.store`, which these routes call once they have authorized the request.

``PUT .../objects/{key}`` streams its body to disk (constant memory) and records its size and
SHA-256; with ``X-Aiosdk-Sha256`` (hex) a body of another checksum is refused (422) and nothing
is written. ``GET`` streams the bytes with ``ETag`` (the quoted SHA-256), ``Accept-Ranges``,
one ``Range`` (206, 416) and ``If-None-Match`` (304). Object bodies go up to
``limits.max_data_body_bytes``; a client's ``PUT`` needs no ``Idempotency-Key`` (writing the
same bytes twice leaves the same object), and one sent with a key is buffered to be replayed.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel

from ...authorization import READ, WRITE, Caller
from ...config import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from ...data.ranges import requested_range
from ...errors import InvalidRequestError, NotFoundError
from ...objects import store
from ...objects.store import BucketRef as BucketRow
from ...objects.store import ObjectRecord as StoredObject
from ..bodies import HEAD_REQUEST, StreamedResponse
from ..dependencies import Current, RequestCall
from ..encoding import named_etag
from ..openapi import documented_error
from ..pagination import decode_page_token, encode_page_token
from .data_nodes import NOT_MODIFIED, done_reading
from .organizations import conflict

__all__ = ["SHA256_HEADER", "BucketInfo", "BucketPage", "ObjectInfo", "ObjectPage", "router"]

router = APIRouter(prefix="/buckets", tags=["objects"])

SHA256_HEADER = "X-Aiosdk-Sha256"
"""The header of an object's SHA-256 (lowercase hex): sent with a PUT to have it checked,
answered with every read."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_TYPE = re.compile(r"[\x20-\x7e]{1,255}")


class BucketInfo(BaseModel):
    """A bucket."""

    namespace: str
    name: str
    owner: str
    created_at: datetime

    @classmethod
    def of(cls, row: BucketRow) -> BucketInfo:
        """The answer for ``row``."""
        return cls(
            namespace=row.namespace, name=row.name, owner=row.owner, created_at=row.created_at
        )


class BucketCreate(BaseModel):
    """A bucket to make in the namespace of the path."""

    name: str


class BucketPage(BaseModel):
    """A page of buckets; ``next_page_token`` is null on the last page."""

    items: list[BucketInfo]
    next_page_token: str | None


class ObjectInfo(BaseModel):
    """An object's description."""

    key: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: StoredObject) -> ObjectInfo:
        """The answer for ``row``."""
        return cls(
            key=row.key,
            size=row.size,
            sha256=row.sha256,
            content_type=row.content_type,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class ObjectPage(BaseModel):
    """A page of objects, by key; ``next_page_token`` is null on the last page."""

    items: list[ObjectInfo]
    next_page_token: str | None


async def _caller(call: RequestCall) -> Caller:
    return await call.state.callers.caller(call.session, call.principal)


async def _bucket(call: RequestCall, namespace: str, bucket: str, action: str) -> BucketRow:
    return await store.authorized_bucket(
        call.session, await _caller(call), namespace, bucket, action
    )


_BUCKET_404 = documented_error("No such bucket, or the caller may not read its namespace")
_INVALID = documented_error("Invalid namespace, bucket name or object key (the message says why)")
_WRITE_403 = documented_error(
    "The caller may not write in the namespace, or its token is read-only"
)


@router.post(
    "/{namespace}",
    status_code=201,
    summary="Create a bucket",
    responses={
        400: _INVALID,
        403: _WRITE_403,
        404: documented_error("No such namespace, or the caller may not read it"),
        409: conflict("The bucket exists already"),
    },
)
async def create_bucket(namespace: str, body: BucketCreate, call: Current) -> BucketInfo:
    """Make the bucket ``body.name`` in ``namespace`` (``write`` there needed)."""
    row = await store.create_bucket(
        call.work, await _caller(call), call.principal.name, namespace, body.name
    )
    return BucketInfo.of(row)


@router.get(
    "/{namespace}",
    summary="List buckets",
    responses={
        400: _INVALID,
        404: documented_error("No such namespace, or the caller may not read it"),
    },
)
async def list_buckets(
    namespace: str,
    call: Current,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[str | None, Query()] = None,
) -> BucketPage:
    """The buckets of ``namespace``, oldest first."""
    after = None if page_token is None else decode_page_token(page_token)
    rows, position = await store.list_buckets(
        call.session, await _caller(call), namespace, page_size, after
    )
    return BucketPage(
        items=[BucketInfo.of(row) for row in rows],
        next_page_token=None if position is None else encode_page_token(*position),
    )


@router.get(
    "/{namespace}/{bucket}",
    summary="Get a bucket",
    responses={400: _INVALID, 404: _BUCKET_404},
)
async def get_bucket(namespace: str, bucket: str, call: Current) -> BucketInfo:
    """The bucket ``namespace``/``bucket``."""
    return BucketInfo.of(await _bucket(call, namespace, bucket, READ))


@router.delete(
    "/{namespace}/{bucket}",
    status_code=204,
    summary="Delete an empty bucket",
    response_class=Response,
    responses={
        400: _INVALID,
        403: _WRITE_403,
        404: _BUCKET_404,
        409: conflict("The bucket holds objects"),
    },
)
async def delete_bucket(namespace: str, bucket: str, call: Current) -> Response:
    """Remove the bucket, which must hold no object."""
    row = await _bucket(call, namespace, bucket, WRITE)
    await store.delete_bucket(call.work, row, call.state.objects)
    return Response(status_code=204)


@router.get(
    "/{namespace}/{bucket}/objects",
    summary="List objects",
    responses={400: _INVALID, 404: _BUCKET_404},
)
async def list_objects(
    namespace: str,
    bucket: str,
    call: Current,
    prefix: Annotated[str, Query(max_length=1024)] = "",
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[str | None, Query(max_length=2048)] = None,
) -> ObjectPage:
    """The objects of the bucket whose keys start with ``prefix``, by key."""
    row = await _bucket(call, namespace, bucket, READ)
    after = None if page_token is None else store.decode_key_token(page_token)
    rows, last = await store.list_objects(call.session, row, prefix, page_size, after)
    return ObjectPage(
        items=[ObjectInfo.of(found) for found in rows],
        next_page_token=None if last is None else store.encode_key_token(last),
    )


def _object_headers(found: StoredObject) -> dict[str, str]:
    return {
        "ETag": f'"{found.sha256}"',
        SHA256_HEADER: found.sha256,
        "Accept-Ranges": "bytes",
        "Last-Modified": found.updated_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }


_OBJECT_404 = documented_error(
    "No such bucket or object, or the caller may not read the bucket's namespace"
)
_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_OBJECT_HEADERS = {
    "ETag": {"description": "The quoted SHA-256 of the bytes", "schema": {"type": "string"}},
    SHA256_HEADER: {"description": "The SHA-256 of the bytes, hex", "schema": {"type": "string"}},
}


@router.put(
    "/{namespace}/{bucket}/objects/{key:path}",
    summary="Write an object",
    responses={
        200: {"description": "The object was replaced", "model": ObjectInfo},
        201: {"description": "The object was made", "model": ObjectInfo},
        400: documented_error(
            "Invalid namespace, bucket name, object key, Content-Type or X-Aiosdk-Sha256"
        ),
        403: _WRITE_403,
        404: _BUCKET_404,
        413: documented_error("The body exceeds limits.max_data_body_bytes"),
        409: conflict("A concurrent change of the bucket conflicted: retry"),
        422: documented_error("The body's SHA-256 is not the X-Aiosdk-Sha256 declared"),
    },
    openapi_extra={"requestBody": {"required": False, "content": _BYTES}},
)
async def put_object(
    namespace: str,
    bucket: str,
    key: str,
    request: Request,
    call: Current,
    x_aiosdk_sha256: Annotated[str | None, Header()] = None,
) -> Response:
    """Write the body as the object ``key`` (streamed to disk; visible whole once written,
    or not at all), with the request's ``Content-Type``."""
    store.check_key(key)
    if x_aiosdk_sha256 is not None and not _SHA256.fullmatch(x_aiosdk_sha256):
        raise InvalidRequestError(f"{SHA256_HEADER} must be a SHA-256 in lowercase hex")
    content_type = request.headers.get("content-type")
    if content_type is not None and not _CONTENT_TYPE.fullmatch(content_type):
        raise InvalidRequestError("Content-Type must be 1 to 255 printable ASCII characters")
    row = await _bucket(call, namespace, bucket, WRITE)
    await done_reading(call)  # no pooled connection held while the body comes in
    found, made = await store.put_object(
        call.work,
        call.state.objects,
        row,
        key,
        request.stream(),
        content_type,
        x_aiosdk_sha256,
    )
    return Response(
        ObjectInfo.of(found).model_dump_json(),
        status_code=201 if made else 200,
        media_type="application/json",
        headers={"ETag": f'"{found.sha256}"'},
    )


@router.get(
    "/{namespace}/{bucket}/objects/{key:path}",
    summary="Read an object",
    response_class=Response,
    responses={
        200: {"description": "The object's bytes", "content": _BYTES, "headers": _OBJECT_HEADERS},
        206: {"description": "The part of the bytes the Range asked for (see Content-Range)"},
        304: NOT_MODIFIED,
        400: _INVALID,
        404: _OBJECT_404,
        416: documented_error("The Range asked for is beyond the object's end"),
    },
)
async def get_object(
    namespace: str, bucket: str, key: str, request: Request, call: Current
) -> Response:
    """The object's bytes (with ``Range``: a part of them), with its ``Content-Type``; ``HEAD``
    answers its headers alone."""
    store.check_key(key)
    row = await _bucket(call, namespace, bucket, READ)
    files = call.state.objects
    if request.scope.get(HEAD_REQUEST):
        found = await store.find_object(call.session, row, key)
        if found is None:
            raise NotFoundError(f"No object {key[:200]!r} in {namespace}/{bucket}")
        await done_reading(call)
        return _answer(request, found, None)
    found, opened = await store.open_object(call.session, files, row, key)
    await done_reading(call)
    try:
        return _answer(request, found, opened)
    except BaseException:
        opened.close()
        raise


def _answer(request: Request, found: StoredObject, opened: store.OpenedObject | None) -> Response:
    headers = _object_headers(found)
    etag = headers["ETag"]
    if named_etag(request.headers, etag) is not None:
        if opened is not None:
            opened.close()
        return Response(status_code=304, headers=headers)
    part = requested_range(request.headers, found.size, etag)
    start, stop, status = (0, found.size, 200) if part is None else (part.start, part.stop, 206)
    if part is not None:
        headers["Content-Range"] = part.content_range
    if opened is None:  # a HEAD request: no body
        return StreamedResponse(_nothing, stop - start, status, headers, found.content_type)
    if start == stop:
        opened.close()
    reader = opened
    return StreamedResponse(
        lambda: reader.pieces(start, stop), stop - start, status, headers, found.content_type
    )


async def _nothing() -> Any:
    return
    yield  # (an async generator of nothing)


@router.delete(
    "/{namespace}/{bucket}/objects/{key:path}",
    status_code=204,
    summary="Delete an object",
    response_class=Response,
    responses={
        400: _INVALID,
        403: _WRITE_403,
        404: _OBJECT_404,
        409: conflict("A concurrent change of the object conflicted: retry"),
    },
)
async def delete_object(namespace: str, bucket: str, key: str, call: Current) -> Response:
    """Remove the object ``key``."""
    store.check_key(key)
    row = await _bucket(call, namespace, bucket, WRITE)
    await store.delete_object(call.work, call.state.objects, row, key)
    return Response(status_code=204)
