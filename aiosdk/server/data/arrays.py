"""The bytes of array nodes: zarr v3 arrays in the server's :class:`~.store.BlobStore`.

An array node's data is a zarr v3 array at ``arrays/<node id>/``: chunks of the node's
``chunks``, the ``bytes`` codec (little-endian) and nothing else, chunk keys ``c/i/j`` (zarr's
default encoding). The node's structure in the database is the source of truth: the array's
``zarr.json`` is written (for zarr itself to read the directory) on the first write and on every
extension, and the server builds the array's metadata from the node, never from the store.
Unwritten chunks read as the fill value.

With no compression, a stored chunk's bytes are the block's bytes, so the server cuts and
pastes chunks itself (numpy copies in a worker thread) rather than through zarr's array, whose
copies run in the event loop: an interior block is served as its chunk's file as mapped, without
a copy; an edge block (smaller than the chunks: zarr stores it padded) is cut out of it. A
selection (:class:`SelectionRead`) is read slab by slab in C order, each slab (at most
:data:`SLAB_BYTES`, along chunk boundaries where it can) pasted from the chunks it touches, or
served as a span of one mapped chunk when it is one; only one slab is in memory at a time.

Blocks are written a whole chunk at a time (the store replaces a file atomically and durably:
see :class:`~.store.DurableLocalStore`), so writers of different blocks never touch each other's
files; an edge block keeps the rest of its stored chunk (what an extension wrote past an edge
its writer read before the extension). A region (``patch``) is written chunk by chunk over the
whole block grid (no edge chunk is taken for a whole one). Writes of one array take turns, in
this process and across processes sharing the directory (:meth:`ArrayData.writing`). ETags name
the node and its structure as well as the versions of the chunks read. Every file access runs in
a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import json
import math
import os
import warnings
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from zarr.codecs import BytesCodec
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.dtype import parse_dtype
from zarr.errors import UnstableSpecificationWarning

from ..._core.chunking import chunk_runs
from ..._core.concurrency import to_the_end
from ..catalog.nodes import InvalidContentError
from ..errors import AnswerCutShort, InvalidRequestError
from .store import BlobStore, file_version, map_file
from .structures import ArrayStructure

__all__ = [
    "SLAB_BYTES",
    "ArrayData",
    "Block",
    "ChunksChangedError",
    "Selection",
    "SelectionRead",
    "as_bytes",
    "normalise_selection",
]

Selection = tuple[int | slice, ...]
"""A basic numpy index: one int or slice per leading axis (the rest are whole)."""

Index = tuple[int, ...]

_METADATA_KEY = "zarr.json"
_LOCK_KEY = ".lock"
"""The file whose ``flock`` the writers of an array take turns on, across processes."""

SLAB_BYTES = 16 * 1024 * 1024
"""The most bytes of a selection pasted (held in memory) at a time."""
_LEAST_SLAB_BYTES = 1024 * 1024
"""Rows of chunks smaller than this are joined into one slab (fewer trips to a worker)."""


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


class ChunksChangedError(AnswerCutShort):
    """A chunk of a selection changed while the selection was being sent: the answer, whose
    ETag named the chunks as they were, is cut short (a resume with that tag gets it whole)."""


def _versions(paths: Sequence[Path]) -> list[str | None]:
    found: list[str | None] = []
    for path in paths:
        try:
            found.append(file_version(path.stat()))
        except (FileNotFoundError, NotADirectoryError):
            found.append(None)
    return found


def _digest(versions: Sequence[str | None]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for version in versions:
        digest.update(f"{version or '-'};".encode())
    return digest.hexdigest()


def _try_lock_file(path: Path) -> int | None:
    """An open descriptor of ``path`` (made if missing) holding its exclusive ``flock``, or
    ``None`` if another holds it (never waits: see :meth:`ArrayData.writing`)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


_LOCK_POLL_SECONDS = (0.002, 0.05)
"""How long a write waits between tries of a lock another process holds: first, at most."""


