"""Arrays: N-dimensional, chunked, read and written block by block, many blocks at once.

An array node's data is a grid of blocks (``chunks`` along each axis; edge blocks are smaller).
:meth:`AsyncArrayClient.read` works out which blocks a selection touches, fetches them
concurrently, and writes each one's body straight into one preallocated result: on asyncio the
socket reads a block whose place in the result is contiguous into that place itself (no copy of
the client's own); any other body goes in span by span as the transport reads it, never joined
or copied whole first. A block the selection only cuts (a part of it, or with a step) is
fetched as just that part (``/array/full?slice=``).
Writes send each block from the caller's array itself when its bytes lie contiguously in
memory, else from a copy of that block alone.

On the wire a block is its raw bytes, C order, little-endian; numpy is needed (the
``dataframe`` extra) and is imported when an array is first read or written.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

import anyio

from .._core.bulk import BufferSink
from .._core.chunking import chunk_runs
from .._core.compression import Compression, accept_encoding
from .._core.concurrency import Prefetch, check_concurrency, run_bounded
from .._core.downloads import download_to_file, file_suffix
from .._core.errors import ConfigurationError, ProtocolError
from .._core.optional import require
from .._core.progress import Progress, Tracker, check_progress, tracking
from .metadata import JSONObject
from .nodes import AsyncNode, call, route
from .tables import discard

if TYPE_CHECKING:
    import numpy
    import numpy.typing as npt

    from .containers import AsyncContainer

__all__ = [
    "AUTO_CHUNK_BYTES",
    "MAX_BLOCKS",
    "MAX_BLOCK_BYTES",
    "MAX_DIMS",
    "AsyncArrayClient",
    "auto_chunks",
    "check_dtype",
    "write_array",
]

MAX_DIMS = 32
"""The most dimensions an array may have."""
MAX_BLOCKS = 2**31
"""The most blocks an array may have."""
MAX_BLOCK_BYTES = 256 * 1024 * 1024
"""The largest a block may be (bytes)."""
AUTO_CHUNK_BYTES = 16 * 1024 * 1024
"""The size :func:`auto_chunks` aims at and never exceeds (unless one element is larger)."""

_OCTETS = "application/octet-stream"
_RAW = {"Accept": _OCTETS}  # raw bytes (the client's default Accept is JSON: an export)
_COPY_ON_LOOP = 1024 * 1024  # larger conversions (copies, casts, byte swaps) run in a thread

Selection = Any
"""A numpy basic index: an int, a slice, ``...``, or a tuple of those (``numpy.s_[10:20, ::2]``)."""


def _np() -> ModuleType:
    return require("numpy", "arrays")


# -- checks ----------------------------------------------------------------------------------


def check_dtype(dtype: object) -> numpy.dtype[Any]:
    """The little-endian ``numpy.dtype`` for ``dtype`` if arrays can hold it; else a
    :class:`~aiosdk.ConfigurationError`: bool, ints (1, 2, 4, 8 bytes), floats (2, 4, 8),
    complex (8, 16), ``datetime64``/``timedelta64`` with a unit, ``S<n>`` and ``U<n>`` (n ≥ 1)."""
    np = _np()
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ConfigurationError(f"not a dtype: {dtype!r} ({exc})") from exc
    kind, size = dt.kind, dt.itemsize
    supported = dt.fields is None and dt.subdtype is None
    if kind in "Mm":
        unit, count = np.datetime_data(dt)
        supported = supported and unit != "generic" and count == 1
    elif kind in "SU":
        supported = supported and size > 0
    else:
        sizes = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8), "c": (8, 16)}
        supported = supported and size in sizes.get(kind, ())
    if not supported:
        raise ConfigurationError(
            f"arrays cannot hold dtype {dt!s}: they hold bool, ints and unsigned ints (1, 2, 4,"
            " 8 bytes), floats (2, 4, 8), complex (8, 16), datetime64/timedelta64 with a unit"
            " (e.g. 'M8[ns]'), and fixed-width strings 'S<n>'/'U<n>'"
        )
    return dt.newbyteorder("<")  # type: ignore[no-any-return]


def _ints(value: object, what: str, ndim: int, minimum: int) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * ndim
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigurationError(f"{what} must be a sequence of {ndim} ints, not {value!r}")
    items = tuple(value)
    if len(items) != ndim or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= minimum for i in items
    ):
        raise ConfigurationError(
            f"{what} must be {ndim} int(s) ≥ {minimum} (one per axis), not {value!r}"
        )
    return items


def _grid(shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    return tuple(-(-n // c) for n, c in zip(shape, chunks, strict=True))


def _check_chunks(chunks: object, shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    checked = _ints(chunks, "chunks", len(shape), 1)
    block = math.prod(checked) * itemsize
    if block > MAX_BLOCK_BYTES:
        raise ConfigurationError(
            f"chunks {checked} make blocks of {block} bytes; at most {MAX_BLOCK_BYTES}"
        )
    blocks = math.prod(_grid(shape, checked))
    if blocks > MAX_BLOCKS:
        raise ConfigurationError(f"chunks {checked} make {blocks} blocks; at most {MAX_BLOCKS}")
    return checked


def _check_dims(dims: object, ndim: int) -> list[str] | None:
    if dims is None:
        return None
    if isinstance(dims, str | bytes) or not isinstance(dims, Sequence):
        raise ConfigurationError(f"dims must be a sequence of {ndim} names, not {dims!r}")
    names = list(dims)
    if len(names) != ndim or not all(isinstance(n, str) and n for n in names):
        raise ConfigurationError(f"dims must be {ndim} non-empty names (one per axis): {dims!r}")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"dims must be distinct: {dims!r}")
    return names


def auto_chunks(
    shape: Sequence[int], itemsize: int, limit: int = AUTO_CHUNK_BYTES
) -> tuple[int, ...]:
    """Chunks for an array of ``shape``: blocks of at most ``limit`` bytes (one element at least).

    Trailing axes are kept whole while they fit and the first one that does not is split into
    equal parts (the axes before it get 1), so that every block is one contiguous run of the
    array's C-order bytes: written straight from the caller's array and read straight into the
    result, one copy per span. (dask's ``"auto"`` aims at near-cubic blocks instead, which
    suits computations more than transfers.) A zero-length axis gets chunk 1.
    """
    chunks = [1] * len(shape)
    budget = max(1, limit // max(1, itemsize))  # elements per block
    for axis in reversed(range(len(shape))):
        n = max(1, shape[axis])
        if n <= budget:
            chunks[axis] = n
            budget //= n
            continue
        chunks[axis] = -(-n // -(-n // budget))  # the fewest parts of ≤ budget, made equal
        break
    return tuple(chunks)


# -- selections ------------------------------------------------------------------------------


def _normalize(selection: Selection, shape: tuple[int, ...]) -> list[int | range]:
    """Per axis, the index (an int: the axis is dropped) or the range of indices selected,
    with numpy's rules for negative values, steps and out-of-range bounds."""
    ndim = len(shape)
    if selection is None:
        return [range(n) for n in shape]
    items = selection if isinstance(selection, tuple) else (selection,)
    ellipses = sum(1 for item in items if item is Ellipsis)
    if ellipses > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if ellipses:
        at = next(i for i, item in enumerate(items) if item is Ellipsis)
        fill = (slice(None),) * (ndim - len(items) + 1)
        items = items[:at] + fill + items[at + 1 :]
    if len(items) > ndim:
        raise IndexError(
            f"too many indices for array: array is {ndim}-dimensional, but {len(items)} were"
            " indexed"
        )
    items = items + (slice(None),) * (ndim - len(items))
    axes: list[int | range] = []
    for axis, (item, n) in enumerate(zip(items, shape, strict=True)):
        if isinstance(item, slice):
            axes.append(range(*item.indices(n)))
            continue
        try:
            index = operator.index(_not_bool(item))
        except TypeError:
            raise ConfigurationError(
                "a selection is basic indexing only: ints, slices and '...' (no None/newaxis,"
                f" boolean or array indices), not {item!r}"
            ) from None
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of bounds for axis {axis} with size {n}")
        axes.append(index % n)
    return axes


