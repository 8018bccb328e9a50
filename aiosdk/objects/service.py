"""The object store: buckets in namespaces (``"alice/uploads"``) and objects by key in them.

``client.objects`` makes, lists and removes buckets, and writes, reads, describes, lists and
removes objects. Every write sends the body's SHA-256 (``X-Aiosdk-Sha256``), which the server
checks before the object becomes visible; every read is checked against the SHA-256 the server
recorded (:meth:`AsyncObjects.get`, :meth:`AsyncObjects.get_to_file`, and
:meth:`AsyncObjects.stream` once it reached the end).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeAlias

import anyio

from .._core.context import ClientContext
from .._core.downloads import download_to_file
from .._core.errors import ConfigurationError, ConflictError, ProtocolError
from .._core.object_keys import bucket_problem, object_key_problem, split_bucket
from .._core.paging import AsyncPager, Page
from .._core.paths import segment
from .._core.progress import Progress

__all__ = ["SHA256_HEADER", "AsyncObjects", "BucketInfo", "ObjectData", "ObjectInfo"]

SHA256_HEADER = "X-Aiosdk-Sha256"
"""The header of an object's SHA-256 (lowercase hex), sent with a write, answered with a read."""
STREAM_CHUNK_BYTES = 8 * 1024 * 1024
"""How much :meth:`AsyncObjects.stream` asks for per request."""

ObjectData: TypeAlias = (
    "bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | AsyncIterable[bytes]"
)
"""What :meth:`AsyncObjects.put` writes: bytes, a path of a file (a ``str`` is a path), a
binary file object (from where it stands), or an asynchronous iterable of bytes."""


