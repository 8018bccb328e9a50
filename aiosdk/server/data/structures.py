"""The structure of an array node: its data type, shape, chunks, dimension names and fill value.

A node of the ``array`` family carries, as its ``structure``::

    {"data_type": "<f8", "shape": [4096, 8192], "chunks": [256, 8192],
     "dims": null, "fill_value": 0}

:func:`validate_array_structure` checks what a client sends and normalises it (the catalog calls
it on every create of an array node, see :attr:`~..catalog.state.CatalogState.structures`);
:class:`ArrayStructure` is that structure parsed, with the block grid it implies. The block
grid has ``ceil(shape[i] / chunks[i])`` blocks along axis ``i`` (none along a zero-length
axis, one block ``()`` for a 0-d array); a block at the array's far edge is smaller than the
chunks (its true shape is what goes over the wire).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..catalog.nodes import InvalidContentError
from ..errors import InvalidRequestError

__all__ = [
    "MAX_BLOCKS",
    "MAX_BLOCK_BYTES",
    "MAX_DIMS",
    "ArrayStructure",
    "validate_array_structure",
]

MAX_DIMS = 32
"""The most dimensions an array may have (numpy's own limit is 64)."""
MAX_BLOCKS = 2**31
"""The most blocks an array's grid may have."""
MAX_BLOCK_BYTES = 256 * 1024 * 1024
"""The largest a block (a chunk: ``prod(chunks) * itemsize``) may be."""
MAX_ARRAY_BYTES = 2**60
"""The largest an array may be: a sanity bound that keeps every byte offset an int64."""
MAX_LENGTH = 2**62
"""Every length of a shape or of chunks is below this (numpy's and zarr's are int64)."""
MAX_DIM_NAME_LENGTH = 255

_KEYS = ("data_type", "shape", "chunks", "dims", "fill_value")
_UNITS = frozenset({"Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"})
_DATA_TYPE = re.compile(r"[<>|=]?[a-zA-Z]\w{0,15}(\[\w{1,3}\])?")
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _problem(message: str) -> InvalidContentError:
    return InvalidContentError(f"Invalid array structure: {message}")


def _data_type(value: Any) -> np.dtype[Any]:
    """The numpy dtype ``value`` names, if the API allows it (little-endian or one byte)."""
    allowed = (
        "allowed: b1 (bool), i1/i2/i4/i8, u1/u2/u4/u8, f2/f4/f8, c8/c16, M8[unit], m8[unit],"
        " S<n>, U<n> (n >= 1), as numpy's dtype.str, little-endian ('<' or '|')"
    )
    if not isinstance(value, str) or not _DATA_TYPE.fullmatch(value):
        raise _problem(f"data_type must be a numpy dtype string; {allowed}")
    if value.startswith(">"):
        raise _problem(f"data_type {value!r} is big-endian; {allowed}")
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise _problem(f"data_type {value!r} is not a numpy dtype; {allowed}") from None
    kind, size = dtype.kind, dtype.itemsize
    ok = (
        (kind == "b" and size == 1)
        or (kind in "iu" and size in (1, 2, 4, 8))
        or (kind == "f" and size in (2, 4, 8))
        or (kind == "c" and size in (8, 16))
        or (kind in "SU" and size >= 1)
        or (
            kind in "Mm"
            and np.datetime_data(dtype)[0] in _UNITS
            and np.datetime_data(dtype)[1] == 1
        )
    )
    if not ok or dtype.byteorder == ">" or dtype.fields is not None or dtype.subdtype is not None:
        raise _problem(f"data_type {value!r} is not supported; {allowed}")
    return dtype


def _lengths(value: Any, what: str, *, minimum: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise _problem(f"{what} must be a list of at most {MAX_DIMS} integers")
    for length in value:
        if (
            isinstance(length, bool)
            or not isinstance(length, int)
            or not minimum <= length < MAX_LENGTH
        ):
            raise _problem(f"{what} must hold integers >= {minimum} and < 2**62, not {length!r}")
    return tuple(value)


def _fill_value(value: Any, dtype: np.dtype[Any]) -> Any:
    """``value`` as the JSON the structure keeps (checked to fit ``dtype``); ``None``: zero."""
    kind = dtype.kind
    if value is None:
        value = False if kind == "b" else "" if kind in "SU" else [0, 0] if kind == "c" else 0
    wrong = _problem(f"fill_value {value!r} does not fit data_type {dtype.str!r}")
    if kind == "b":
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind in "iumM":
        if value == "NaT" and kind in "mM":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        if kind in "iu":
            info = np.iinfo(dtype)
            if not info.min <= value <= info.max:
                raise wrong
        elif not -(2**63) < value < 2**63:
            raise wrong
        return value
    if kind == "f":
        return _float(value, np.dtype(dtype), wrong)
    if kind == "c":
        if not isinstance(value, list) or len(value) != 2:
            raise _problem("fill_value of a complex data_type is [real, imaginary]")
        part_dtype = np.dtype(f"<f{dtype.itemsize // 2}")
        return [_float(part, part_dtype, wrong) for part in value]
    if not isinstance(value, str) or "\x00" in value:
        raise wrong
    if kind == "S":
        if not value.isascii() or len(value) > dtype.itemsize:
            raise wrong
    elif len(value) > dtype.itemsize // 4:
        raise wrong
    return value


def _float(value: Any, dtype: np.dtype[Any], wrong: InvalidContentError) -> Any:
    """``value`` if it is a number finite in the float ``dtype`` (or a special's name)."""
    if isinstance(value, str) and value in _SPECIAL_FLOATS:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong
    try:
        as_float = float(value)
    except OverflowError:
        raise wrong from None
    if not math.isfinite(as_float) or abs(as_float) > float(np.finfo(dtype).max):
        raise wrong
    return value


def _dims(value: Any, ndim: int) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != ndim:
        raise _problem(f"dims must be null or a list of {ndim} names (one per axis)")
    for name in value:
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_DIM_NAME_LENGTH:
            raise _problem(f"each of dims is a name of 1 to {MAX_DIM_NAME_LENGTH} characters")
    if len(set(value)) != len(value):
        raise _problem("dims must not repeat")
    return list(value)


def validate_array_structure(structure: dict[str, Any] | None) -> dict[str, Any]:
    """``structure`` checked and normalised (``data_type`` as numpy's ``dtype.str``, ``dims``
    and ``fill_value`` filled in, ``chunks`` the whole shape when not given); raises
    :class:`~..catalog.nodes.InvalidContentError` (422) saying what is wrong."""
    if structure is None:
        raise _problem("an array needs a structure with data_type and shape")
    unknown = sorted(set(structure) - set(_KEYS))
    if unknown:
        raise _problem(f"unknown fields {unknown}; the fields are {list(_KEYS)}")
    if "data_type" not in structure or "shape" not in structure:
        raise _problem("data_type and shape are required")
    dtype = _data_type(structure["data_type"])
    shape = _lengths(structure["shape"], "shape", minimum=0)
    chunks_given = structure.get("chunks")
    chunks = (
        tuple(max(length, 1) for length in shape)
        if chunks_given is None
        else _lengths(chunks_given, "chunks", minimum=1)
    )
    if len(chunks) != len(shape):
        raise _problem(f"chunks has {len(chunks)} lengths, shape {len(shape)}")
    block_bytes = math.prod(chunks) * dtype.itemsize
    if block_bytes > MAX_BLOCK_BYTES:
        raise _problem(
            f"a block (chunks {list(chunks)} of {dtype.str}) would be {block_bytes:,} bytes;"
            f" at most {MAX_BLOCK_BYTES // 2**20} MiB: give smaller chunks"
        )
    if math.prod(shape) * dtype.itemsize > MAX_ARRAY_BYTES or any(
        length * dtype.itemsize > MAX_ARRAY_BYTES for length in shape
    ):
        raise _problem("the array (or one of its axes) would span more than 2**60 bytes")
    blocks = math.prod(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    if blocks > MAX_BLOCKS:
        raise _problem(f"the chunks make {blocks:,} blocks; at most 2**31: give larger chunks")
    return {
        "data_type": dtype.str,
        "shape": list(shape),
        "chunks": list(chunks),
        "dims": _dims(structure.get("dims"), len(shape)),
        "fill_value": _fill_value(structure.get("fill_value"), dtype),
    }


@dataclass(frozen=True)
class ArrayStructure:
    """An array node's structure, parsed (from one :func:`validate_array_structure` made)."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dims: tuple[str, ...] | None
    fill_value: Any
    """As the structure keeps it (JSON); :attr:`fill` is the numpy scalar."""

    @classmethod
    def of(cls, structure: dict[str, Any] | None) -> ArrayStructure:
        """``structure`` (a node's, already normalised) parsed."""
        normal = validate_array_structure(structure)
        dims = normal["dims"]
        return cls(
            np.dtype(normal["data_type"]),
            tuple(normal["shape"]),
            tuple(normal["chunks"]),
            None if dims is None else tuple(dims),
            normal["fill_value"],
        )

    def to_json(self) -> dict[str, Any]:
        """The structure as the node keeps it."""
        return {
            "data_type": self.dtype.str,
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "dims": None if self.dims is None else list(self.dims),
            "fill_value": self.fill_value,
        }

    @property
    def ndim(self) -> int:
        """How many dimensions."""
        return len(self.shape)

    @cached_property
    def fill(self) -> Any:
        """The fill value as a numpy scalar of :attr:`dtype`."""
        value = self.fill_value
        if self.dtype.kind == "c":
            real, imaginary = (_SPECIAL_FLOATS.get(part, part) for part in value)
            return self.dtype.type(complex(real, imaginary))
        if isinstance(value, str) and self.dtype.kind == "f":
            return self.dtype.type(_SPECIAL_FLOATS[value])
        return np.array(value).astype(self.dtype)[()]

    @cached_property
    def grid(self) -> tuple[int, ...]:
        """How many blocks along each axis."""
        return tuple(-(-n // c) for n, c in zip(self.shape, self.chunks, strict=True))

    def check_block(self, index: tuple[int, ...]) -> None:
        """Raise :class:`~..errors.InvalidRequestError` unless ``index`` is a block's."""
        if len(index) != self.ndim or not all(
            0 <= i < n for i, n in zip(index, self.grid, strict=True)
        ):
            grid = "x".join(map(str, self.grid)) or "one block, ()"
            raise InvalidRequestError(
                f"No block {','.join(map(str, index))!r}: the array's block grid is {grid}"
            )

    def block_shape(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """The true shape of the block at ``index`` (smaller than the chunks at the edge)."""
        return tuple(
            min(c, n - i * c) for i, c, n in zip(index, self.chunks, self.shape, strict=True)
        )

    def block_nbytes(self, index: tuple[int, ...]) -> int:
        """How many bytes the block at ``index`` is on the wire."""
        return math.prod(self.block_shape(index)) * self.dtype.itemsize

    @property
    def chunk_nbytes(self) -> int:
        """How many bytes a stored chunk is (every chunk is stored whole, edge ones padded)."""
        return math.prod(self.chunks) * self.dtype.itemsize
