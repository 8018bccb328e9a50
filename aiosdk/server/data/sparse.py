"""Sparse arrays in COO form: their structure, and their one Arrow table in the blob store.

A sparse node's structure::

    {"layout": "COO", "shape": [1000, 1000], "data_type": "<f8", "nnz": 123, "dims": null}

Its entries are one Arrow IPC stream at ``sparse/<node id>/coo.arrows``: the int64 columns
``coord_0`` … ``coord_{ndim-1}`` (no nulls, each within its axis) and ``data`` (of the node's
data type, no nulls). ``nnz`` counts the entries written (0 until the first write). Duplicate
coordinates are kept as they are sent.

Everything here that parses or checks Arrow data is blocking: the routes call it in a worker
thread.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy
import pyarrow
import pyarrow.compute
import pyarrow.ipc

from ..catalog.nodes import InvalidContentError
from .export import table_stream
from .tables import refuse_compressed

__all__ = [
    "MAX_DIMS",
    "coo_key",
    "coo_schema",
    "checked_coo",
    "validate_structure",
]

MAX_DIMS = 32
"""The most dimensions a sparse array may have."""
_KEYS = ("layout", "shape", "data_type", "nnz", "dims")
_DATA_TYPE = re.compile(r"[<|]?(?:b1|[iu][1248]|f[248])")
_ALLOWED = "b1 (bool), i1/i2/i4/i8, u1/u2/u4/u8, f2/f4/f8 (numpy's dtype.str, little-endian)"


def coo_key(node_id: str) -> str:
    """The blob store key of the sparse array ``node_id``'s entries."""
    return f"sparse/{node_id}/coo.arrows"


def _problem(message: str) -> InvalidContentError:
    return InvalidContentError(f"Invalid sparse structure: {message}")


def _data_type(value: Any) -> numpy.dtype[Any]:
    if not isinstance(value, str) or not _DATA_TYPE.fullmatch(value):
        raise _problem(f"data_type must be one of {_ALLOWED}")
    try:
        dtype = numpy.dtype(value)
    except TypeError:
        raise _problem(f"data_type must be one of {_ALLOWED}") from None
    kind, size = dtype.kind, dtype.itemsize
    if not (
        (kind == "b" and size == 1)
        or (kind in "iu" and size in (1, 2, 4, 8))
        or (kind == "f" and size in (2, 4, 8))
    ):
        raise _problem(f"data_type {value!r} is not supported; one of {_ALLOWED}")
    return dtype


def validate_structure(structure: dict[str, Any] | None) -> dict[str, Any]:
    """The structure of a new sparse node, normalised (``data_type`` as numpy's
    ``dtype.str``, ``nnz`` 0: nothing is written yet); raises
    :class:`~..catalog.nodes.InvalidContentError` (422) saying what is wrong."""
    if not isinstance(structure, dict):
        raise _problem("a sparse array needs a structure with shape and data_type")
    unknown = sorted(set(structure) - set(_KEYS))
    if unknown:
        raise _problem(f"unknown fields {unknown}; the fields are {list(_KEYS)}")
    if structure.get("layout", "COO") != "COO":
        raise _problem("the only layout is 'COO'")
    shape = structure.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMS
        or any(isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**63 for n in shape)
    ):
        raise _problem(f"shape must be a list of 1 to {MAX_DIMS} lengths (integers >= 0)")
    if math.prod(shape) >= 2**63:
        raise _problem("the array would have 2**63 elements or more")
    dtype = _data_type(structure.get("data_type"))
    dims = structure.get("dims")
    if dims is not None and (
        not isinstance(dims, list)
        or len(dims) != len(shape)
        or not all(isinstance(name, str) and 1 <= len(name) <= 255 for name in dims)
        or len(set(dims)) != len(dims)
    ):
        raise _problem(f"dims must be null or {len(shape)} distinct names")
    return {
        "layout": "COO",
        "shape": list(shape),
        "data_type": dtype.str,
        "nnz": 0,
        "dims": None if dims is None else list(dims),
    }


def coo_schema(structure: Mapping[str, Any]) -> Any:
    """The Arrow schema of a sparse node's entries."""
    fields = [
        pyarrow.field(f"coord_{axis}", pyarrow.int64(), nullable=False)
        for axis in range(len(structure["shape"]))
    ]
    data_type = pyarrow.from_numpy_dtype(numpy.dtype(structure["data_type"]))
    return pyarrow.schema([*fields, pyarrow.field("data", data_type, nullable=False)])


def empty_coo(structure: Mapping[str, Any]) -> bytes:
    """The IPC stream of a sparse array without entries."""
    return table_stream(coo_schema(structure).empty_table())


def checked_coo(
    body: bytes | bytearray | memoryview, structure: Mapping[str, Any]
) -> tuple[bytes, int]:
    """The sparse array's entries ``body`` (an IPC stream of the COO table) as it is stored,
    and how many there are. :class:`~..catalog.nodes.InvalidContentError` (422) if it is not an
    IPC stream of ``coord_0`` … and ``data`` of the right types, holds nulls, a coordinate
    outside the shape, or compressed batches (:func:`.tables.refuse_compressed`: uncompressed,
    the entries weigh in memory what the body does)."""
    schema = coo_schema(structure)
    refuse_compressed(body)
    try:
        reader = pyarrow.ipc.open_stream(pyarrow.py_buffer(body))
        if reader.schema.names != schema.names or not all(
            got.type.equals(wanted.type) for got, wanted in zip(reader.schema, schema, strict=False)
        ):
            raise InvalidContentError(
                f"The entries must be an Arrow table of {schema.names} with the types"
                f" {[str(field.type) for field in schema]}; got {reader.schema.names} of"
                f" {[str(field.type) for field in reader.schema]}"
            )
        table = reader.read_all()
        table.validate(full=True)
    except (pyarrow.ArrowException, OSError) as exc:  # OSError: an invalid IPC message
        raise InvalidContentError(f"The body is not a valid Arrow IPC stream: {exc}") from None
    for name, length in zip(schema.names, [*structure["shape"], None], strict=False):
        column = table.column(name)
        if column.null_count:
            raise InvalidContentError(f"The column {name!r} must not hold nulls")
        if length is not None and len(column):
            low, high = pyarrow.compute.min_max(column).values()
            if low.as_py() < 0 or high.as_py() >= length:
                raise InvalidContentError(
                    f"{name} must be within 0 to {length - 1} (the axis' length);"
                    f" it holds {low.as_py()} to {high.as_py()}"
                )
    stored = pyarrow.Table.from_arrays(table.columns, schema=schema).combine_chunks()
    return table_stream(stored), stored.num_rows


def read_coo(stream: bytes | memoryview) -> Any:
    """A stored sparse array's entries as a :class:`pyarrow.Table`."""
    return pyarrow.ipc.open_stream(pyarrow.py_buffer(stream)).read_all()
