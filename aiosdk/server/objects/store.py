"""The object store's logic, under whatever authorizes a request (the HTTP routes' namespace
permissions today; a PAR's signature later): buckets found, made and removed, objects written
from a stream of bytes, read in ranges, listed by prefix and removed.

Bytes live in files under the server's objects directory (``<data_dir>/objects``), one file per
write of an object, at ``<bucket id>/<storage id>``. A write streams the body into a temporary
file (``.<storage id>.partial``, hashed as it comes in, in a worker thread), then, holding the
object's row locked, points the row at the new storage id and, last thing before the commit,
renames the file into place: a half-uploaded object is never visible, a refused one (a checksum
mismatch, a missing bucket) leaves nothing, and concurrent writers to one key leave one whole
object (the last commit wins). The file a write replaced is removed once the write has
committed; a reader that opened it first keeps reading the bytes it started with.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..._core.object_keys import bucket_problem, object_key_problem
from ..authorization import READ, Caller, require
from ..catalog.paths import check_key as check_namespace
from ..errors import ApiError, ConflictError, InvalidRequestError, NotFoundError
from ..storage import utcnow
from ..unit_of_work import UnitOfWork
from .models import Bucket, StoredObject

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "OBJECTS_DIRECTORY",
    "ChecksumMismatchError",
    "ObjectFiles",
    "OpenedObject",
    "Upload",
    "BucketRef",
    "ObjectRecord",
    "authorized_bucket",
    "check_key",
    "create_bucket",
    "decode_key_token",
    "delete_bucket",
    "delete_object",
    "encode_key_token",
    "find_bucket",
    "find_object",
    "list_buckets",
    "list_objects",
    "open_object",
    "put_object",
]

OBJECTS_DIRECTORY = "objects"
"""The directory of the objects' files, in the server's data directory."""
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_WRITE_BYTES = 1024 * 1024
"""A body is written (and hashed) this much at a time, in a worker thread."""
_READ_BYTES = 1024 * 1024
_PARTIAL = ".partial"


class ChecksumMismatchError(ApiError):
    """The body's SHA-256 is not the one the request declared (422; nothing is written)."""

    status = 422
    error_type = "invalid_request"


class ObjectsUnavailableError(ApiError):
    """The server keeps no object files (a state made without a data directory): 503."""

    status = 503
    error_type = "unavailable"


def check_key(key: str) -> str:
    """``key``, if it is a valid object key; :class:`InvalidRequestError` naming the problem."""
    problem = object_key_problem(key)
    if problem is not None:
        raise InvalidRequestError(f"Invalid object key {key[:80]!r}: {problem}")
    return key


def _check_bucket_name(namespace: str, name: str) -> None:
    problem = bucket_problem(namespace, name)
    if problem is not None:
        raise InvalidRequestError(f"Invalid bucket: {problem}")


@dataclass(frozen=True)
class BucketRef:
    """A bucket as read (plain values: still good once its transaction ended)."""

    id: str
    namespace: str
    name: str
    owner: str
    created_at: datetime

    @classmethod
    def of(cls, row: Bucket) -> BucketRef:
        """The values of ``row``."""
        return cls(row.id, row.namespace, row.name, row.owner, row.created_at)


@dataclass(frozen=True)
class ObjectRecord:
    """An object's row as read (plain values: still good once its transaction ended)."""

    key: str
    size: int
    sha256: str
    content_type: str
    storage_id: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: StoredObject) -> ObjectRecord:
        """The values of ``row``."""
        return cls(
            row.key,
            row.size,
            row.sha256,
            row.content_type,
            row.storage_id,
            row.created_at,
            row.updated_at,
        )


@dataclass(frozen=True)
class Upload:
    """A body received into a temporary file, not yet visible."""

    bucket_id: str
    storage_id: str
    size: int
    sha256: str
    temporary: Path


