"""Helpers of the array data tests: sample values of a data type, array nodes made and written
block by block over the API, their bytes read back and decoded, selections as numpy takes them."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import numpy as np

from .conftest import create, url


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray[Any, Any]:
    """Values of ``dtype`` in ``shape``, distinct enough to catch a misplaced byte."""
    rng = np.random.default_rng(seed)
    count = int(np.prod(shape))
    kind = np.dtype(dtype).kind
    if kind == "b":
        values: Any = rng.integers(0, 2, count).astype(bool)
    elif kind in "SU":
        values = np.array([f"v{i % 97}" for i in range(count)], dtype=dtype)
    elif kind in "Mm":
        values = rng.integers(-(10**9), 10**9, count).astype(dtype)
    elif kind == "c":
        values = (rng.random(count) + 1j * rng.random(count)).astype(dtype)
    else:
        values = (rng.random(count) * 100).astype(dtype)
    return np.asarray(values, dtype=dtype).reshape(shape)


async def new_array(
    http: httpx.AsyncClient, parent: str, key: str, dtype: str, shape: Any, chunks: Any, **more: Any
) -> dict[str, Any]:
    structure = {"data_type": dtype, "shape": list(shape), "chunks": list(chunks), **more}
    return await create(http, parent, key, structure_family="array", structure=structure)


def blocks_of(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[int, ...]]:
    grid = [-(-n // c) for n, c in zip(shape, chunks, strict=True)]
    return [tuple(int(i) for i in index) for index in np.ndindex(*grid)]


def block_of(values: np.ndarray[Any, Any], index: tuple[int, ...], chunks: tuple[int, ...]) -> Any:
    return values[tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks, strict=True))]


def text(index: tuple[int, ...]) -> str:
    return ",".join(map(str, index))


async def put_all(http: httpx.AsyncClient, path: str, values: Any, chunks: Any) -> None:
    """Write every block of ``values``, all at once."""

    async def put(index: tuple[int, ...]) -> None:
        body = np.ascontiguousarray(block_of(values, index, chunks)).tobytes()
        response = await http.put(
            f"/array/block/{url(path)}", params={"block": text(index)}, content=body
        )
        assert response.status_code == 204, response.text

    async with anyio.create_task_group() as group:
        for index in blocks_of(values.shape, chunks):
            group.start_soon(put, index)


def decoded(response: httpx.Response) -> np.ndarray[Any, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["accept-ranges"] == "bytes"
    dtype = np.dtype(response.headers["x-aiosdk-dtype"])
    shape_text = response.headers["x-aiosdk-shape"]
    shape = tuple(int(n) for n in shape_text.split(",")) if shape_text else ()
    return np.frombuffer(response.content, dtype).reshape(shape)


async def read_full(http: httpx.AsyncClient, path: str, slice_: str | None = None) -> Any:
    params = {} if slice_ is None else {"slice": slice_}
    return decoded(await http.get(f"/array/full/{url(path)}", params=params))


SLICES = [
    "3",
    "-1",
    "1:4",
    "::2",
    "::-1",
    "-2:",
    "10:-10:-3",
    "-1:2:-2,::3",
    "2,::-2",
    ":,5",
    "5:5",
    "100:",
    "::-7,-3:1:-1",
    "0:20:4,1:9:3",
]


def numpy_index(selection: str) -> tuple[int | slice, ...]:
    """The index ``selection`` (``::-7,-3:1:-1``) stands for, as numpy takes it."""
    return tuple(
        int(part) if ":" not in part else slice(*(int(p) if p else None for p in part.split(":")))
        for part in selection.split(",")
    )
