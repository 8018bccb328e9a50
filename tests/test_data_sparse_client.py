"""The sparse (COO) client against the real server: round trips of several dtypes and
dimensionalities (empty, zero-length axes, duplicates), ``todense`` against numpy's own dense
array, exports parsed back, and bad inputs as typed errors before anything is created."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest

import aiosdk
from aiosdk._sync.testing import Accounts
from aiosdk.catalog.containers import AsyncContainer
from aiosdk.catalog.sparse import COO, AsyncSparseClient
from aiosdk.testing.accounts import AsyncAccounts

pytestmark = pytest.mark.anyio


async def _group(accounts: AsyncAccounts, hint: str) -> AsyncContainer:
    user = await accounts.user(hint)
    client = await accounts.client(user)
    return await client.catalog.create_container(f"{user.username}/sparse")


def _random(shape: tuple[int, ...], nnz: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    flat = rng.choice(int(np.prod(shape)), size=nnz, replace=False)
    coords = np.stack(np.unravel_index(flat, shape)).astype(np.int64)
    data = (rng.random(nnz) * 100).astype(dtype)
    return coords, data


def _dense(coords: np.ndarray, data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    dense = np.zeros(shape, dtype=data.dtype)
    dense[tuple(coords)] = data
    return dense


async def test_round_trips_and_todense_match_numpy(aiosdk_accounts: AsyncAccounts) -> None:
    grp = await _group(aiosdk_accounts, "round")
    cases = [
        ((40, 30), 100, "<f8"),
        ((1000,), 17, "<i4"),
        ((5, 6, 7), 20, "|b1"),
        ((8, 8), 0, "<f4"),
        ((0, 5), 0, "<u2"),
    ]
    for n, (shape, nnz, dtype) in enumerate(cases):
        coords, data = (
            _random(shape, nnz, dtype)
            if nnz
            else (
                np.empty((len(shape), 0), np.int64),
                np.empty(0, dtype),
            )
        )
        dims = [f"d{axis}" for axis in range(len(shape))]
        sp = await grp.write_sparse(
            coords, data, shape=shape, key=f"s{n}", metadata={"n": n}, dims=dims
        )
        assert isinstance(sp, AsyncSparseClient)
        assert (sp.shape, sp.nnz, sp.dtype, sp.dims) == (shape, nnz, np.dtype(dtype), tuple(dims))
        again = await grp[f"s{n}"]
        assert isinstance(again, AsyncSparseClient)
        got = await again.read()
        assert isinstance(got, COO)
        assert got.shape == shape
        assert got.ndim == len(shape)
        assert got.nnz == nnz
        assert got.coords.dtype == np.int64
        assert got.coords.shape == (len(shape), nnz)
        np.testing.assert_array_equal(got.coords, coords)
        np.testing.assert_array_equal(got.data, data)
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got.todense(), _dense(coords, data, shape))
        assert again.metadata == {"n": n}


async def test_duplicates_add_up_and_big_endian_is_stored_little(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    grp = await _group(aiosdk_accounts, "dup")
    coords = [[0, 0, 2], [1, 1, 3]]
    data = np.array([1.5, 2.0, 4.0], dtype=">f8")
    sp = await grp.write_sparse(coords, data, shape=(3, 4), key="dup")
    assert sp.dtype == np.dtype("<f8")
    dense = (await sp.read()).todense()
    expected = np.zeros((3, 4))
    expected[0, 1] = 3.5
    expected[2, 3] = 4.0
    np.testing.assert_array_equal(dense, expected)
    await sp.update_metadata({"checked": True})  # the write kept the revision in step


async def test_export_arrow_and_npy(aiosdk_accounts: AsyncAccounts, tmp_path: Path) -> None:
    grp = await _group(aiosdk_accounts, "export")
    coords, data = _random((20, 10), 30, "<f8")
    sp = await grp.write_sparse(coords, data, shape=(20, 10), key="e")
    await sp.export(tmp_path / "e.npy")
    raw = await anyio.Path(tmp_path / "e.npy").read_bytes()
    np.testing.assert_array_equal(np.load(io.BytesIO(raw)), _dense(coords, data, (20, 10)))
    out = io.BytesIO()
    await sp.export(out, "arrow")
    table = pyarrow.ipc.open_stream(pa.py_buffer(out.getvalue())).read_all()
    assert table.column_names == ["coord_0", "coord_1", "data"]
    np.testing.assert_array_equal(table.column("data").to_numpy(), data)
    assert "application/x-npy" in await sp.formats()


async def test_bad_inputs_are_typed_errors(aiosdk_accounts: AsyncAccounts) -> None:
    grp = await _group(aiosdk_accounts, "bad")
    good = np.array([[0, 1], [1, 2]])
    values = np.array([1.0, 2.0])
    bad: list[tuple[object, object, object, object, str]] = [
        (good, np.array([1.0]), (3, 3), None, "2 points but data 1"),
        (good, values, (3, 2), None, "outside the shape"),
        (np.array([[0, -1], [1, 2]]), values, (3, 3), None, "outside the shape"),
        (good, values, (3, 3, 3), None, "ndim, nnz"),
        (good.astype(float), values, (3, 3), None, "integers"),
        (good, values.astype(complex), (3, 3), None, "bool, ints or floats"),
        (good, values.reshape(2, 1), (3, 3), None, "one-dimensional"),
        (good, values, (3, -1), None, "ints >= 0"),
        (good, values, 3, None, "sequence"),
        (good, values, (3, 3), ["x"], "dims"),
    ]
    for coords, data, shape, dims, message in bad:
        with pytest.raises(aiosdk.ConfigurationError, match=message):
            await grp.write_sparse(coords, data, shape=shape, key="x", dims=dims)  # type: ignore[arg-type]
    assert await grp.count() == 0  # refused before anything was created


def test_the_blocking_facade_reads_sparse_arrays(aiosdk_accounts_sync: Accounts) -> None:
    # The twins exist once aiosdk/_codegen/sync_facade.py lists the data clients.
    SparseClient = pytest.importorskip("aiosdk._sync.sparse").SparseClient

    user = aiosdk_accounts_sync.user("sync")
    client = aiosdk_accounts_sync.client(user)
    grp = client.catalog.create_container(f"{user.username}/sparse")
    sp = grp.write_sparse([[0, 2], [1, 0]], [1.0, 2.0], shape=(3, 2), key="s")
    assert isinstance(sp, SparseClient)
    assert sp.shape == (3, 2)
    got = sp.read()
    assert isinstance(got, COO)
    np.testing.assert_array_equal(got.todense(), [[0.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
