"""Datasets: named arrays that share dimensions, like xarray's ``Dataset``.

A dataset is a container with the spec ``"dataset"`` whose children are arrays, each with the
names of its dimensions (``dims``); arrays that share a dimension's name have the same length
along it. ``write_dataset`` takes what xarray's ``data_vars`` takes: ``{"temp": (("time",
"x"), array), "time": (("time",), t)}`` (an optional third item is the variable's metadata).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from .._core.concurrency import run_bounded
from .._core.errors import ConfigurationError, ProtocolError
from .._core.optional import require
from . import metadata as _metadata
from .arrays import AsyncArrayClient, write_array
from .containers import AsyncContainer
from .metadata import JSONObject
from .nodes import check_key
from .tables import discard

if TYPE_CHECKING:
    import xarray  # type: ignore[import-not-found, unused-ignore]
    from numpy.typing import NDArray

__all__ = ["DATASET_SPEC", "AsyncDatasetClient", "write_dataset"]

DATASET_SPEC = "dataset"
"""The spec of a container that is a dataset."""
CONCURRENCY = 4
"""Variables written or read at once (each one's blocks go concurrently too)."""

DatasetKind = Literal["numpy", "xarray"]
"""What a dataset read gives: a dict of numpy arrays, or an ``xarray.Dataset``."""
AsNumpy = Literal["numpy"]
AsXarray = Literal["xarray"]
_Variable = tuple[str, Any, "list[str] | None", "JSONObject | None"]


def _variables(mapping: object) -> list[_Variable]:
    """``(name, array, dims, metadata)`` of each variable of ``mapping``, checked: dims name
    each axis, and a dimension has one length across the variables."""
    np = require("numpy", "datasets")
    if not isinstance(mapping, Mapping):
        raise ConfigurationError(
            f"a dataset is a mapping of names to arrays, not {type(mapping).__name__}"
        )
    found: list[_Variable] = []
    lengths: dict[str, tuple[int, str]] = {}
    for name, value in mapping.items():
        check_key(name)
        dims: list[str] | None = None
        attrs: JSONObject | None = None
        if isinstance(value, tuple):
            if len(value) not in (2, 3):
                raise ConfigurationError(
                    f"variable {name!r}: a tuple is (dims, array) or (dims, array, metadata)"
                )
            names, value, attrs = value[0], value[1], (value[2] if len(value) == 3 else None)
            if isinstance(names, str):
                names = (names,)
            if not isinstance(names, Sequence) or not all(isinstance(d, str) and d for d in names):
                raise ConfigurationError(f"variable {name!r}: dims must be names, not {names!r}")
            dims = list(names)
        array = np.asarray(value)
        if dims is not None:
            if len(dims) != array.ndim:
                raise ConfigurationError(
                    f"variable {name!r} has {array.ndim} dimensions but {len(dims)} dims {dims}"
                )
            for dim, length in zip(dims, array.shape, strict=True):
                seen = lengths.setdefault(dim, (length, name))
                if seen[0] != length:
                    raise ConfigurationError(
                        f"dimension {dim!r} has length {length} in {name!r} but {seen[0]} in"
                        f" {seen[1]!r}"
                    )
        found.append((name, array, dims, attrs))
    return found


class AsyncDatasetClient(AsyncContainer):
    """A dataset: a container (spec ``"dataset"``) of arrays with named dimensions.

    ``await ds.read()`` gives ``{name: numpy array}``; ``await ds.read(as_="xarray")`` an
    ``xarray.Dataset`` (xarray must be installed). Its children are also reachable as in any
    container: ``await ds["temp"]`` is the array client of that variable.
    """

    @overload
    async def read(
        self, *, as_: AsNumpy = "numpy", concurrency: int = CONCURRENCY
    ) -> dict[str, NDArray[Any]]: ...
    @overload
    async def read(self, *, as_: AsXarray, concurrency: int = CONCURRENCY) -> xarray.Dataset: ...
    async def read(self, *, as_: DatasetKind = "numpy", concurrency: int = CONCURRENCY) -> Any:
        """Every variable (array child), read concurrently (``concurrency`` at once): a dict
        of numpy arrays by name, or with ``as_="xarray"`` an ``xarray.Dataset`` (its ``attrs``
        the dataset's metadata, each variable's the array's);
        :class:`~aiosdk.MissingDependencyError` if xarray is not installed."""
        if as_ not in ("numpy", "xarray"):
            raise ConfigurationError(f'as_ must be "numpy" or "xarray", not {as_!r}')
        xr = require("xarray", "reading a dataset as xarray", "xarray") if as_ == "xarray" else None
        variables = [node async for node in self.values() if isinstance(node, AsyncArrayClient)]
        data: dict[str, Any] = {}

        async def read_one(node: AsyncArrayClient) -> None:
            data[node.key] = await node.read()

        await run_bounded(variables, read_one, concurrency)
        ordered = {node.key: data[node.key] for node in variables}
        if xr is None:
            return ordered
        return xr.Dataset(
            {
                node.key: (
                    node.dims or [f"{node.key}_dim_{i}" for i in range(node.ndim)],
                    ordered[node.key],
                    _metadata.thaw(node.metadata),
                )
                for node in variables
            },
            attrs=_metadata.thaw(self.metadata),
        )


async def write_dataset(
    container: AsyncContainer,
    mapping: Mapping[str, Any],
    *,
    key: str,
    metadata: JSONObject | None = None,
    specs: Sequence[str] | None = None,
) -> AsyncDatasetClient:
    """Create the dataset ``key`` in ``container``: a container with the spec ``"dataset"``
    (before ``specs``) and one array per variable of ``mapping`` (``name: (dims, array)``,
    ``name: (dims, array, metadata)``, or a bare array without dims), written concurrently.
    Dims that do not fit their array, or a dimension with two lengths, are a
    :class:`~aiosdk.ConfigurationError` before anything is sent. If a write fails, the new
    dataset is deleted (best effort)."""
    variables = _variables(mapping)
    given = _metadata.check_specs(specs)
    node = await container.new(
        "container",
        key,
        metadata=metadata,
        specs=[DATASET_SPEC, *(s for s in given if s != DATASET_SPEC)],
    )
    if not isinstance(node, AsyncDatasetClient):
        raise ProtocolError(f"created {node.path!r} is not a dataset")

    async def write(variable: _Variable) -> None:
        name, array, dims, attrs = variable
        await write_array(node, array, key=name, dims=dims, metadata=attrs)

    try:
        await run_bounded(variables, write, CONCURRENCY)
    except BaseException:
        await discard(node)
        raise
    return node