_CHUNK_WRITES_AT_ONCE = 4
"""How many chunks of a region are written at once (each flushed to disk on its own)."""
_MAX_TAGGED_CHUNKS = 100_000
"""A selection touching more chunks than this is answered without an ETag (no resuming)."""

_patching: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
"""The writers of each array in this process take turns on this lock before the file lock
(so that one worker thread at most per array waits on the file lock)."""


# --- the chunks a selection touches ------------------------------------------------------------


def _axis_runs(item: slice, chunk: int) -> Iterator[tuple[int, int, int]]:
    """For a normal slice (steps > 0) along an axis of chunks of ``chunk``: each chunk it picks
    elements of, as (chunk index, first position, end position) of those elements among the
    slice's."""
    return chunk_runs(item.start, item.step, len(range(item.start, item.stop, item.step)), chunk)


def _axis_runs_back(item: slice, chunk: int) -> Iterator[tuple[int, int, int]]:
    """:func:`_axis_runs`, from the last chunk to the first."""
    position = len(range(item.start, item.stop, item.step))
    while position > 0:
        index = (item.start + (position - 1) * item.step) // chunk
        first = max(0, -(-(index * chunk - item.start) // item.step))
        yield index, first, position
        position = first


Piece = tuple[Index, tuple[int | slice, ...], tuple[slice, ...]]
"""One chunk's part of a selection: the chunk's index, what to take of the chunk, and where
it goes in the selection's result (its kept axes only)."""


def _pieces(selection: Selection, chunks: tuple[int, ...]) -> list[Piece]:
    """The chunks a normal ``selection`` (one item per axis, steps > 0) touches, each with what
    of it goes where (see :data:`Piece`)."""
    axes: list[list[tuple[int, int | slice, slice | None]]] = []
    for item, chunk in zip(selection, chunks, strict=True):
        if isinstance(item, int):
            axes.append([(item // chunk, item % chunk, None)])
            continue
        step = item.step
        axes.append(
            [
                (
                    index,
                    slice(
                        item.start + first * step - index * chunk,
                        item.start + (end - 1) * step - index * chunk + 1,
                        step,
                    ),
                    slice(first, end),
                )
                for index, first, end in _axis_runs(item, chunk)
            ]
        )
    return [
        (
            tuple(part[0] for part in combination),
            tuple(part[1] for part in combination),
            tuple(part[2] for part in combination if part[2] is not None),
        )
        for combination in itertools.product(*axes)
    ]


def _span(
    local: tuple[int | slice, ...], flipped: Sequence[bool], chunks: tuple[int, ...], itemsize: int
) -> slice | None:
    """The bytes of a stored chunk that ``local`` of it is, in C order (reversed along the axes
    ``flipped`` says), when they are one contiguous span of the chunk; else ``None``."""
    starts: list[int] = []
    counts: list[int] = []
    for item, flip in zip(local, flipped, strict=True):
        if isinstance(item, int):
            starts.append(item)
            counts.append(1)
            continue
        count = len(range(item.start, item.stop, item.step))
        if count > 1 and (item.step != 1 or flip):
            return None
        starts.append(item.start)
        counts.append(count)
    spread = False  # (past the first axis of more than one element, every axis is whole)
    for count, chunk in zip(counts, chunks, strict=True):
        if spread and count != chunk:
            return None
        spread = spread or count > 1
    offset = 0
    for start, chunk in zip(starts, chunks, strict=True):
        offset = offset * chunk + start
    return slice(offset * itemsize, (offset + math.prod(counts)) * itemsize)


def _paste(
    structure: ArrayStructure,
    pieces: Sequence[Piece],
    chunks: Mapping[Index, memoryview | None],
    shape: tuple[int, ...],
    flip: tuple[slice, ...],
) -> memoryview:
    """The C-order bytes of a selection of ``shape`` made of ``pieces`` of the stored
    ``chunks`` (``None``: unwritten, the fill value), reversed along ``flip`` (blocking)."""
    out = np.empty(shape, structure.dtype)
    # (a view, 0-d too: the pieces go where the normal selection puts them)
    target = out[flip] if flip else out[...]
    for index, local, where in pieces:
        data = chunks[index]
        if data is None:
            target[where] = structure.fill
        else:
            whole = np.frombuffer(data, structure.dtype).reshape(structure.chunks)
            target[where] = whole[local]
    return as_bytes(out)


@dataclass(frozen=True)
class _Slab:
    offset: int
    nbytes: int
    selection: Selection
    shape: tuple[int, ...]
    flip: tuple[slice, ...]


class SelectionRead:
    """A selection of an array, ready to be read: its shape, its size in bytes and its ETag
    known before any chunk is read, its bytes in C order read a slab at a time
    (:meth:`pieces`)."""

    def __init__(
        self,
        data: ArrayData,
        normal: Selection,
        flipped: tuple[bool, ...],
        versions: dict[Index, str | None] | None,
        etag: str | None,
    ) -> None:
        self._data = data
        self._normal = normal
        self._flipped = flipped
        self._versions = versions
        self.etag = etag
        """The tag of the chunks as they were before the read (``None``: too many to tag, or
        the store is no directory); every chunk read is checked to be the version tagged."""
        self._kept = [item for item in normal if isinstance(item, slice)]
        self.shape = tuple(len(range(s.start, s.stop, s.step)) for s in self._kept)
        """The selection's shape (numpy's answer's)."""
        self.nbytes = math.prod(self.shape) * data.structure.dtype.itemsize
        """The size of its bytes."""
        self._flip = tuple(slice(None, None, -1) if f else slice(None) for f in flipped)
        kept = iter(flipped)
        self._axis_flipped = [isinstance(item, slice) and next(kept) for item in normal]
        self._mapped: dict[Index, memoryview | None] = {}
        """The chunks the last slab read from files (mapped, checked): slabs thinner than a
        chunk share them, and are served without mapping the files again."""

    def _slabs(self) -> Iterator[_Slab]:
        """The slabs of the selection in C order: whole along every kept axis after the first
        ``k`` (the first at which the rest fits in :data:`SLAB_BYTES`), one position along each
        before it, a run of positions along axis ``k`` (runs of whole chunks when they fit)."""
        structure = self._data.structure
        shape, itemsize = self.shape, structure.dtype.itemsize
        if self.nbytes == 0:
            return
        kept_axes = [axis for axis, item in enumerate(self._normal) if isinstance(item, slice)]
        if not kept_axes:
            yield _Slab(0, itemsize, self._normal, (), ())
            return
        k = next(
            (j for j in range(len(shape)) if math.prod(shape[j + 1 :]) * itemsize <= SLAB_BYTES),
            len(shape) - 1,  # (one element is more than a slab: a slab per element)
        )
        row_bytes = math.prod(shape[k + 1 :]) * itemsize
        most = max(1, SLAB_BYTES // row_bytes)
        least = min(most, -(-_LEAST_SLAB_BYTES // row_bytes))
        offset = 0
        for prefix in itertools.product(*(range(n) for n in shape[:k])):
            selection = list(self._normal)
            for j, position in enumerate(prefix):
                selection[kept_axes[j]] = self._element(j, position)
            for first, end in self._rows(kept_axes[k], shape[k], least, most):
                selection[kept_axes[k]] = self._run(k, first, end)
                nbytes = (end - first) * row_bytes
                slab_shape = (end - first, *shape[k + 1 :])
                yield _Slab(offset, nbytes, tuple(selection), slab_shape, self._flip[k:])
                offset += nbytes

    def _element(self, j: int, position: int) -> int:
        """The array index of ``position`` along the ``j``-th kept axis of the result."""
        item, count = self._kept[j], self.shape[j]
        if self._flipped[j]:
            position = count - 1 - position
        return int(item.start + position * item.step)

    def _run(self, j: int, first: int, end: int) -> slice:
        """The normal slice of positions ``first`` to ``end`` along the ``j``-th kept axis."""
        item, count = self._kept[j], self.shape[j]
        if self._flipped[j]:
            first, end = count - end, count - first
        return slice(item.start + first * item.step, item.start + (end - 1) * item.step + 1,
                     item.step)  # fmt: skip

    def _rows(self, axis: int, count: int, least: int, most: int) -> Iterator[tuple[int, int]]:
        """Runs of positions along the result's axis of the array's ``axis`` (``count`` of
        them): each one row of chunks (so that a run inside one chunk is served as mapped),
        rows of chunks joined up to ``least`` positions, and cut at ``most``."""
        j = sum(1 for a in range(axis) if isinstance(self._normal[a], slice))
        item, chunk = self._kept[j], self._data.structure.chunks[axis]
        if self._flipped[j]:
            runs = ((count - end, count - first) for _, first, end in _axis_runs_back(item, chunk))
        else:
            runs = ((first, end) for _, first, end in _axis_runs(item, chunk))
        start = 0
        for first, end in runs:
            if first - start >= least:
                yield start, first
                start = first
            while end - start > most:
                cut = first if first > start else start + most
                yield start, cut
                start = cut
        if start < count:
            yield start, count

    async def pieces(
        self, start: int = 0, stop: int | None = None, *, checked: bool = True
    ) -> AsyncIterator[memoryview]:
        """Bytes ``start`` to ``stop`` of the selection, a slab (or a part of one) at a time;
        :class:`ChunksChangedError` if a chunk is not the version the ETag names (unless not
        ``checked``: the bytes as they are, for an answer without the ETag)."""
        stop = self.nbytes if stop is None else stop
        for slab in self._slabs():
            if slab.offset + slab.nbytes <= start:
                continue
            if slab.offset >= stop:
                break
            body = await self._slab(slab, checked)
            yield body[max(start - slab.offset, 0) : min(stop - slab.offset, slab.nbytes)]

    async def whole(self) -> np.ndarray[Any, Any]:
        """The selection as one C-contiguous array, as its chunks are as they are read (not
        checked against the ETag)."""
        out = np.empty(self.shape, self._data.structure.dtype)
        flat = as_bytes(out)
        position = 0
        async for piece in self.pieces(checked=False):
            end = position + len(piece)
            await anyio.to_thread.run_sync(flat.__setitem__, slice(position, end), piece)
            position = end
        return out

    async def _slab(self, slab: _Slab, checked: bool) -> memoryview:
        data = self._data
        structure = data.structure
        if data.blobs.root is not None:
            return await anyio.to_thread.run_sync(self._local_slab, data.blobs.root, slab, checked)
        pieces = await anyio.to_thread.run_sync(_pieces, slab.selection, structure.chunks)
        chunks = {index: await data._stored_chunk(index) for index, _, _ in pieces}
        return await anyio.to_thread.run_sync(
            _paste, structure, pieces, chunks, slab.shape, slab.flip
        )

    def _local_slab(self, root: Path, slab: _Slab, checked: bool) -> memoryview:
        """The bytes of ``slab``, from the chunks' files (blocking)."""
        data = self._data
        structure = data.structure
        pieces = _pieces(slab.selection, structure.chunks)
        chunks: dict[Index, memoryview | None] = {}
        for index, _, _ in pieces:
            if index in self._mapped:
                chunks[index] = self._mapped[index]
                continue
            found = map_file(root / data._chunk_key(index))
            version = None if found is None else found[1]
            if checked and self._versions is not None and version != self._versions.get(index):
                raise ChunksChangedError(
                    f"The chunk {data._chunk_key(index)!r} changed while it was being read"
                )
            chunks[index] = None if found is None else found[0]
            if found is not None:
                data._check_chunk(index, found[0])
        self._mapped = chunks
        if len(pieces) == 1:
            index, local, _ = pieces[0]
            mapped = chunks[index]
            span = _span(local, self._axis_flipped, structure.chunks, structure.dtype.itemsize)
            if mapped is not None and span is not None:
                return mapped[span]
        return _paste(structure, pieces, chunks, slab.shape, slab.flip)


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

    def _chunk_key(self, index: Index) -> str:
        return "/".join([self.prefix, "c", *map(str, index)])

    def _metadata(self) -> ArrayV3Metadata:
        structure = self.structure
        with warnings.catch_warnings():  # S<n> and U<n> have no zarr v3 specification yet
            warnings.simplefilter("ignore", UnstableSpecificationWarning)
            return ArrayV3Metadata(
                shape=structure.shape,
                data_type=parse_dtype(structure.dtype, zarr_format=3),
                chunk_grid={"name": "regular", "configuration": {"chunk_shape": structure.chunks}},
                chunk_key_encoding={"name": "default", "configuration": {"separator": "/"}},
                fill_value=structure.fill,
                codecs=(BytesCodec(endian="little" if structure.dtype.itemsize > 1 else None),),
                attributes={},
                dimension_names=structure.dims,
            )

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Hold the array's write turn: one write (of a block or a region) at a time per
        array, across the processes sharing the store's directory (an ``flock`` on the array's
        lock file, tried in worker threads until had) and within this one (:data:`_patching`). A
        write of a part of a chunk reads, changes and writes back the whole chunk: two at once
        would lose one."""
        lock = _patching.get(self.node_id)
        if lock is None:
            lock = _patching[self.node_id] = asyncio.Lock()
        async with lock:
            path = self.blobs.local_path(f"{self.prefix}/{_LOCK_KEY}")
            if path is None:  # (a store in memory: this process's alone)
                yield
                return
            # Tries that never wait, each run to its end even if asyncio's own Task.cancel()
            # comes (it goes through anyio's shields): a descriptor got by the thread and
            # dropped would hold the flock forever; a cancelled write stops between tries.
            pause, longest = _LOCK_POLL_SECONDS
            while True:
                descriptor = await to_the_end(
                    lambda: anyio.to_thread.run_sync(_try_lock_file, path)
                )
                if descriptor is not None:
                    break
                await anyio.sleep(pause)
                pause = min(pause * 2, longest)
            try:
                yield
            finally:
                os.close(descriptor)  # (releases the flock; a close never waits)

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

    async def _chunk(self, index: Index) -> tuple[memoryview, str] | None:
        """The stored chunk at ``index`` and its tag, or ``None`` if it was never written."""
        key = self._chunk_key(index)
        path = self.blobs.local_path(key)
        if path is not None:
            found = await anyio.to_thread.run_sync(map_file, path)
            return None if found is None else (found[0], f'"{found[1]}"')
        buffer = await self.blobs.store.get(key, default_buffer_prototype())
        if buffer is None:
            return None
        data: memoryview = buffer.as_numpy_array().data
        tag = await anyio.to_thread.run_sync(
            lambda: hashlib.blake2b(data, digest_size=16).hexdigest()
        )
        return data, f'"{tag}"'

    def _check_chunk(self, index: Index, data: memoryview) -> None:
        if len(data) != self.structure.chunk_nbytes:
            raise RuntimeError(
                f"The chunk {self._chunk_key(index)!r} is {len(data)} bytes, not"
                f" {self.structure.chunk_nbytes}: the store is damaged"
            )

    async def _stored_chunk(self, index: Index) -> memoryview | None:
        """The stored chunk's bytes at ``index`` (checked), or ``None`` if never written."""
        found = await self._chunk(index)
        if found is None:
            return None
        self._check_chunk(index, found[0])
        return found[0]

    async def read_block(self, index: Index) -> Block:
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

    async def write_block(self, index: Index, body: bytes | bytearray | memoryview) -> None:
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
        values = np.frombuffer(body, structure.dtype).reshape(shape)
        edge = tuple(slice(0, length) for length in shape)
        async with self.writing():
            await self.save_metadata()
            # An edge block keeps the rest of its chunk as stored: past a stale edge, a
            # concurrent extension may have written it.
            await self._write_chunk(index, edge, values, whole=shape == structure.chunks)

    async def _write_chunk(
        self,
        index: Index,
        local: tuple[int | slice, ...],
        values: np.ndarray[Any, Any],
        *,
        whole: bool,
    ) -> None:
        """Write ``values`` at ``local`` of the chunk at ``index``: the chunk made of them if
        they are ``whole`` (all of it), else the stored chunk (or the fill value) changed
        there. The caller holds the write turn (:meth:`writing`)."""
        structure = self.structure
        existing = None if whole else await self._stored_chunk(index)

        def chunk() -> memoryview:
            if whole:
                return as_bytes(values)
            if existing is None:
                out = np.full(structure.chunks, structure.fill, structure.dtype)
            else:
                out = np.frombuffer(existing, structure.dtype).reshape(structure.chunks).copy()
            out[local] = values
            return as_bytes(out)

        body = await anyio.to_thread.run_sync(chunk)
        buffer: Buffer = default_buffer_prototype().buffer.from_bytes(body)
        await self.blobs.store.set(self._chunk_key(index), buffer)

    # --- selections and regions --------------------------------------------------------------

    def _touched(self, selection: Selection) -> list[Index] | None:
        """The chunks ``selection`` (normalised, steps > 0) reads from (those a step skips
        are not), at most :data:`_MAX_TAGGED_CHUNKS` of them (``None`` past that)."""
        per_axis: list[list[int]] = []
        for item, chunk in zip(selection, self.structure.chunks, strict=True):
            if isinstance(item, int):
                per_axis.append([item // chunk])
                continue
            runs = _axis_runs(item, chunk)
            indexes = [index for index, _, _ in itertools.islice(runs, _MAX_TAGGED_CHUNKS + 1)]
            if not indexes:
                return []
            per_axis.append(indexes)
        if math.prod(len(indexes) for indexes in per_axis) > _MAX_TAGGED_CHUNKS:
            return None
        return list(itertools.product(*per_axis))

    async def selection(self, selection: Selection) -> SelectionRead:
        """The part of the array ``selection`` picks (numpy's basic indexing: negative
        indices and steps too; see :func:`normalise_selection`), to be read: its shape, size
        and ETag are known at once, without reading a chunk (only their files' versions)."""
        normal, flipped = normalise_selection(selection, self.structure.shape)
        root = self.blobs.root
        touched = None if root is None else self._touched(normal)
        if root is None or touched is None:
            return SelectionRead(self, normal, flipped, None, None)
        paths = [root / self._chunk_key(index) for index in touched]
        versions = await anyio.to_thread.run_sync(_versions, paths)
        etag = self._tag("selection", repr((normal, flipped)), _digest(versions))
        return SelectionRead(self, normal, flipped, dict(zip(touched, versions, strict=True)), etag)

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
        region = tuple(slice(o, o + n, 1) for o, n in zip(offset, shape, strict=True))
        async with self.writing():
            await self.save_metadata()
            if not values.size:
                return
            pieces = await anyio.to_thread.run_sync(_pieces, region, structure.chunks)
            turns = anyio.Semaphore(_CHUNK_WRITES_AT_ONCE)

            async def write(index: Index, local: tuple[int | slice, ...], part: Any) -> None:
                try:
                    # (over the whole block grid: an edge chunk is written whole, as stored)
                    covered = all(
                        isinstance(item, slice) and item.stop - item.start == chunk
                        for item, chunk in zip(local, structure.chunks, strict=True)
                    )
                    await self._write_chunk(index, local, part, whole=covered)
                finally:
                    turns.release()

            async with anyio.create_task_group() as group:
                for index, local, where in pieces:
                    await turns.acquire()
                    group.start_soon(write, index, local, values[where])


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