class ObjectFiles:
    """The objects' files under ``root`` (``None``: the server keeps none, and every write or
    read is :class:`ObjectsUnavailableError`)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _root(self) -> Path:
        if self.root is None:
            raise ObjectsUnavailableError("This server keeps no objects (no data directory)")
        return self.root

    def path_of(self, bucket_id: str, storage_id: str) -> Path:
        """The file of the object bytes ``storage_id`` of the bucket ``bucket_id``."""
        return self._root() / bucket_id / storage_id

    async def receive(
        self, bucket_id: str, chunks: AsyncIterator[bytes], expected_sha256: str | None = None
    ) -> Upload:
        """``chunks`` written to a temporary file (flushed to disk) and hashed as they come; a
        SHA-256 other than ``expected_sha256`` (hex) is :class:`ChecksumMismatchError`, and
        the file is removed (as on any failure)."""
        storage_id = uuid.uuid4().hex
        directory = self._root() / bucket_id
        temporary = directory / f".{storage_id}{_PARTIAL}"
        digest = hashlib.sha256()
        size = 0

        def start() -> int:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

        def write(fd: int, data: bytes) -> None:
            digest.update(data)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        def finish(fd: int) -> None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        fd = await anyio.to_thread.run_sync(start)
        try:
            pending = bytearray()
            async for chunk in chunks:
                pending += chunk
                size += len(chunk)
                if len(pending) >= _WRITE_BYTES:
                    data, pending = bytes(pending), bytearray()
                    await anyio.to_thread.run_sync(write, fd, data)
            if pending:
                await anyio.to_thread.run_sync(write, fd, bytes(pending))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(os.close, fd)
                await anyio.to_thread.run_sync(_unlink, temporary)
            raise
        try:
            await anyio.to_thread.run_sync(finish, fd)
            sha256 = digest.hexdigest()
            _check_sha256(sha256, expected_sha256)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_unlink, temporary)
            raise
        return Upload(bucket_id, storage_id, size, sha256, temporary)

    async def install(self, upload: Upload) -> None:
        """Rename ``upload``'s file into place (and flush its directory)."""
        final = self.path_of(upload.bucket_id, upload.storage_id)

        def rename() -> None:
            upload.temporary.replace(final)
            directory = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

        await anyio.to_thread.run_sync(rename)

    async def discard(self, upload: Upload) -> None:
        """Remove ``upload``'s file, wherever it is."""
        final = self.path_of(upload.bucket_id, upload.storage_id)

        def remove() -> None:
            _unlink(upload.temporary)
            _unlink(final)

        await anyio.to_thread.run_sync(remove)

    async def remove(self, bucket_id: str, storage_ids: Sequence[str]) -> None:
        """Remove the files ``storage_ids`` of the bucket ``bucket_id``."""
        paths = [self.path_of(bucket_id, storage_id) for storage_id in storage_ids]

        def remove_all() -> None:
            for path in paths:
                _unlink(path)

        await anyio.to_thread.run_sync(remove_all)

    async def remove_bucket(self, bucket_id: str) -> None:
        """Remove the bucket ``bucket_id``'s directory (empty by then, but for temporaries)."""
        directory = self._root() / bucket_id

        def remove() -> None:
            if directory.is_dir():
                for leftover in directory.iterdir():
                    _unlink(leftover)
                directory.rmdir()

        await anyio.to_thread.run_sync(remove)


def _check_sha256(sha256: str, expected: str | None) -> None:
    if expected is not None and expected != sha256:
        raise ChecksumMismatchError(
            f"The body's SHA-256 is {sha256}, not the {expected} the request declared:"
            " nothing was written"
        )


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


# --- buckets ---------------------------------------------------------------------------------


async def find_bucket(session: AsyncSession, namespace: str, name: str) -> Bucket | None:
    """The bucket ``namespace``/``name``, or ``None`` (no authorization: see
    :func:`authorized_bucket`)."""
    _check_bucket_name(namespace, name)
    found: Bucket | None = await session.scalar(
        select(Bucket).where(Bucket.namespace == namespace, Bucket.name == name)
    )
    return found


async def authorized_bucket(
    session: AsyncSession, caller: Caller | None, namespace: str, name: str, action: str
) -> BucketRef:
    """The bucket ``namespace``/``name``, which ``caller`` may do ``action`` in (its
    namespace's permission); :class:`NotFoundError` if it is missing or the caller may not
    read the namespace, :class:`~..errors.PermissionDeniedError` if it may read only."""
    _check_bucket_name(namespace, name)
    missing = f"Bucket {namespace}/{name} not found"
    require(caller, namespace, action, not_found=missing)
    bucket = await find_bucket(session, namespace, name)
    if bucket is None:
        raise NotFoundError(missing)
    return BucketRef.of(bucket)