def _not_bool(item: Any) -> Any:
    if isinstance(item, bool):  # numpy takes a bool as a mask, not as 0 or 1
        raise TypeError(item)
    return item


def _wire_axis(axis: int | range) -> str:
    if isinstance(axis, int):
        return str(axis)
    stop = "" if axis.stop < 0 else str(axis.stop)  # a range's stop below 0 is "to index 0"
    return f"{axis.start}:{stop}" if axis.step == 1 else f"{axis.start}:{stop}:{axis.step}"


def _wire_selection(axes: Sequence[int | range]) -> str:
    return ",".join(_wire_axis(axis) for axis in axes)


def _axis_pieces(axis: int | range, chunk: int) -> list[tuple[int, int | range, slice | None]]:
    """The blocks along one axis that a selection touches: ``(block, what of the selection
    falls in it, where that goes in the result)``; the result slice is ``None`` for an int."""
    if isinstance(axis, int):
        return [(axis // chunk, axis, None)]
    if axis.step < 0:
        forward = axis[::-1]
        size = len(axis)
        return [
            (block, part[::-1], slice(size - out.stop, size - out.start))
            for block, part, out in _forward_pieces(forward, chunk)
        ]
    return list(_forward_pieces(axis, chunk))


def _forward_pieces(axis: range, chunk: int) -> Iterator[tuple[int, range, slice]]:
    for block, first, end in chunk_runs(axis.start, axis.step, len(axis), chunk):
        yield block, axis[first:end], slice(first, end)


@dataclass(frozen=True)
class _Piece:
    """What one request fetches: a whole block, or the part of one that the selection takes."""

    block: tuple[int, ...]
    selection: tuple[int | range, ...]
    out: tuple[slice, ...]
    whole: bool


def _pieces(
    axes: Sequence[int | range], shape: tuple[int, ...], chunks: tuple[int, ...]
) -> Iterator[_Piece]:
    per_axis = [_axis_pieces(axis, chunk) for axis, chunk in zip(axes, chunks, strict=True)]
    for combination in itertools.product(*per_axis):
        block = tuple(b for b, _, _ in combination)
        selection = tuple(part for _, part, _ in combination)
        out = tuple(o for _, _, o in combination if o is not None)
        whole = all(
            isinstance(part, range)
            and part.step == 1
            and part.start == b * c
            and part.stop == min((b + 1) * c, n)
            for (b, part, _), c, n in zip(combination, chunks, shape, strict=True)
        )
        yield _Piece(block, selection, out, whole)


# -- writing bodies into the result ----------------------------------------------------------


class _Scatter(BufferSink):
    """A download sink that writes a body (C-order bytes) into ``dst``, a view of the result
    whose last axis is contiguous: one copy per span, no block-sized buffer. A ``dst`` that is
    contiguous as a whole (a block that spans whole trailing axes) is also the ``buffer`` the
    fast transport receives the body into, the socket writing there."""

    __slots__ = ("_flat", "_lead", "_rowbytes", "_rows", "_tracker", "buffer", "high", "nbytes")

    def __init__(self, dst: numpy.ndarray[Any, Any], tracker: Tracker) -> None:
        np = _np()
        self.nbytes = dst.nbytes
        self.high = 0
        self._tracker = tracker
        self.buffer: memoryview | None = None
        if dst.flags.c_contiguous:
            self._flat = dst.reshape(-1).view(np.uint8)
            self._rows = None
            self.buffer = memoryview(self._flat)
        else:
            self._rows = dst.view(np.uint8)  # last axis contiguous: rows of bytes
            self._rowbytes = self._rows.shape[-1]
            self._lead = self._rows.shape[:-1]

    def __call__(self, offset: int, span: bytes) -> None:
        np = _np()
        end = offset + len(span)
        if end > self.nbytes:
            raise ProtocolError(
                f"the server sent more than the {self.nbytes} bytes expected (did the array"
                " change? refresh() it)"
            )
        source = np.frombuffer(span, dtype=np.uint8)
        rows = self._rows
        if rows is None:
            self._flat[offset:end] = source
        else:
            self._scatter(rows, offset, source)
        self.filled(offset, len(span))

    def filled(self, offset: int, size: int) -> None:
        end = offset + size
        if end > self.high:  # a body received again from 0 counts once
            self._tracker.advance(end - self.high)
            self.high = end

    def _scatter(self, rows: Any, offset: int, source: Any) -> None:
        np = _np()
        rowbytes, lead = self._rowbytes, self._lead
        row, col = divmod(offset, rowbytes)
        i, n = 0, len(source)
        if col:
            take = min(rowbytes - col, n)
            rows[np.unravel_index(row, lead)][col : col + take] = source[:take]
            i, row = take, row + 1
        whole = (n - i) // rowbytes
        if whole:
            index = np.unravel_index(np.arange(row, row + whole), lead)
            rows[index] = source[i : i + whole * rowbytes].reshape(whole, rowbytes)
            i, row = i + whole * rowbytes, row + whole
        if i < n:
            rows[np.unravel_index(row, lead)][: n - i] = source[i:]


def _raw(array: numpy.ndarray[Any, Any]) -> memoryview:
    """The bytes of a C-contiguous array, without a copy (any dtype, 0-d too)."""
    return memoryview(array.reshape(-1).view(_np().uint8))


# -- the client ------------------------------------------------------------------------------


class AsyncArrayClient(AsyncNode):
    """An array node: its structure, and its data read and written block by block.

    ``shape``, ``dtype``, ``chunks``, ``ndim``, ``size``, ``nbytes`` and ``dims`` are the
    structure as it was read (:meth:`~AsyncNode.refresh` reads it again). Blocks are indexed by
    their position in the grid of chunks: block ``(3, 0)`` of chunks ``(256, 8192)`` holds rows
    768 to 1023. Unwritten blocks read as the array's fill value.
    """

    def _apply(self, item: Mapping[str, Any]) -> None:
        super()._apply(item)
        structure = item.get("structure")
        self._layout: tuple[tuple[int, ...], tuple[int, ...], str, tuple[str, ...] | None]
        self._layout_error: str | None = None
        if structure is None:
            self._layout_error = f"the array {self.path!r} has no structure"
            return
        try:
            shape = tuple(int(n) for n in structure["shape"])
            chunks = tuple(int(n) for n in structure["chunks"])
            data_type = str(structure["data_type"])
            dims = structure.get("dims")
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"unexpected array structure {structure!r}: {exc}") from exc
        if len(chunks) != len(shape):
            raise ProtocolError(f"unexpected array structure {structure!r}: chunks ≠ shape")
        self._layout = (shape, chunks, data_type, None if dims is None else tuple(dims))

    def _structure(self) -> tuple[tuple[int, ...], tuple[int, ...], str, tuple[str, ...] | None]:
        if self._layout_error is not None:
            raise ConfigurationError(self._layout_error)
        return self._layout

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return self._structure()[0]

    @property
    def chunks(self) -> tuple[int, ...]:
        """The shape of a block (edge blocks are smaller)."""
        return self._structure()[1]

    @property
    def dtype(self) -> numpy.dtype[Any]:
        """The array's dtype (little-endian, as stored)."""
        return _np().dtype(self._structure()[2])  # type: ignore[no-any-return]

    @property
    def dims(self) -> tuple[str, ...] | None:
        """The names of the axes, if it has them (``("time", "x")``)."""
        return self._structure()[3]

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """The size of the data in bytes."""
        return self.size * self.dtype.itemsize

    @property
    def blocks(self) -> tuple[int, ...]:
        """The number of blocks along each axis (0 along a zero-length axis)."""
        shape, chunks, _, _ = self._structure()
        return _grid(shape, chunks)

    def block_shape(self, block: Sequence[int]) -> tuple[int, ...]:
        """The shape of block ``block`` (smaller than ``chunks`` at the edges)."""
        shape, chunks, _, _ = self._structure()
        index = self._block_index(block)
        return tuple(min(c, n - i * c) for i, c, n in zip(index, chunks, shape, strict=True))

    def _block_index(self, block: object) -> tuple[int, ...]:
        grid = self.blocks
        if isinstance(block, int) and not isinstance(block, bool) and len(grid) == 1:
            block = (block,)
        if isinstance(block, str | bytes) or not isinstance(block, Sequence):
            raise ConfigurationError(f"a block index is a tuple of {len(grid)} ints: {block!r}")
        index = tuple(block)
        if len(index) != len(grid) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < g
            for i, g in zip(index, grid, strict=False)
        ):
            raise ConfigurationError(
                f"no block {block!r} in {self.path!r}: the grid of blocks is {grid}"
            )
        return index

    # -- reading -----------------------------------------------------------------------------

    async def read(
        self,
        slice: Selection = None,
        *,
        concurrency: int = 8,
        progress: Progress = None,
        compression: Compression = None,
    ) -> numpy.ndarray[Any, Any]:
        """The array, or the part of it that ``slice`` selects (numpy basic indexing:
        ``numpy.s_[10:20, ::2]``, ints, negative values, steps, ``...``; the answer is what
        numpy would give for ``array[slice]``, always a new array).

        The blocks the selection touches are fetched ``concurrency`` at a time (within the
        connection pool's limits) and each is written straight into the result as its bytes
        arrive. ``progress``: a callable ``(done_bytes, total_bytes)`` or ``True`` (a bar on a
        terminal). ``compression="zstd"`` lets the server send what compresses as zstd (the
        ``zstandard`` package decodes it; worth it on a slow network, for data that compresses:
        random floats come as they are). Cancelling the read cancels all its requests.
        """
        np = _np()
        check_concurrency(concurrency)
        check_progress(progress)
        headers = {**_RAW, **accept_encoding(compression)}
        shape, chunks, _, _ = self._structure()
        axes = _normalize(slice, shape)
        out_shape = tuple(len(a) for a in axes if isinstance(a, range))
        result: numpy.ndarray[Any, Any] = np.empty(out_shape, self.dtype)
        if result.size:
            async with tracking(progress, result.nbytes, f"read {self.path}") as tracker:

                async def fetch(piece: _Piece) -> None:
                    await self._fetch_into(result, piece, tracker, headers)

                await run_bounded(_pieces(axes, shape, chunks), fetch, concurrency)
        return result

    async def _fetch_into(
        self,
        result: numpy.ndarray[Any, Any],
        piece: _Piece,
        tracker: Tracker,
        headers: Mapping[str, str],
    ) -> None:
        dst = result[piece.out] if piece.out else result
        sink = _Scatter(dst, tracker)
        if piece.whole:
            path, params = route("/array/block", self.path), {"block": _csv(piece.block)}
        else:
            path, params = (
                route("/array/full", self.path),
                {"slice": _wire_selection(piece.selection)},
            )
        await self._ctx.download(
            "GET", path, params=params, headers=headers, sink=sink, expected_size=sink.nbytes
        )

    async def read_block(
        self, block: Sequence[int], *, slice: Selection = None, compression: Compression = None
    ) -> numpy.ndarray[Any, Any]:
        """Block ``block`` (its index in the grid of blocks: ``(3, 0)``), or the part of it that
        ``slice`` selects (numpy basic indexing, relative to the block); ``compression`` as
        :meth:`read` has it."""
        index = self._block_index(block)
        _, chunks, _, _ = self._structure()
        local = _normalize(slice, self.block_shape(index))
        axes = tuple(_shift(axis, i * c) for axis, i, c in zip(local, index, chunks, strict=True))
        return await self.read(axes, concurrency=1, compression=compression)

    def iter_blocks(
        self, *, concurrency: int = 8, compression: Compression = None
    ) -> AsyncIterator[tuple[tuple[int, ...], numpy.ndarray[Any, Any]]]:
        """``(block index, block)`` for every block, in C order of the index, fetched up to
        ``concurrency`` ahead: at most that many blocks in flight or waiting to be taken, so a
        slow consumer slows the fetching (back-pressure). Breaking out of the loop cancels the
        requests in flight. ``compression`` as :meth:`read` has it."""
        _np()
        check_concurrency(concurrency)
        accept_encoding(compression)  # (checked before any request)

        async def fetch(index: tuple[int, ...]) -> tuple[tuple[int, ...], Any]:
            return index, await self.read_block(index, compression=compression)

        keys = itertools.product(*(range(n) for n in self.blocks))
        return Prefetch(keys, fetch, concurrency)

    # -- writing -----------------------------------------------------------------------------

    async def write_block(self, array: npt.ArrayLike, block: Sequence[int]) -> None:
        """Write ``array`` as block ``block``: it must have that block's shape (smaller at the
        edges: :meth:`block_shape`) and a dtype that casts to the array's (same kind)."""
        index = self._block_index(block)
        data = await self._prepared(array, self.block_shape(index), f"block {index}")
        await self._put_block(index, data)

    async def _put_block(self, index: tuple[int, ...], data: numpy.ndarray[Any, Any]) -> None:
        # Without an Idempotency-Key: a block's PUT sets its bytes, so applying it twice is
        # applying it once, and a keyed one costs the server a buffered, fingerprinted body
        # and a stored answer (it halves the write rate).
        await call(
            self._ctx,
            "PUT",
            route("/array/block", self.path),
            params={"block": _csv(index)},
            content=_raw(data),
            headers={"Content-Type": _OCTETS},
            lookup=self.path,
            idempotency_key=False,
        )

    async def patch(
        self, array: npt.ArrayLike, offset: Sequence[int], extend: bool = False
    ) -> None:
        """Write ``array`` into the region that starts at ``offset``, across blocks; with
        ``extend=True`` the region may reach past the array's end, which grows its shape
        (``shape`` follows). Out of bounds without ``extend``: an
        :class:`~aiosdk.UnprocessableEntityError`."""
        np = _np()
        ndim = self.ndim
        data = np.asarray(array)
        if data.ndim != ndim:
            raise ConfigurationError(
                f"{self.path!r} has {ndim} dimension(s); the patch has {data.ndim}"
            )
        start = _ints(offset, "offset", ndim, 0)
        data = await self._prepared(data, data.shape, "the patch")
        params: dict[str, Any] = {"offset": _csv(start), "shape": _csv(data.shape)}
        if extend:
            params["extend"] = "true"
        answer = await call(
            self._ctx,
            "PATCH",
            route("/array/full", self.path),
            params=params,
            content=_raw(data),
            headers={"Content-Type": _OCTETS},
            lookup=self.path,
        )
        if answer is not None:
            self._apply(answer)
        elif extend:
            await self.refresh()

    async def _prepared(
        self, array: npt.ArrayLike, shape: tuple[int, ...], what: str
    ) -> numpy.ndarray[Any, Any]:
        """``array`` as C-contiguous little-endian data of the array's dtype (copied only when
        it is not already: in a thread when large); checked to have ``shape``."""
        np = _np()
        data = np.asarray(array)
        if data.shape != shape:
            raise ConfigurationError(
                f"{what} of {self.path!r} has shape {shape}; got an array of shape {data.shape}"
            )
        return await _converted(data, self.dtype, what)

    async def _upload(
        self, data: numpy.ndarray[Any, Any], concurrency: int, progress: Progress
    ) -> None:
        shape, chunks, _, _ = self._structure()
        dtype = self.dtype
        async with tracking(progress, data.nbytes, f"write {self.path}") as tracker:

            async def put(index: tuple[int, ...]) -> None:
                region = tuple(
                    slice(i * c, min((i + 1) * c, n))
                    for i, c, n in zip(index, chunks, shape, strict=True)
                )
                part = data[region] if region else data  # (a 0-d array's one block: itself)
                block = await _converted(part, dtype, f"block {index}")
                await self._put_block(index, block)
                tracker.advance(block.nbytes)

            blocks = itertools.product(*(range(n) for n in _grid(shape, chunks)))
            await run_bounded(blocks, put, concurrency)

    # -- export ------------------------------------------------------------------------------

    async def export(
        self,
        file: str | os.PathLike[str] | IO[bytes],
        format: str | None = None,
        *,
        slice: Selection = None,
        progress: Progress = None,
    ) -> None:
        """Save the array (or the part ``slice`` selects) to ``file`` (a path, or a binary file
        open for writing) in ``format``: a MIME type or a file suffix among :meth:`formats`
        (``"application/x-npy"``, ``".npy"``, ``"text/csv"``...); by default the path's suffix.
        The server renders it; the bytes are streamed to the file as they arrive. A path is
        written under a temporary name and renamed when complete: a failed export leaves
        nothing behind."""
        check_progress(progress)
        fmt = format if format is not None else file_suffix(file)
        if not fmt:
            raise ConfigurationError(
                f"say which format to export {self.path!r} in: format='.npy' (or a MIME type,"
                " or a path with a suffix); await node.formats() lists them"
            )
        params: dict[str, Any] = {"format": fmt}
        if slice is not None:
            params["slice"] = _wire_selection(_normalize(slice, self.shape))
        await download_to_file(
            self._ctx, route("/array/full", self.path), params, file, progress, self.path
        )