@dataclass(frozen=True)
class BucketInfo:
    """A bucket: ``"<namespace>/<name>"``, who made it, when."""

    namespace: str
    name: str
    owner: str
    created_at: datetime

    @property
    def full_name(self) -> str:
        """``"<namespace>/<name>"``, what the object calls take."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> BucketInfo:
        return cls(
            namespace=str(data["namespace"]),
            name=str(data["name"]),
            owner=str(data["owner"]),
            created_at=datetime.fromisoformat(data["created_at"]),
        )


@dataclass(frozen=True)
class ObjectInfo:
    """An object's description: its key, size, SHA-256 (hex), content type and times."""

    key: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> ObjectInfo:
        return cls(
            key=str(data["key"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            content_type=str(data["content_type"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
        )


def _bucket_path(bucket: object) -> str:
    """``"alice/uploads"`` as the path ``/buckets/alice/uploads``, checked."""
    if not isinstance(bucket, str):
        raise ConfigurationError(f"a bucket must be a string, not {type(bucket).__name__}")
    parts = split_bucket(bucket)
    if parts is None:
        raise ConfigurationError(
            f"invalid bucket {bucket[:200]!r}: a bucket is '<namespace>/<name>'"
        )
    problem = bucket_problem(*parts)
    if problem is not None:
        raise ConfigurationError(f"invalid bucket {bucket[:200]!r}: {problem}")
    namespace, name = parts
    return f"/buckets/{segment(namespace, what='namespace')}/{segment(name, what='bucket')}"


def _object_path(bucket: object, key: object) -> str:
    """The path of the object ``key`` of ``bucket``, checked (the server's rules:
    :mod:`aiosdk._core.object_keys`)."""
    if not isinstance(key, str):
        raise ConfigurationError(f"an object key must be a string, not {type(key).__name__}")
    problem = object_key_problem(key)
    if problem is not None:
        raise ConfigurationError(f"invalid object key {key[:80]!r}: {problem}")
    segments = "/".join(segment(part, what="object key segment") for part in key.split("/"))
    return f"{_bucket_path(bucket)}/objects/{segments}"


def _info_of_headers(key: str, headers: Any) -> ObjectInfo:
    try:
        return ObjectInfo(
            key=key,
            size=int(headers["content-length"]),
            sha256=str(headers[SHA256_HEADER]),
            content_type=str(headers.get("content-type", "application/octet-stream")),
            created_at=None,
            updated_at=_http_date(headers.get("last-modified")),
        )
    except (KeyError, ValueError) as exc:
        raise ProtocolError(f"HEAD of {key!r}: unexpected answer: {exc}") from exc


def _http_date(value: str | None) -> datetime | None:
    if value is None:
        return None
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


class _Body:
    """A body to send from one buffer (a file mapped, not read), and its SHA-256."""

    def __init__(self, view: memoryview, mapped: mmap.mmap | None = None) -> None:
        self.view = view
        self._mapped = mapped
        self.sha256 = ""

    def close(self) -> None:
        mapped, self._mapped = self._mapped, None
        # (the transport may still hold a view: the mapping then goes with it)
        with contextlib.suppress(BufferError):
            self.view.release()
            if mapped is not None:
                mapped.close()


def _map_file(file: IO[bytes]) -> _Body:
    """The rest of the open regular file ``file`` as one mapped buffer (not read whole)."""
    start = file.tell()
    size = os.fstat(file.fileno()).st_size
    if size - start <= 0:
        return _Body(memoryview(b""))
    mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    return _Body(memoryview(mapped)[start:], mapped)


def _open_and_map(path: Path) -> _Body:
    with path.open("rb") as file:
        return _map_file(file)


async def _body_of(data: object) -> _Body:
    """``data`` (see :data:`ObjectData`) as one buffer with its SHA-256, off the event loop."""
    if isinstance(data, bytes | bytearray | memoryview):
        body = _Body(memoryview(data).cast("B"))
    elif isinstance(data, str | os.PathLike):
        body = await anyio.to_thread.run_sync(_open_and_map, Path(os.fspath(data)))
    elif hasattr(data, "read"):
        file: Any = data
        try:
            file.fileno()
            body = await anyio.to_thread.run_sync(_map_file, file)
        except (OSError, AttributeError, ValueError):  # no file descriptor (BytesIO): read it
            body = _Body(memoryview(await anyio.to_thread.run_sync(file.read)))
    elif isinstance(data, AsyncIterable):
        gathered = bytearray()
        async for chunk in data:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise ConfigurationError(
                    f"an asynchronous iterable body yields bytes, not {type(chunk).__name__}"
                )
            gathered += chunk
        body = _Body(memoryview(gathered))
    else:
        raise ConfigurationError(
            "data must be bytes, a path, a binary file object or an asynchronous iterable of bytes,"
            f" not {type(data).__name__}"
        )
    view = body.view
    body.sha256 = await anyio.to_thread.run_sync(lambda: hashlib.sha256(view).hexdigest())
    return body


def _bucket_page(data: dict[str, Any]) -> Page[BucketInfo]:
    items = [BucketInfo._from_json(item) for item in data["items"]]
    return Page(items=items, next_page_token=data.get("next_page_token"))


def _object_page(data: dict[str, Any]) -> Page[ObjectInfo]:
    items = [ObjectInfo._from_json(item) for item in data["items"]]
    return Page(items=items, next_page_token=data.get("next_page_token"))


class AsyncObjects:
    """Buckets and their objects. A bucket is named ``"<namespace>/<name>"``; who may read or
    write it follows the namespace's permissions (its owner, and an organization's members with
    ``write``; ``read`` to read). Invalid names and keys are refused before any request
    (:class:`~aiosdk.ConfigurationError`)."""

    def __init__(self, ctx: ClientContext) -> None:
        self._ctx = ctx

    # -- buckets ------------------------------------------------------------------------------

    async def create_bucket(self, name: str) -> BucketInfo:
        """Make the bucket ``name`` (``"alice/uploads"``); :class:`~aiosdk.ConflictError` if it
        exists."""
        _bucket_path(name)
        namespace, bucket = name.split("/")
        return await self._ctx.fetch(
            "POST",
            f"/buckets/{segment(namespace, what='namespace')}",
            BucketInfo._from_json,
            json={"name": bucket},
        )

    async def get_bucket(self, name: str) -> BucketInfo:
        """The bucket ``name``; :class:`~aiosdk.NotFoundError` if there is none."""
        return await self._ctx.fetch("GET", _bucket_path(name), BucketInfo._from_json)

    def list_buckets(self, namespace: str, *, page_size: int = 100) -> AsyncPager[BucketInfo]:
        """The buckets of ``namespace``, oldest first, ``page_size`` per request."""
        path = f"/buckets/{segment(namespace, what='namespace')}"

        async def fetch(cursor: str | None) -> Page[BucketInfo]:
            params: dict[str, Any] = {"page_size": page_size}
            if cursor:
                params["page_token"] = cursor
            return await self._ctx.fetch("GET", path, _bucket_page, params=params)

        return AsyncPager(fetch)

    async def delete_bucket(self, name: str) -> None:
        """Remove the bucket ``name``, which must be empty (:class:`~aiosdk.ConflictError`
        otherwise)."""
        await self._ctx.request("DELETE", _bucket_path(name))

    # -- objects ------------------------------------------------------------------------------

    async def put(
        self, bucket: str, key: str, data: ObjectData, *, content_type: str | None = None
    ) -> ObjectInfo:
        """Write ``data`` as the object ``key`` of ``bucket``, replacing any (whole or not at
        all: readers see the old object or the new one, never part of one).

        ``data``: bytes, the path of a file (sent from a mapping of it, never read whole into
        memory), a binary file object (from where it stands), or an asynchronous iterable of bytes
        (gathered, then sent). Its SHA-256 is sent along and checked by the server.
        ``content_type`` is stored and answered with reads (default
        ``application/octet-stream``).
        """
        path = _object_path(bucket, key)
        body = await _body_of(data)
        try:
            headers = {
                SHA256_HEADER: body.sha256,
                "Content-Type": content_type or "application/octet-stream",
            }
            response = await self._ctx.request(
                "PUT", path, content=body.view, headers=headers, idempotency_key=False
            )
        finally:
            body.close()
        try:
            return ObjectInfo._from_json(response.json())
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"PUT {key!r}: unexpected response: {exc}") from exc

    async def get(self, bucket: str, key: str) -> bytes:
        """The bytes of the object ``key`` of ``bucket``, checked against its SHA-256;
        :class:`~aiosdk.NotFoundError` if there is none."""
        response = await self._ctx.request("GET", _object_path(bucket, key))
        content = response.content
        expected = response.headers.get(SHA256_HEADER)
        if expected is not None:
            actual = await anyio.to_thread.run_sync(lambda: hashlib.sha256(content).hexdigest())
            if actual != expected:
                raise ProtocolError(f"GET {key!r}: the bytes received are not the object's")
        return content

    async def get_range(self, bucket: str, key: str, start: int, stop: int | None = None) -> bytes:
        """The bytes ``start:stop`` of the object (``stop=None``: to its end; both
        non-negative); past its end, :class:`~aiosdk.StatusError` (416)."""
        if start < 0 or (stop is not None and stop <= start):
            raise ConfigurationError("a range is 0 <= start < stop")
        last = "" if stop is None else str(stop - 1)
        response = await self._ctx.request(
            "GET", _object_path(bucket, key), headers={"Range": f"bytes={start}-{last}"}
        )
        return response.content

    async def stream(
        self, bucket: str, key: str, *, chunk_size: int = STREAM_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """The object's bytes, ``chunk_size`` per request (each with its own retries, memory
        bounded by ``chunk_size``), checked against its SHA-256 once all arrived. An object
        replaced meanwhile is :class:`~aiosdk.ConflictError`."""
        if chunk_size < 1:
            raise ConfigurationError("chunk_size is at least 1")
        path = _object_path(bucket, key)
        info = await self.stat(bucket, key)
        digest = hashlib.sha256()
        at = 0
        while at < info.size:
            headers = {
                "Range": f"bytes={at}-{min(at + chunk_size, info.size) - 1}",
                "If-Range": f'"{info.sha256}"',
            }
            response = await self._ctx.request("GET", path, headers=headers)
            if response.status_code != 206:
                raise ConflictError(f"{key!r} was replaced while it was read", status_code=409)
            piece = response.content
            if not piece:
                raise ProtocolError(f"GET {key!r}: an empty part at offset {at}")
            await anyio.to_thread.run_sync(digest.update, piece)
            at += len(piece)
            yield piece
        if digest.hexdigest() != info.sha256:
            raise ProtocolError(f"GET {key!r}: the bytes received are not the object's")

    async def get_to_file(
        self,
        bucket: str,
        key: str,
        file: str | os.PathLike[str] | IO[bytes],
        *,
        progress: Progress = None,
    ) -> None:
        """Write the object's bytes to ``file``: a path (written under a temporary name beside
        it and renamed once whole) or a binary file object open for writing; streamed, written
        off the event loop, resumed after a broken connection under the ``"forceful"`` mode.
        ``progress``: ``True`` for a bar, or a callback ``(done, total)``."""
        await download_to_file(self._ctx, _object_path(bucket, key), {}, file, progress, key)

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """The object's size, SHA-256, content type and last change (one ``HEAD``);
        :class:`~aiosdk.NotFoundError` if there is none."""
        response = await self._ctx.request("HEAD", _object_path(bucket, key))
        return _info_of_headers(key, response.headers)

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """The same as :meth:`stat` (the HTTP method's name)."""
        return await self.stat(bucket, key)

    def list(
        self, bucket: str, *, prefix: str = "", page_size: int = 100
    ) -> AsyncPager[ObjectInfo]:
        """The objects of ``bucket`` whose keys start with ``prefix``, by key, ``page_size``
        per request."""
        path = f"{_bucket_path(bucket)}/objects"

        async def fetch(cursor: str | None) -> Page[ObjectInfo]:
            params: dict[str, Any] = {"page_size": page_size}
            if prefix:
                params["prefix"] = prefix
            if cursor:
                params["page_token"] = cursor
            return await self._ctx.fetch("GET", path, _object_page, params=params)

        return AsyncPager(fetch)

    async def delete(self, bucket: str, key: str) -> None:
        """Remove the object ``key`` of ``bucket``; :class:`~aiosdk.NotFoundError` if there is
        none."""
        await self._ctx.request("DELETE", _object_path(bucket, key))
