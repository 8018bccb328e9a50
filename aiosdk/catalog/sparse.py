"""Sparse arrays: a node of the ``sparse`` family, in COO layout.

The node's structure says the shape, the data type, the number of stored values (``nnz``) and
the dimension names; the values travel as one Arrow table with the columns ``coord_0`` ...
``coord_{ndim-1}`` (int64) and ``data``. A read gives a :class:`COO`: the coordinates, the
values and the shape, with :meth:`COO.todense`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import anyio

from .._core.errors import ConfigurationError, ProtocolError
from .._core.optional import require
from .._core.progress import Progress
from .metadata import JSONObject
from .nodes import AsyncNode, route
from .tables import discard, export_to, fetch_arrow, send_ipc

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from .containers import AsyncContainer

__all__ = ["COO", "AsyncSparseClient", "write_sparse"]

DATA_KINDS = "biuf"
"""The kinds of numpy data types a sparse array's values may have (bool, ints, floats)."""


def _numpy() -> Any:
    return require("numpy", "sparse arrays")


@dataclass(frozen=True, eq=False)
class COO:
    """A sparse array in coordinate (COO) form: value ``data[k]`` sits at the index
    ``coords[:, k]`` of an array of ``shape``; everywhere else it is zero.

    Attributes:
        coords: int64 coordinates, of shape ``(ndim, nnz)``.
        data: the ``nnz`` values.
        shape: the shape of the whole array.
    """

    coords: NDArray[np.int64]
    data: NDArray[Any]
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        """How many dimensions the array has."""
        return len(self.shape)

    @property
    def nnz(self) -> int:
        """How many values are stored."""
        return int(self.data.shape[0])

    @property
    def dtype(self) -> np.dtype[Any]:
        """The data type of the values."""
        return self.data.dtype

    def todense(self) -> NDArray[Any]:
        """The dense numpy array (values stored twice at one index add up, as in scipy)."""
        np = _numpy()
        dense = np.zeros(self.shape, dtype=self.data.dtype)
        np.add.at(dense, tuple(self.coords), self.data)
        return dense  # type: ignore[no-any-return]


def _checked(
    coords: object, data: object, shape: object, dims: object
) -> tuple[Any, Any, list[int], list[str] | None]:
    """The coordinates (int64, ``(ndim, nnz)``), the values (little-endian), the shape and
    the dims, checked against each other; :class:`~aiosdk.ConfigurationError` if they do not
    fit."""
    np = _numpy()
    if isinstance(shape, int) or not isinstance(shape, Sequence):
        raise ConfigurationError(f"shape must be a sequence of ints, not {shape!r}")
    sizes = list(shape)
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in sizes):
        raise ConfigurationError(f"shape must hold ints >= 0, not {shape!r}")
    values = np.asarray(data)
    if values.ndim != 1:
        raise ConfigurationError(f"data must be one-dimensional, not of shape {values.shape}")
    if values.dtype.kind not in DATA_KINDS:
        raise ConfigurationError(f"sparse values must be bool, ints or floats, not {values.dtype}")
    points = np.asarray(coords)
    if points.size == 0:
        points = points.reshape(len(sizes), 0)
    if points.ndim != 2 or points.shape[0] != len(sizes):
        raise ConfigurationError(
            f"coords must have the shape (ndim, nnz) = ({len(sizes)}, nnz), not {points.shape}"
        )
    if points.dtype.kind not in "iu":
        raise ConfigurationError(f"coords must be integers, not {points.dtype}")
    if points.shape[1] != values.shape[0]:
        raise ConfigurationError(
            f"coords hold {points.shape[1]} points but data {values.shape[0]} values"
        )
    if points.shape[1]:
        low, high = points.min(axis=1), points.max(axis=1)
        for axis, size in enumerate(sizes):
            if low[axis] < 0 or high[axis] >= size:
                bad = low[axis] if low[axis] < 0 else high[axis]
                raise ConfigurationError(
                    f"a coordinate on axis {axis} is {bad}, outside the shape {tuple(sizes)}"
                )
    if dims is not None:
        if isinstance(dims, str) or not isinstance(dims, Sequence):
            raise ConfigurationError(f"dims must be a sequence of names, not {dims!r}")
        if len(dims) != len(sizes) or not all(isinstance(d, str) and d for d in dims):
            raise ConfigurationError(f"dims must name each of the {len(sizes)} dimensions")
        dims = list(dims)
    little = values.dtype.newbyteorder("<")
    return points.astype(np.int64, copy=False), values.astype(little, copy=False), sizes, dims


