"""The bytes of array nodes: zarr v3 arrays in the server's :class:`~.store.BlobStore`.

An array node's data is a zarr v3 array at ``arrays/<node id>/``: chunks of the node's
``chunks``, the ``bytes`` codec (little-endian) and nothing else, chunk keys ``c/i/j`` (zarr's
default encoding). The node's structure in the database is the source of truth: the array's
``zarr.json`` is written (for zarr itself to read the directory) on the first write and on every
extension, and the server builds the array's metadata from the node, never from the store.
Unwritten chunks read as the fill value.

With no compression, a stored chunk's bytes are the block's bytes: an interior block is served
as its chunk's file as read, without decoding; an edge block (smaller than the chunks: zarr
stores it padded) is cut out of it. Blocks are written the same way, a whole chunk at a time
(the store replaces a file atomically and durably: see :class:`~.store.DurableLocalStore`), so
writers of different blocks never touch each other's files; an edge block keeps the rest of its
stored chunk (what an extension wrote past an edge its writer read before the extension). Reads
of a selection and writes of a region (``patch``) go through zarr's own asynchronous array, for
writes shaped as the whole block grid (no edge chunk is taken for a whole one). Writes of one
node in this process take turns (:data:`_patching`). ETags name the node and its structure as
well as the chunks read. Every file access runs in a worker thread, as do the copies that cut
and pad blocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import mmap
import os
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from zarr.codecs import BytesCodec
from zarr.core.array import AsyncArray
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.dtype import parse_dtype
from zarr.errors import UnstableSpecificationWarning
from zarr.storage import StorePath

from ..catalog.nodes import InvalidContentError
from ..errors import InvalidRequestError
from .store import BlobStore
from .structures import ArrayStructure

__all__ = ["ArrayData", "Block", "Selection", "as_bytes", "normalise_selection"]

Selection = tuple[int | slice, ...]
"""A basic numpy index: one int or slice per leading axis (the rest are whole)."""

_METADATA_KEY = "zarr.json"


def as_bytes(array: np.ndarray[Any, Any]) -> memoryview:
    """The bytes of ``array`` (C order, little-endian as stored) as a flat memoryview, without
    a copy when ``array`` is C-contiguous already."""
    contiguous = np.ascontiguousarray(array)
    flat: memoryview = contiguous.reshape(-1).view(np.uint8).data
    return flat


@dataclass(frozen=True)
class Block:
    """A block as served: its bytes, its true shape and a tag of its stored chunk."""

    body: memoryview
    shape: tuple[int, ...]
    etag: str


def _read_file(path: Path) -> tuple[memoryview, str] | None:
    """The file's bytes (mapped, not copied: measured cheaper to serve than a read into fresh
    memory) and a tag of this version of it (size, mtime, inode: a chunk is replaced by a
    rename, so every write makes a new inode, and a mapping keeps the version it mapped), or
    ``None`` if there is none."""
    try:
        file = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return None
    with file:
        stat = os.fstat(file.fileno())
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    return memoryview(mapped), f'"{stat.st_size:x}-{stat.st_mtime_ns:x}-{stat.st_ino:x}"'


def _stat_tag(paths: Sequence[Path]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            digest.update(b"-;")
        else:
            digest.update(f"{stat.st_size:x}-{stat.st_mtime_ns:x}-{stat.st_ino:x};".encode())
    return digest.hexdigest()


_MAX_TAGGED_CHUNKS = 100_000
"""A selection touching more chunks than this is answered without an ETag (no resuming)."""

_patching: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
"""One write (of a block or a region) at a time per array in this process: zarr reads, changes
and writes back the chunks a region covers in part, as an edge block's write does its chunk, and
two such writes of one chunk would lose one."""


class ArrayData:
    """The bytes of one array node, as its structure says they are."""

    def __init__(self, blobs: BlobStore, node_id: str, structure: ArrayStructure) -> None:
        self.blobs = blobs
        self.node_id = node_id
        self.structure = structure
        self.prefix = BlobStore.prefix("array", node_id)

    def _tag(self, *parts: str) -> str:
        """An ETag of ``parts`` for this node as its structure is (two nodes, or a node before
        and after a change of its shape, never share one)."""
        digest = hashlib.blake2b(digest_size=16)
        identity = [self.node_id, json.dumps(self.structure.to_json(), sort_keys=True), *parts]
        for part in identity:
            digest.update(f"{len(part)}:{part};".encode())
        return f'"{digest.hexdigest()}"'

    def _unwritten_tag(self, shape: tuple[int, ...]) -> str:
        return self._tag("unwritten", ",".join(map(str, shape)))

    def _chunk_key(self, index: tuple[int, ...]) -> str:
        return "/".join([self.prefix, "c", *map(str, index)])

    def _metadata(self, shape: tuple[int, ...] | None = None) -> ArrayV3Metadata:
        structure = self.structure
        with warnings.catch_warnings():  # S<n> and U<n> have no zarr v3 specification yet
            warnings.simplefilter("ignore", UnstableSpecificationWarning)
            return ArrayV3Metadata(
                shape=structure.shape if shape is None else shape,
                data_type=parse_dtype(structure.dtype, zarr_format=3),
                chunk_grid={"name": "regular", "configuration": {"chunk_shape": structure.chunks}},
                chunk_key_encoding={"name": "default", "configuration": {"separator": "/"}},
                fill_value=structure.fill,
                codecs=(BytesCodec(endian="little" if structure.dtype.itemsize > 1 else None),),
                attributes={},
                dimension_names=structure.dims,
            )

    def _zarr(self, *, writing: bool = False) -> AsyncArray[ArrayV3Metadata]:
        """zarr's array of the node; ``writing``: shaped as its whole block grid (``grid x
        chunks``), so that zarr takes no edge chunk a region covers to its (maybe stale) edge
        for a whole one, and keeps what a concurrent extension wrote past that edge."""
        structure = self.structure
        shape = None
        if writing:
            shape = tuple(g * c for g, c in zip(structure.grid, structure.chunks, strict=True))
        return AsyncArray(
            metadata=self._metadata(shape), store_path=StorePath(self.blobs.store, self.prefix)
        )

    def _lock(self) -> asyncio.Lock:
        """The node's write lock in this process (see :data:`_patching`)."""
        lock = _patching.get(self.node_id)
        if lock is None:
            lock = _patching[self.node_id] = asyncio.Lock()
        return lock

    async def save_metadata(self, *, always: bool = False) -> None:
        """Write the array's ``zarr.json`` (when missing, or ``always``: its shape changed)."""
        store = self.blobs.store
        key = f"{self.prefix}/{_METADATA_KEY}"
        if not always and await store.exists(key):
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnstableSpecificationWarning)
            document = self._metadata().to_buffer_dict(default_buffer_prototype())[_METADATA_KEY]
        await store.set(key, document)

    # --- blocks ------------------------------------------------------------------------------

    async def _chunk(self, index: tuple[int, ...]) -> tuple[memoryview, str] | None:
        """The stored chunk at ``index`` and its tag, or ``None`` if it was never written."""
        key = self._chunk_key(index)
        path = self.blobs.local_path(key)
        if path is not None:
            return await anyio.to_thread.run_sync(_read_file, path)
        buffer = await self.blobs.store.get(key, default_buffer_prototype())
        if buffer is None:
            return None
        data: memoryview = buffer.as_numpy_array().data
        tag = await anyio.to_thread.run_sync(
            lambda: hashlib.blake2b(data, digest_size=16).hexdigest()
        )
        return data, f'"{tag}"'

    def _check_chunk(self, index: tuple[int, ...], data: memoryview) -> None:
        if len(data) != self.structure.chunk_nbytes:
            raise RuntimeError(
                f"The chunk {self._chunk_key(index)!r} is {len(data)} bytes, not"
                f" {self.structure.chunk_nbytes}: the store is damaged"
            )

    async def _stored_chunk(self, index: tuple[int, ...]) -> memoryview | None:
        """The stored chunk's bytes at ``index`` (checked), or ``None`` if never written."""
        found = await self._chunk(index)
        if found is None:
            return None
        self._check_chunk(index, found[0])
        return found[0]

    async def read_block(self, index: tuple[int, ...]) -> Block:
        """The block at ``index`` (its true shape: edge blocks are smaller than the chunks)."""
        structure = self.structure
        structure.check_block(index)
        shape = structure.block_shape(index)
        found = await self._chunk(index)
        if found is None:
            body = await anyio.to_thread.run_sync(
                lambda: as_bytes(np.full(shape, structure.fill, structure.dtype))
            )
            return Block(body, shape, self._unwritten_tag(shape))
        data, etag = found
        self._check_chunk(index, data)
        etag = self._tag("chunk", ",".join(map(str, index)), etag)
        if shape == structure.chunks:
            return Block(data, shape, etag)
        edge = tuple(slice(0, length) for length in shape)

        def cut() -> memoryview:
            whole = np.frombuffer(data, structure.dtype).reshape(structure.chunks)
            return as_bytes(whole[edge])

        return Block(await anyio.to_thread.run_sync(cut), shape, etag)

    async def write_block(
        self, index: tuple[int, ...], body: bytes | bytearray | memoryview
    ) -> None:
        """Replace the block at ``index`` with ``body``: exactly the bytes of its true shape
        (:class:`~..catalog.nodes.InvalidContentError` otherwise)."""
        structure = self.structure
        structure.check_block(index)
        shape = structure.block_shape(index)
        expected = structure.block_nbytes(index)
        if len(body) != expected:
            raise InvalidContentError(
                f"The block {','.join(map(str, index))!r} has the shape {list(shape)} of"
                f" {structure.dtype.str}: its body must be {expected:,} bytes, not {len(body):,}"
            )
        async with self._lock():
            chunk: bytes | bytearray | memoryview = body
            if shape != structure.chunks:
                # The rest of the chunk is kept as stored: past a stale edge, a concurrent
                # extension may have written it.
                existing = await self._stored_chunk(index)
                edge = tuple(slice(0, length) for length in shape)

                def pad() -> memoryview:
                    if existing is None:
                        whole = np.full(structure.chunks, structure.fill, structure.dtype)
                    else:
                        stored = np.frombuffer(existing, structure.dtype)
                        whole = stored.reshape(structure.chunks).copy()
                    whole[edge] = np.frombuffer(body, structure.dtype).reshape(shape)
                    return as_bytes(whole)

                chunk = await anyio.to_thread.run_sync(pad)
            await self.save_metadata()
            buffer: Buffer = default_buffer_prototype().buffer.from_bytes(chunk)
            await self.blobs.store.set(self._chunk_key(index), buffer)

    # --- selections and regions --------------------------------------------------------------

    def _touched(self, selection: Selection) -> list[tuple[int, ...]] | None:
        """The chunks ``selection`` (normalised, steps > 0) reads from, at most
        :data:`_MAX_TAGGED_CHUNKS` of them (``None`` past that)."""
        ranges: list[range] = []
        for item, chunk in zip(selection, self.structure.chunks, strict=True):
            if isinstance(item, int):
                ranges.append(range(item // chunk, item // chunk + 1))
            elif item.start >= item.stop:
                return []
            else:
                ranges.append(range(item.start // chunk, (item.stop - 1) // chunk + 1))
        if math.prod(len(r) for r in ranges) > _MAX_TAGGED_CHUNKS:
            return None
        return list(itertools.product(*ranges))

    async def _selection_tag(self, selection: Selection) -> str | None:
        if self.blobs.root is None:
            return None
        touched = self._touched(selection)
        if touched is None:
            return None
        paths = [self.blobs.root / self._chunk_key(index) for index in touched]
        return await anyio.to_thread.run_sync(_stat_tag, paths)

    async def read_selection(self, selection: Selection) -> tuple[np.ndarray[Any, Any], str | None]:
        """The part of the array ``selection`` picks (numpy's basic indexing: negative
        indices and steps too; see :func:`normalise_selection`), C-contiguous, and a tag of
        the chunks it was read from (``None`` when the chunks changed while they were read, or
        there are too many to tag)."""
        normal, flipped = normalise_selection(selection, self.structure.shape)
        before = await self._selection_tag(normal)
        values = await self._zarr().getitem(normal)
        array = np.asarray(values)
        if flipped or not array.flags.c_contiguous:
            flip = tuple(slice(None, None, -1) if f else slice(None) for f in flipped)
            array = await anyio.to_thread.run_sync(lambda: np.ascontiguousarray(array[flip]))
        after = await self._selection_tag(normal)
        tag = None
        if before is not None and before == after:
            tag = self._tag("selection", repr((normal, flipped)), before)
        return array, tag

    async def write_region(
        self, offset: tuple[int, ...], shape: tuple[int, ...], body: bytes | bytearray | memoryview
    ) -> None:
        """Write ``body`` (the bytes of ``shape``) at ``offset``, inside the array's shape."""
        structure = self.structure
        expected = math.prod(shape) * structure.dtype.itemsize
        if len(body) != expected:
            raise InvalidContentError(
                f"A region of the shape {list(shape)} of {structure.dtype.str} is"
                f" {expected:,} bytes; the body is {len(body):,}"
            )
        values = np.frombuffer(body, structure.dtype).reshape(shape)
        region = tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))
        async with self._lock():
            await self.save_metadata()
            if values.size:
                await self._zarr(writing=True).setitem(region, values)


def normalise_selection(
    selection: Selection, shape: tuple[int, ...]
) -> tuple[Selection, tuple[bool, ...]]:
    """``selection`` with every index made non-negative and every slice's bounds explicit and
    its step positive (one per axis), and which of the kept axes to reverse afterwards for the
    negative steps; :class:`~..errors.InvalidRequestError` for an index out of bounds."""
    if len(selection) > len(shape):
        raise InvalidRequestError(
            f"The selection has {len(selection)} indices; the array has {len(shape)} dimensions"
        )
    padded = (*selection, *(slice(None),) * (len(shape) - len(selection)))
    normal: list[int | slice] = []
    flipped: list[bool] = []
    for axis, (item, length) in enumerate(zip(padded, shape, strict=True)):
        if isinstance(item, int):
            index = item + length if item < 0 else item
            if not 0 <= index < length:
                raise InvalidRequestError(
                    f"The index {item} is out of bounds for axis {axis} of length {length}"
                )
            normal.append(index)
            continue
        start, stop, step = item.indices(length)
        count = len(range(start, stop, step))
        if step > 0:
            normal.append(slice(start, start + (count - 1) * step + 1 if count else start, step))
            flipped.append(False)
        else:
            # The same elements, walked forwards: from the last one picked to the first.
            first = start + (count - 1) * step if count else 0
            normal.append(slice(first, start + 1 if count else 0, -step))
            flipped.append(True)
    return tuple(normal), tuple(flipped)