async def create_bucket(
    work: UnitOfWork, caller: Caller | None, owner: str, namespace: str, name: str
) -> BucketRef:
    """Make the bucket ``namespace``/``name`` (the caller needs ``write`` in the namespace);
    :class:`ConflictError` if it exists."""
    _check_bucket_name(namespace, name)
    require(caller, namespace, "write")
    await work.begin_write()
    if await find_bucket(work.session, namespace, name) is not None:
        raise ConflictError(f"Bucket {namespace}/{name} exists already")
    bucket = Bucket(namespace=namespace, name=name, owner=owner, created_at=utcnow())
    work.session.add(bucket)
    await work.session.flush()
    return BucketRef.of(bucket)


async def list_buckets(
    session: AsyncSession,
    caller: Caller | None,
    namespace: str,
    limit: int,
    after: tuple[datetime, str] | None,
) -> tuple[list[BucketRef], tuple[datetime, str] | None]:
    """A page of the buckets of ``namespace`` (the caller needs ``read``), oldest first, after
    the position ``after`` (``(created_at, id)``), and the position of the next page."""
    check_namespace(namespace)
    require(caller, namespace, READ)
    query = select(Bucket).where(Bucket.namespace == namespace)
    if after is not None:
        created_at, row_id = after
        query = query.where(
            (Bucket.created_at > created_at)
            | ((Bucket.created_at == created_at) & (Bucket.id > row_id))
        )
    rows = list(
        await session.scalars(query.order_by(Bucket.created_at, Bucket.id).limit(limit + 1))
    )
    refs = [BucketRef.of(row) for row in rows]
    if len(refs) > limit:
        last = refs[limit - 1]
        return refs[:limit], (last.created_at, last.id)
    return refs, None


async def delete_bucket(work: UnitOfWork, bucket: BucketRef, files: ObjectFiles) -> None:
    """Remove ``bucket`` (authorized by the caller); :class:`ConflictError` if it holds an
    object."""
    await work.begin_write()
    session = work.session
    locked = await session.scalar(select(Bucket).where(Bucket.id == bucket.id).with_for_update())
    if locked is None:
        raise NotFoundError(f"Bucket {bucket.namespace}/{bucket.name} not found")
    if await session.scalar(select(exists().where(StoredObject.bucket_id == bucket.id))):
        raise ConflictError(
            f"Bucket {bucket.namespace}/{bucket.name} is not empty: delete its objects first"
        )
    await session.delete(locked)
    await session.flush()
    bucket_id = bucket.id

    async def remove_directory() -> None:
        if files.root is not None:
            await files.remove_bucket(bucket_id)

    work.after_commit(lambda: _spawn(remove_directory))


_BACKGROUND: set[asyncio.Task[None]] = set()
"""The file removals running after their commits (kept referenced until they end)."""


def _spawn(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``work()`` in the background (a removal of files, once its commit is done: the
    answer does not wait for it; a crash before it leaves an unreferenced file behind)."""
    task = asyncio.get_running_loop().create_task(work())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


# --- objects ---------------------------------------------------------------------------------


async def find_object(session: AsyncSession, bucket: BucketRef, key: str) -> ObjectRecord | None:
    """The object ``key`` of ``bucket``, or ``None``."""
    check_key(key)
    found: StoredObject | None = await session.scalar(
        select(StoredObject).where(StoredObject.bucket_id == bucket.id, StoredObject.key == key)
    )
    return None if found is None else ObjectRecord.of(found)


async def _still_there(session: AsyncSession, bucket: BucketRef) -> None:
    """Lock ``bucket``'s row (``FOR UPDATE``: the writes of one bucket commit one after another,
    so that two first writes of one key never both insert it, and a write never lands in a
    bucket being removed); :class:`NotFoundError` if it was removed meanwhile."""
    locked = await session.scalar(select(Bucket.id).where(Bucket.id == bucket.id).with_for_update())
    if locked is None:
        raise NotFoundError(f"Bucket {bucket.namespace}/{bucket.name} not found")


async def put_object(
    work: UnitOfWork,
    files: ObjectFiles,
    bucket: BucketRef,
    key: str,
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    expected_sha256: str | None = None,
) -> tuple[ObjectRecord, bool]:
    """Write ``chunks`` as the object ``key`` of ``bucket`` (authorized by the caller), visible
    once the request's unit of work commits; the object and whether it is new."""
    check_key(key)
    upload = await files.receive(bucket.id, chunks, expected_sha256)
    try:
        await work.begin_write()
        session = work.session
        await _still_there(session, bucket)
        current: StoredObject | None = await session.scalar(
            select(StoredObject)
            .where(StoredObject.bucket_id == bucket.id, StoredObject.key == key)
            .with_for_update()
        )
        now = utcnow()
        replaced = None
        if current is None:
            current = StoredObject(bucket_id=bucket.id, key=key, created_at=now)
            session.add(current)
        else:
            replaced = current.storage_id
        current.size = upload.size
        current.sha256 = upload.sha256
        current.content_type = content_type or DEFAULT_CONTENT_TYPE
        current.storage_id = upload.storage_id
        current.updated_at = now
        await session.flush()
        record = ObjectRecord.of(current)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await files.discard(upload)
        raise

    async def install() -> None:
        await files.install(upload)

    work.before_commit(install)
    if replaced is not None:
        old = replaced
        work.after_commit(lambda: _spawn(lambda: files.remove(bucket.id, [old])))
    return record, replaced is None