def _table(coords: Any, data: Any) -> Any:
    pa = require("pyarrow", "sparse arrays")
    columns = {f"coord_{axis}": pa.array(coords[axis]) for axis in range(coords.shape[0])}
    columns["data"] = pa.array(data)
    return pa.table(columns)


class AsyncSparseClient(AsyncNode):
    """A sparse array in COO layout: ``await s.read()`` gives a :class:`COO`
    (``.todense()`` for the numpy array); ``await s.export("s.npy")``."""

    def _structure(self) -> dict[str, Any]:
        structure = self._item.get("structure")
        if not isinstance(structure, dict):
            raise ProtocolError(f"the sparse array {self.path!r} has no structure")
        return structure

    def _wrote(self, nnz: int) -> None:
        """Keep the node as read in step with values written here (a write bumps the
        revision by one)."""
        self._structure()["nnz"] = nnz
        self.revision += 1

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the whole array."""
        return tuple(int(n) for n in self._structure().get("shape", ()))

    @property
    def ndim(self) -> int:
        """How many dimensions it has."""
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The data type of its values."""
        return _numpy().dtype(self._structure().get("data_type"))  # type: ignore[no-any-return]

    @property
    def nnz(self) -> int:
        """How many values are stored (when it was read)."""
        return int(self._structure().get("nnz", 0))

    @property
    def dims(self) -> tuple[str, ...] | None:
        """The names of its dimensions, if it has them."""
        dims = self._structure().get("dims")
        return None if dims is None else tuple(str(d) for d in dims)

    async def read(self) -> COO:
        """The stored coordinates and values, as a :class:`COO`."""
        np = _numpy()
        table = await fetch_arrow(self._ctx, route("/sparse/full", self.path))
        shape, dtype = self.shape, self.dtype

        def convert() -> COO:
            try:
                coords = [table.column(f"coord_{axis}").to_numpy() for axis in range(len(shape))]
                data = table.column("data").to_numpy(zero_copy_only=False)
            except KeyError as exc:
                raise ProtocolError(f"unexpected columns of a sparse array: {exc}") from exc
            points = (
                np.stack(coords).astype(np.int64, copy=False)
                if coords
                else np.empty((0, len(data)), dtype=np.int64)
            )
            return COO(points, data.astype(dtype, copy=False), shape)

        return await anyio.to_thread.run_sync(convert)

    async def write(self, coords: object, data: object) -> None:
        """Replace the stored values with ``data[k]`` at ``coords[:, k]`` (``coords`` of shape
        ``(ndim, nnz)``, inside the array's shape)."""
        points, values, _, _ = _checked(coords, data, self.shape, self.dims)
        # In a worker: besides copying, pyarrow imports pandas (which reads files) the first time.
        table = await anyio.to_thread.run_sync(_table, points, values)
        await send_ipc(self._ctx, "PUT", route("/sparse/full", self.path), table, {}, self.path)
        self._wrote(int(values.shape[0]))

    async def export(
        self,
        file: str | os.PathLike[str] | IO[bytes],
        format: str | None = None,
        *,
        progress: Progress = None,
    ) -> None:
        """Save the array to ``file`` (a path, or a binary file open for writing) in
        ``format``: a media type or a suffix (``".arrow"`` for the COO table, ``".npy"`` for
        the dense array; :meth:`formats` lists them), by default the path's suffix."""
        await export_to(self, "/sparse/full", file, format, {}, progress)


async def write_sparse(
    container: AsyncContainer,
    coords: object,
    data: object,
    *,
    shape: Sequence[int],
    key: str,
    metadata: JSONObject | None = None,
    specs: Sequence[str] | None = None,
    dims: Sequence[str] | None = None,
) -> AsyncSparseClient:
    """Create the sparse array ``key`` in ``container``: ``data[k]`` at ``coords[:, k]``
    (``coords`` of shape ``(ndim, nnz)``) in an array of ``shape``. Coordinates outside the
    shape, or as many coordinates as values, are a :class:`~aiosdk.ConfigurationError`. If
    the upload fails, the new node is deleted (best effort)."""
    points, values, sizes, names = _checked(coords, data, shape, dims)  # before any request
    structure = {
        "layout": "COO",
        "shape": sizes,
        "data_type": values.dtype.str,
        "nnz": int(values.shape[0]),
        "dims": names,
    }
    node = await container.new("sparse", key, metadata=metadata, specs=specs, structure=structure)
    if not isinstance(node, AsyncSparseClient):
        raise ProtocolError(f"created {node.path!r} is not a sparse array")
    try:
        await node.write(points, values)
    except BaseException:
        await discard(node)
        raise
    return node
