"""Where the server keeps the bytes of its data nodes: one zarr v3 store.

The store is zarr's own interface (:class:`zarr.abc.store.Store`), a directory by default
(``<data_dir>/blobs``, a :class:`DurableLocalStore`: zarr's :class:`~zarr.storage.LocalStore`
whose writes go to a temporary file flushed to disk and renamed into place, so a chunk is replaced
whole or not at all, and stays written once acknowledged), so that an object store
(zarr's ``FsspecStore`` or ``ObjectStore``) can take its place. Every data node's bytes live
under a prefix named for its family and its id, which never changes (moves and renames keep
the id): an array at ``arrays/<id>/``, a table at ``tables/<id>/``, a sparse array at
``sparse/<id>/``.
"""

from __future__ import annotations

import mmap
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import anyio
from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.storage import LocalStore, MemoryStore

__all__ = [
    "FAMILY_PREFIXES",
    "TEMPORARY_SUFFIX",
    "BlobStore",
    "DurableLocalStore",
    "file_version",
    "map_file",
    "write_file",
]

FAMILY_PREFIXES = {"array": "arrays", "table": "tables", "sparse": "sparse"}
"""The top-level prefix of each data family's nodes."""
TEMPORARY_SUFFIX = ".partial"
"""How the name of a file being written ends (renamed into place once whole)."""


class BlobStore:
    """The server's store of data bytes; ``root`` is its directory when it is a local one
    (which lets a reader look at a chunk's file directly: see :mod:`.arrays`)."""

    def __init__(self, store: Store, root: Path | None = None) -> None:
        self.store = store
        self.root = root

    @classmethod
    async def directory(cls, path: Path) -> BlobStore:
        """A store in the directory ``path`` (made if missing, its owner's alone)."""
        store = await anyio.to_thread.run_sync(_open_directory, path)
        return cls(store, path)

    @classmethod
    def in_memory(cls) -> BlobStore:
        """A store in memory (for a server state made without one)."""
        return cls(MemoryStore())

    @staticmethod
    def prefix(family: str, node_id: str) -> str:
        """Where the bytes of the node ``node_id`` of ``family`` live (no trailing slash)."""
        return f"{FAMILY_PREFIXES[family]}/{node_id}"

    def local_path(self, key: str) -> Path | None:
        """The file of ``key`` when the store is a directory, else ``None``."""
        return None if self.root is None else self.root / key

    async def get(self, key: str) -> memoryview | None:
        """The bytes stored at ``key``, or ``None``."""
        buffer = await self.store.get(key, default_buffer_prototype())
        return None if buffer is None else memoryview(buffer.as_buffer_like())

    async def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``key``, whole or not at all (in a directory: see
        :func:`write_file`, in a worker thread)."""
        path = self.local_path(key)
        if path is not None:
            await anyio.to_thread.run_sync(write_file, path, data)
            return
        await self.store.set(key, default_buffer_prototype().buffer.from_bytes(bytes(data)))

    async def remove(self, node_ids: Iterable[str]) -> None:
        """Remove the bytes of the nodes ``node_ids``, of whichever data family they are."""
        prefixes = [f"{p}/{node_id}" for node_id in node_ids for p in FAMILY_PREFIXES.values()]
        if self.root is None:
            for prefix in prefixes:
                await self.store.delete_dir(prefix)
            return
        root = self.root  # (LocalStore removes a directory in the event loop: not that)

        def remove_all() -> None:
            for prefix in prefixes:
                shutil.rmtree(root / prefix, ignore_errors=True)

        await anyio.to_thread.run_sync(remove_all)


class DurableLocalStore(LocalStore):
    """zarr's :class:`~zarr.storage.LocalStore` whose writes survive a crash once they
    return: every :meth:`set` goes through :func:`write_file` (flushed to disk, the rename
    and its directory too), in a worker thread."""

    async def set(self, key: str, value: Buffer) -> None:
        """Store ``value`` at ``key``, whole or not at all, durably."""
        if not self._is_open:
            await self._open()
        self._check_writable()
        await anyio.to_thread.run_sync(write_file, self.root / key, value.as_buffer_like())


def write_file(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` whole or not at all: to a temporary file beside it, flushed
    to disk, renamed into place (and the directory flushed, so the rename survives a crash)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}")
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _open_directory(path: Path) -> DurableLocalStore:
    """zarr's store in the directory ``path``, made if missing (its owner's alone), opened.

    Blocking: opening makes and looks at the directory, in the coroutine
    :meth:`LocalStore.open`, which awaits nothing else: it is run to its end here, in the
    calling (worker) thread, without an event loop of its own.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    opening = DurableLocalStore.open(path)
    try:
        opening.send(None)
    except StopIteration as done:
        store: DurableLocalStore = done.value
        return store
    opening.close()
    raise RuntimeError("zarr's LocalStore.open awaited something: open it in an event loop")


def file_version(stat: os.stat_result) -> str:
    """A tag of this version of a chunk's file (size, mtime, inode: a chunk is replaced by a
    rename, so every write makes a new inode, and a mapping keeps the version it mapped)."""
    return f"{stat.st_size:x}-{stat.st_mtime_ns:x}-{stat.st_ino:x}"


def map_file(path: Path) -> tuple[memoryview, str] | None:
    """The file's bytes (mapped, not copied: measured cheaper to serve than a read into fresh
    memory) and its :func:`file_version`, or ``None`` if there is none."""
    try:
        file = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return None
    with file:
        stat = os.fstat(file.fileno())
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    return memoryview(mapped), file_version(stat)