async def delete_object(
    work: UnitOfWork, files: ObjectFiles, bucket: BucketRef, key: str
) -> ObjectRecord:
    """Remove the object ``key`` of ``bucket`` (authorized by the caller); its file goes once
    the removal has committed. :class:`NotFoundError` if there is none."""
    check_key(key)
    await work.begin_write()
    session = work.session
    current: StoredObject | None = await session.scalar(
        select(StoredObject)
        .where(StoredObject.bucket_id == bucket.id, StoredObject.key == key)
        .with_for_update()
    )
    if current is None:
        raise NotFoundError(f"No object {key[:200]!r} in {bucket.namespace}/{bucket.name}")
    record = ObjectRecord.of(current)
    storage_id = record.storage_id
    await session.execute(
        delete(StoredObject).where(StoredObject.bucket_id == bucket.id, StoredObject.key == key)
    )
    work.after_commit(lambda: _spawn(lambda: files.remove(bucket.id, [storage_id])))
    return record


async def list_objects(
    session: AsyncSession, bucket: BucketRef, prefix: str, limit: int, after: str | None
) -> tuple[list[ObjectRecord], str | None]:
    """A page of the objects of ``bucket`` whose keys start with ``prefix``, by key, after the
    key ``after``, and the key the next page starts after (``None``: the last page)."""
    query = select(StoredObject).where(StoredObject.bucket_id == bucket.id)
    if prefix:
        query = query.where(StoredObject.key.startswith(prefix, autoescape=True))
    if after is not None:
        query = query.where(StoredObject.key > after)
    found = await session.scalars(query.order_by(StoredObject.key).limit(limit + 1))
    rows = [ObjectRecord.of(row) for row in found]
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].key
    return rows, None


def encode_key_token(key: str) -> str:
    """The page token that resumes after the object key ``key``."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_key_token(token: str) -> str:
    """The key a page token of :func:`encode_key_token` resumes after;
    :class:`InvalidRequestError` for anything else."""
    try:
        key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError):
        raise InvalidRequestError("Invalid page_token") from None
    if len(token) > 2048 or object_key_problem(key) is not None:
        raise InvalidRequestError("Invalid page_token")
    return key


class OpenedObject:
    """An object's file opened for reading (its bytes stay readable, even once a later write
    replaced them, until :meth:`close`)."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd: int | None = fd
        self.size = size

    async def pieces(self, start: int, stop: int) -> AsyncIterator[bytes]:
        """The bytes ``start:stop``, :data:`_READ_BYTES` at a time; closes the file at the end."""
        try:
            at = start
            while at < stop:
                fd = self._fd
                if fd is None:
                    return
                piece = await anyio.to_thread.run_sync(
                    os.pread, fd, min(_READ_BYTES, stop - at), at
                )
                if not piece:
                    return
                at += len(piece)
                yield piece
        finally:
            self.close()

    def close(self) -> None:
        """Close the file (again: nothing)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


async def open_object(
    session: AsyncSession, files: ObjectFiles, bucket: BucketRef, key: str
) -> tuple[ObjectRecord, OpenedObject]:
    """The object ``key`` of ``bucket`` (authorized by the caller) and its file, opened: a
    write that replaced (and removed) the file between the look-up and the opening is seen by
    looking again. :class:`NotFoundError` if there is none."""
    path: Path | None = None
    for _ in range(3):
        found = await find_object(session, bucket, key)
        if found is None:
            break
        path = files.path_of(bucket.id, found.storage_id)
        try:
            fd = await anyio.to_thread.run_sync(os.open, path, os.O_RDONLY)
        except FileNotFoundError:
            await session.rollback()  # (a fresh snapshot for the next look)
            continue
        return found, OpenedObject(fd, found.size)
    raise NotFoundError(f"No object {key[:200]!r} in {bucket.namespace}/{bucket.name}")