def _shift(axis: int | range, by: int) -> int | slice:
    if isinstance(axis, int):
        return axis + by
    if not axis:
        return slice(0, 0)
    last = axis[-1] + by
    stop = last + (1 if axis.step > 0 else -1)
    return slice(axis[0] + by, None if stop < 0 else stop, axis.step)


def _csv(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


async def _converted(
    data: numpy.ndarray[Any, Any], dtype: numpy.dtype[Any], what: str
) -> numpy.ndarray[Any, Any]:
    np = _np()
    if data.dtype != dtype:
        if data.dtype.kind in "OV" or not np.can_cast(data.dtype, dtype, "same_kind"):
            raise ConfigurationError(f"{what}: cannot write {data.dtype} data into {dtype}")
    elif data.flags.c_contiguous:
        return data
    converted: numpy.ndarray[Any, Any]
    if data.nbytes <= _COPY_ON_LOOP:
        converted = np.ascontiguousarray(data, dtype=dtype)
    else:
        converted = await anyio.to_thread.run_sync(np.ascontiguousarray, data, dtype)
    return converted


# -- writing a new array ---------------------------------------------------------------------


async def write_array(
    container: AsyncContainer,
    array: npt.ArrayLike,
    *,
    key: str,
    chunks: int | Sequence[int] | None = None,
    metadata: JSONObject | None = None,
    specs: Sequence[str] | None = None,
    dims: Sequence[str] | None = None,
    concurrency: int = 8,
    progress: Progress = None,
) -> AsyncArrayClient:
    """Create an array node at ``key`` in ``container`` and upload ``array`` into it, blocks
    ``concurrency`` at a time. ``chunks``: the block shape (an int for every axis, or one per
    axis); by default :func:`auto_chunks` (blocks of at most 16 MiB, each a contiguous run of
    the array). Big-endian or non-contiguous input is converted block by block.

    If the upload fails or is cancelled, the new node is deleted (best effort), as a failed
    :meth:`~aiosdk.AsyncContainer.write_dataframe` deletes its table."""
    np = _np()
    check_concurrency(concurrency)
    check_progress(progress)
    data = np.asarray(array)
    dtype = check_dtype(data.dtype)
    if data.ndim > MAX_DIMS:
        raise ConfigurationError(f"arrays have at most {MAX_DIMS} dimensions, not {data.ndim}")
    shape = data.shape
    if chunks is None:
        chosen = auto_chunks(shape, dtype.itemsize)
        if math.prod(chosen) * dtype.itemsize > MAX_BLOCK_BYTES:
            raise ConfigurationError(
                f"one {dtype} element is larger than a block may be ({MAX_BLOCK_BYTES} bytes)"
            )
    else:
        chosen = _check_chunks(chunks, shape, dtype.itemsize)
    structure = {
        "data_type": dtype.str,
        "shape": list(shape),
        "chunks": list(chosen),
        "dims": _check_dims(dims, data.ndim),
    }
    node = await container.new("array", key, metadata=metadata, specs=specs, structure=structure)
    if not isinstance(node, AsyncArrayClient):
        raise ProtocolError(f"created {node.path!r} is not an array")
    try:
        await node._upload(data, concurrency, progress)
    except BaseException:
        await discard(node)
        raise
    return node
