"""The dataset client against the real server: named arrays sharing dimensions written and
read back with their dims and metadata, found again as a dataset, xarray missing as a clear
error, and inconsistent dims as typed errors before anything is created."""

from __future__ import annotations

import numpy as np
import pytest

import aiosdk
from aiosdk._sync.testing import Accounts
from aiosdk.catalog.arrays import AsyncArrayClient
from aiosdk.catalog.containers import AsyncContainer
from aiosdk.catalog.datasets import AsyncDatasetClient
from aiosdk.testing.accounts import AsyncAccounts

pytestmark = pytest.mark.anyio


async def _group(accounts: AsyncAccounts, hint: str) -> AsyncContainer:
    user = await accounts.user(hint)
    client = await accounts.client(user)
    return await client.catalog.create_container(f"{user.username}/datasets")


async def test_a_dataset_round_trips_with_its_dims(aiosdk_accounts: AsyncAccounts) -> None:
    grp = await _group(aiosdk_accounts, "round")
    rng = np.random.default_rng(5)
    temp = rng.normal(size=(24, 5))
    time = np.arange("2024-01-01T00", "2024-01-02T00", dtype="datetime64[h]")
    x = np.array(["a", "bb", "ccc", "d", "e"])
    ds = await grp.write_dataset(
        {
            "temp": (("time", "x"), temp, {"units": "K"}),
            "time": ("time", time),
            "x": (("x",), x),
            "scale": np.float32(2.5),  # a bare (0-d) array: no dims
        },
        key="weather",
        metadata={"site": "roof"},
        specs=["cf"],
    )
    assert isinstance(ds, AsyncDatasetClient)
    assert ds.specs == ("dataset", "cf")
    assert ds.metadata == {"site": "roof"}
    again = await grp["weather"]
    assert isinstance(again, AsyncDatasetClient)
    data = await again.read()
    assert list(data) == ["scale", "temp", "time", "x"]  # the container's (key) order
    np.testing.assert_array_equal(data["temp"], temp)
    np.testing.assert_array_equal(data["time"], time)
    np.testing.assert_array_equal(data["x"], x)
    assert data["scale"].shape == ()
    assert data["scale"] == np.float32(2.5)
    variable = await again["temp"]
    assert isinstance(variable, AsyncArrayClient)
    assert variable.dims == ("time", "x")
    assert variable.metadata == {"units": "K"}
    assert (await again["time"]).dims == ("time",)  # type: ignore[attr-defined]
    assert (await again["scale"]).dims is None  # type: ignore[attr-defined]
    with pytest.raises(aiosdk.MissingDependencyError, match="xarray"):
        await again.read(as_="xarray")
    with pytest.raises(aiosdk.ConfigurationError, match="as_"):
        await again.read(as_="pandas")  # type: ignore[call-overload]


async def test_bad_datasets_are_refused_before_anything_is_created(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    grp = await _group(aiosdk_accounts, "bad")
    two = np.zeros((2, 3))
    bad: list[tuple[object, str]] = [
        ({"a": (("x",), two)}, "2 dimensions but 1 dims"),
        ({"a": (("x", "y"), two), "b": (("y",), np.zeros(4))}, "'y' has length 4"),
        ({"a": (("x", 3), two)}, "dims must be names"),
        ({"a": (("x", "y"), two, {}, "extra")}, "a tuple is"),
        ({"a/b": two}, "invalid key"),
        ([("a", two)], "mapping"),
    ]
    for mapping, message in bad:
        with pytest.raises(aiosdk.ConfigurationError, match=message):
            await grp.write_dataset(mapping, key="d")  # type: ignore[arg-type]
    assert await grp.count() == 0


def test_the_blocking_facade_reads_datasets(aiosdk_accounts_sync: Accounts) -> None:
    # The twins exist once aiosdk/_codegen/sync_facade.py lists the data clients.
    DatasetClient = pytest.importorskip("aiosdk._sync.datasets").DatasetClient

    user = aiosdk_accounts_sync.user("sync")
    client = aiosdk_accounts_sync.client(user)
    grp = client.catalog.create_container(f"{user.username}/datasets")
    ds = grp.write_dataset({"v": (("t",), np.arange(4.0)), "t": (("t",), np.arange(4))}, key="d")
    assert isinstance(ds, DatasetClient)
    assert isinstance(grp["d"], DatasetClient)
    assert sorted(ds) == ["t", "v"]  # a Mapping of its variables' nodes
    data = ds.read()
    np.testing.assert_array_equal(data["v"], np.arange(4.0))
    assert ds["v"].dims == ("t",)
