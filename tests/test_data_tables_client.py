"""The table client against the real server: round trips of every column kind (nulls,
tz-aware timestamps, strings, categoricals, bools, ints, floats) from pandas and from pyarrow,
column selection, partitions in order, appends and replacements, bounded prefetch, exports
parsed back, and bad inputs as typed errors."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv
import pyarrow.ipc
import pyarrow.parquet
import pytest
from faults.proxy import TcpProxy

import aiosdk
from aiosdk._sync.testing import Accounts
from aiosdk.catalog import tables
from aiosdk.catalog.containers import AsyncContainer
from aiosdk.catalog.tables import AsyncTableClient
from aiosdk.server import ServerThread
from aiosdk.testing.accounts import AsyncAccounts

pytestmark = pytest.mark.anyio


async def _group(accounts: AsyncAccounts, hint: str) -> AsyncContainer:
    user = await accounts.user(hint)
    client = await accounts.client(user)
    return await client.catalog.create_container(f"{user.username}/data")


def _make_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    stamps = pd.date_range("2024-01-01", periods=rows, freq="h", tz="Europe/Paris").astype(
        "datetime64[us, Europe/Paris]"
    )
    frame = pd.DataFrame(
        {
            "t": stamps,
            "v": rng.normal(size=rows),
            "i": np.arange(rows, dtype=np.int64),
            "n": pd.array([k if k % 3 else None for k in range(rows)], dtype="Int32"),
            "b": [k % 2 == 0 for k in range(rows)],
            "s": [f"é{k}" if k % 4 else None for k in range(rows)],
            "c": pd.Categorical([("red", "green", None)[k % 3] for k in range(rows)]),
        }
    )
    frame.loc[1, "v"] = np.nan
    frame.loc[2, "t"] = pd.NaT
    return frame


async def _frame(rows: int = 10) -> pd.DataFrame:
    """A DataFrame with a column of each kind, nulls in every column that can hold one (made
    in a worker thread: pandas reads the time zone database)."""
    return await anyio.to_thread.run_sync(_make_frame, rows)


async def _read_file(path: Path) -> bytes:
    return await anyio.Path(path).read_bytes()


# -- round trips -----------------------------------------------------------------------------


async def test_a_dataframe_with_every_kind_of_column_round_trips(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    grp = await _group(aiosdk_accounts, "kinds")
    df = await _frame(50)
    tbl = await grp.write_dataframe(df, key="events", metadata={"source": "test"})
    assert isinstance(tbl, AsyncTableClient)
    assert tbl.columns == list(df.columns)
    assert tbl.npartitions == 1
    assert tbl.metadata == {"source": "test"}
    assert tbl.schema.field("t").type == pa.timestamp("us", tz="Europe/Paris")
    assert pa.types.is_dictionary(tbl.schema.field("c").type)

    pd.testing.assert_frame_equal(await tbl.read(), df)
    again = await grp["events"]
    assert isinstance(again, AsyncTableClient)
    pd.testing.assert_frame_equal(await again.read(), df)
    arrow = await again.read(as_="arrow")
    assert isinstance(arrow, pa.Table)
    assert arrow.equals(pa.Table.from_pandas(df))
    await tbl.update_metadata({"checked": True})  # the writes kept the revision in step
    assert (await tbl.refresh()).metadata == {"source": "test", "checked": True}


async def test_a_pyarrow_table_round_trips_as_arrow(aiosdk_accounts: AsyncAccounts) -> None:
    grp = await _group(aiosdk_accounts, "arrow")
    table = pa.table(
        {
            "x": pa.array([1, None, 3], pa.int16()),
            "y": pa.array(["a", None, "ccc"], pa.string()),
            "z": pa.array([1.5, 2.5, None], pa.float32()),
            "d": pa.array([None, 10, 20], pa.duration("ms")),
            "l": pa.array([[1, 2], None, []], pa.list_(pa.int64())),
        }
    )
    tbl = await grp.write_dataframe(table, key="arrow", partitions=2)
    assert tbl.npartitions == 2
    assert (await tbl.read(as_="arrow")).equals(table)
    assert (await tbl.read(["y", "x"], as_="arrow")).equals(table.select(["y", "x"]))
    empty = await grp.write_dataframe(table.slice(0, 0), key="empty")
    assert empty.npartitions == 1
    assert (await empty.read(as_="arrow")).equals(table.slice(0, 0))
    assert len(await empty.read()) == 0


async def test_columns_selection_and_partitions_in_order(aiosdk_accounts: AsyncAccounts) -> None:
    grp = await _group(aiosdk_accounts, "parts")
    df = await _frame(103)
    tbl = await grp.write_dataframe(df, key="p", partitions=7)
    assert tbl.npartitions == 7
    assert tbl.structure()["nrows"] == [15, 15, 15, 15, 15, 14, 14]  # type: ignore[index]
    whole = await tbl.read(columns=["v", "t"])
    pd.testing.assert_frame_equal(whole, df[["v", "t"]])
    offset = 0
    for i, rows in enumerate([15, 15, 15, 15, 15, 14, 14]):
        part = await tbl.read_partition(i, columns=["i", "s"])
        expected = df[["i", "s"]].iloc[offset : offset + rows].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, expected)
        offset += rows
    last = await tbl.read_partition(-1, as_="arrow")
    assert last.column("i").to_pylist() == list(range(89, 103))
    seen = [part async for part in tbl.iter_partitions(columns=["i"], concurrency=3)]
    assert [int(part["i"].iloc[0]) for part in seen] == [0, 15, 30, 45, 60, 75, 89]
    joined = pd.concat(seen, ignore_index=True)
    pd.testing.assert_frame_equal(joined, df[["i"]])
    arrow_parts = [p async for p in tbl.iter_partitions(as_="arrow")]
    assert pa.concat_tables(arrow_parts).num_rows == 103


async def test_partitions_none_splits_a_large_table_near_16_mib(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    grp = await _group(aiosdk_accounts, "split")
    rows = 600_000  # 5 float64 columns: 24 MB, so two partitions
    table = pa.table({f"c{k}": np.random.default_rng(k).random(rows) for k in range(5)})
    tbl = await grp.write_dataframe(table, key="big")
    assert tbl.npartitions == 2
    assert (await tbl.read(as_="arrow")).equals(table)


async def test_append_and_write_partitions(aiosdk_accounts: AsyncAccounts) -> None:
    grp = await _group(aiosdk_accounts, "append")
    df = await _frame(20)
    tbl = await grp.write_dataframe(df.iloc[:10], key="grow", partitions=1)
    assert await tbl.append_partition(df.iloc[10:15]) == 1
    assert await tbl.append_partition(pa.Table.from_pandas(df.iloc[15:])) == 2
    assert tbl.npartitions == 3
    pd.testing.assert_frame_equal(await tbl.read(), df)
    fresh = await grp["grow"]
    assert isinstance(fresh, AsyncTableClient)
    assert fresh.npartitions == 3
    assert fresh.revision == tbl.revision
    assert fresh.structure()["nrows"] == [10, 5, 5]  # type: ignore[index]

    await tbl.write_partition(df.iloc[:2], 0)  # replace
    await tbl.write_partition(df.iloc[:1], 3)  # the next one
    assert tbl.structure()["nrows"] == [2, 5, 5, 1]  # type: ignore[index]
    expected = pd.concat([df.iloc[:2], df.iloc[10:], df.iloc[:1]], ignore_index=True)
    pd.testing.assert_frame_equal(await tbl.read(), expected)
    await tbl.update_metadata({"n": 1})  # the local revision followed every write
    with pytest.raises(aiosdk.BadRequestError):
        await tbl.write_partition(df.iloc[:1], 9)  # neither an existing partition nor the next


async def test_partitions_with_their_own_categories_read_back_whole(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    grp = await _group(aiosdk_accounts, "cats")
    df = await _frame(30)
    tbl = await grp.write_dataframe(df.iloc[:10], key="cats", partitions=2)
    more = df.iloc[10:].copy()
    more["c"] = pd.Categorical(["blue", None, "red"] * 6 + ["green"] * 2)  # other categories
    assert await tbl.append_partition(more) == 2
    whole = await tbl.read(as_="arrow")
    expected = pa.concat_tables(
        [pa.Table.from_pandas(df.iloc[:5]), pa.Table.from_pandas(df.iloc[5:10]),
         pa.Table.from_pandas(more)]
    )  # fmt: skip
    assert whole.to_pylist() == expected.to_pylist()
    frame = await tbl.read()
    assert list(frame["c"].astype(object).where(frame["c"].notna(), None)) == [
        *df["c"].iloc[:10].astype(object).where(df["c"].iloc[:10].notna(), None),
        *more["c"].astype(object).where(more["c"].notna(), None),
    ]
    pd.testing.assert_frame_equal(
        frame.drop(columns="c"),
        pd.concat([df.iloc[:10], more]).drop(columns="c").reset_index(drop=True),
    )


# -- a broken connection ---------------------------------------------------------------------


@pytest.fixture
def proxy(server: ServerThread) -> Iterator[TcpProxy]:
    """A loopback relay to the server (in a thread of its own): its ``cut_after`` resets the
    connection carrying an answer, and ``sent`` keeps the requests (what the client sent), to
    see whether a retry asked for a ``Range``."""
    address = urlsplit(server.http_url)
    relay = TcpProxy(address.hostname or "127.0.0.1", address.port or 80).start()
    yield relay
    relay.stop()


@pytest.mark.parametrize("mode", ["forceful", "disabled"])
async def test_a_whole_read_cut_off_resumes_under_forceful(
    aiosdk_accounts: AsyncAccounts, proxy: TcpProxy, mode: str
) -> None:
    user = await aiosdk_accounts.user("cut")
    owner = await aiosdk_accounts.client(user)
    grp = await owner.catalog.create_container(f"{user.username}/data")
    table = pa.table({f"c{k}": np.random.default_rng(k).random(200_000) for k in range(4)})
    await grp.write_dataframe(table, key="big", partitions=3)
    async with aiosdk.AsyncClient(proxy.url, retry_mode=mode) as client:
        await client.login(username=user.username, password=user.password.reveal())
        tbl = await client.catalog.get(f"{user.username}/data/big")
        assert isinstance(tbl, AsyncTableClient)
        proxy.cut_after(2_500_000)  # within the body (6.4 MB), past its head
        if mode == "disabled":
            with pytest.raises(aiosdk.TransportError):
                await tbl.read(as_="arrow")
        else:
            assert (await tbl.read(as_="arrow")).equals(table)
            assert b"\r\nrange: bytes=" in proxy.sent.lower()  # resumed, not sent again
    assert proxy.cuts == 1


# -- prefetch --------------------------------------------------------------------------------


async def test_iter_partitions_fetches_at_most_concurrency_ahead(
    aiosdk_accounts: AsyncAccounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    grp = await _group(aiosdk_accounts, "prefetch")
    tbl = await grp.write_dataframe(pd.DataFrame({"k": range(12)}), key="k", partitions=12)
    started: list[int] = []
    fetch = tables.fetch_arrow

    async def counting(ctx: Any, path: str, params: Any = None, compression: Any = None) -> Any:
        started.append(params["partition"])
        return await fetch(ctx, path, params, compression)

    monkeypatch.setattr(tables, "fetch_arrow", counting)
    taken = []
    async for part in tbl.iter_partitions(concurrency=3):
        taken.append(int(part["k"].iloc[0]))
        await anyio.sleep(0.05)  # a slow consumer: the fetches wait for it
        assert len(started) <= len(taken) + 3
    assert taken == list(range(12))
    assert started == list(range(12))

    started.clear()
    parts = tbl.iter_partitions(concurrency=2)
    async for _ in parts:
        break
    await parts.aclose()  # type: ignore[attr-defined]
    assert len(started) <= 3


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_tables_under_trio(aiosdk_accounts: AsyncAccounts, tmp_path: Path) -> None:
    grp = await _group(aiosdk_accounts, "trio")
    table = pa.table({"k": list(range(40)), "s": [str(k) for k in range(40)]})
    tbl = await grp.write_dataframe(table, key="t", partitions=4)
    assert (await tbl.read(as_="arrow")).equals(table)
    parts = [part async for part in tbl.iter_partitions(as_="arrow", concurrency=2)]
    assert pa.concat_tables(parts).equals(table)
    assert await tbl.append_partition(table.slice(0, 3)) == 4
    await tbl.export(tmp_path / "t.arrow")
    data = await _read_file(tmp_path / "t.arrow")
    assert pyarrow.ipc.open_stream(pa.py_buffer(data)).read_all().num_rows == 43


# -- export ----------------------------------------------------------------------------------


async def test_export_parquet_csv_arrow_parse_back(
    aiosdk_accounts: AsyncAccounts, tmp_path: Path
) -> None:
    grp = await _group(aiosdk_accounts, "export")
    table = pa.table({"a": [1, 2, 3, None], "b": ["x", "y", None, "z"], "c": [0.5, 1.5, 2.5, 3.5]})
    tbl = await grp.write_dataframe(table, key="e", partitions=2)

    await tbl.export(tmp_path / "e.parquet")
    got = pyarrow.parquet.read_table(io.BytesIO(await _read_file(tmp_path / "e.parquet")))
    assert got.equals(table)

    await tbl.export(str(tmp_path / "e.arrow"))
    data = await _read_file(tmp_path / "e.arrow")
    assert pyarrow.ipc.open_stream(pa.py_buffer(data)).read_all().equals(table)

    await tbl.export(tmp_path / "sub.csv", columns=["c", "a"])
    csv = pyarrow.csv.read_csv(io.BytesIO(await _read_file(tmp_path / "sub.csv")))
    assert csv.column("c").to_pylist() == [0.5, 1.5, 2.5, 3.5]
    assert csv.column("a").to_pylist() == [1, 2, 3, None]

    buffer = io.BytesIO()
    await tbl.export(buffer, "application/vnd.apache.parquet")  # a binary file, by media type
    assert pyarrow.parquet.read_table(io.BytesIO(buffer.getvalue())).equals(table)

    with pytest.raises(aiosdk.ConfigurationError, match="suffix"):
        await tbl.export(io.BytesIO())
    with pytest.raises(aiosdk.StatusError) as caught:
        await tbl.export(tmp_path / "e.weird")
    assert caught.value.status_code == 406
    assert not await anyio.Path(tmp_path / "e.weird").exists()  # a failed export leaves no file


# -- bad inputs ------------------------------------------------------------------------------


async def test_bad_inputs_are_typed_errors(aiosdk_accounts: AsyncAccounts) -> None:
    grp = await _group(aiosdk_accounts, "bad")
    with pytest.raises(aiosdk.ConfigurationError, match="DataFrame"):
        await grp.write_dataframe({"a": [1, 2]}, key="dict")
    with pytest.raises(aiosdk.ConfigurationError, match="Arrow"):
        await grp.write_dataframe(pd.DataFrame({"a": [1, "x", 2.5]}), key="mixed")
    with pytest.raises(aiosdk.ConfigurationError, match="partitions"):
        await grp.write_dataframe(pd.DataFrame({"a": [1]}), key="zero", partitions=0)
    assert await grp.count() == 0  # nothing was created

    tbl = await grp.write_dataframe(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), key="t")
    with pytest.raises(aiosdk.UnprocessableEntityError, match="schema"):
        await tbl.append_partition(pd.DataFrame({"a": [1.5], "b": ["z"]}))  # a: float, not int
    with pytest.raises(aiosdk.UnprocessableEntityError, match="schema"):
        await tbl.append_partition(pd.DataFrame({"b": ["z"], "a": [3]}))  # other order
    with pytest.raises(aiosdk.ConfigurationError, match="no column"):
        await tbl.read(columns=["nope"])
    with pytest.raises(aiosdk.ConfigurationError, match="list of column names"):
        await tbl.read(columns="a")
    with pytest.raises(aiosdk.ConfigurationError, match="as_"):
        await tbl.read(as_="polars")  # type: ignore[call-overload]
    with pytest.raises(aiosdk.BadRequestError):
        await tbl.read_partition(5)
    with pytest.raises(aiosdk.ConfigurationError):
        await tbl.read_partition("0")  # type: ignore[call-overload]
    assert tbl.npartitions == 1  # the refused appends changed nothing
    pd.testing.assert_frame_equal(await tbl.read(), pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))


# -- the blocking facade ---------------------------------------------------------------------


def test_the_blocking_facade_reads_and_writes_tables(aiosdk_accounts_sync: Accounts) -> None:
    # The twins exist once aiosdk/_codegen/sync_facade.py lists the data clients.
    TableClient = pytest.importorskip("aiosdk._sync.tables").TableClient

    user = aiosdk_accounts_sync.user("sync")
    client = aiosdk_accounts_sync.client(user)
    grp = client.catalog.create_container(f"{user.username}/data")
    df = pd.DataFrame({"k": range(30), "s": [str(k) for k in range(30)]})
    tbl = grp.write_dataframe(df, key="t", partitions=3)
    assert isinstance(tbl, TableClient)
    assert isinstance(grp["t"], TableClient)
    assert tbl.columns == ["k", "s"]
    pd.testing.assert_frame_equal(tbl.read(), df)
    assert tbl.read(["s"], as_="arrow").column_names == ["s"]
    parts = list(tbl.iter_partitions(concurrency=2))
    assert [len(part) for part in parts] == [10, 10, 10]
    assert tbl.append_partition(df.iloc[:5]) == 3
    for part in tbl.iter_partitions(as_="arrow"):
        assert part.num_rows == 10
        break  # dropping the iterator closes it
    assert len(tbl.read_partition(-1)) == 5


def _heads(sent: bytes, start: bytes) -> list[bytes]:
    """The heads of the requests in ``sent`` that begin with ``start``, lowercased."""
    heads, at = [], sent.find(start)
    while at >= 0:
        heads.append(sent[at : sent.index(b"\r\n\r\n", at)].lower())
        at = sent.find(start, at + 1)
    return heads


async def test_partition_puts_go_without_an_idempotency_key_and_appends_with_one(
    aiosdk_accounts: AsyncAccounts, proxy: TcpProxy
) -> None:
    user = await aiosdk_accounts.user("keys")
    owner = await aiosdk_accounts.client(user)
    await owner.catalog.create_container(f"{user.username}/data")
    table = pa.table({"x": np.arange(30), "y": np.arange(30) / 3})
    async with aiosdk.AsyncClient(proxy.url, retry_mode="forceful") as client:
        await client.login(username=user.username, password=user.password.reveal())
        grp = await client.catalog.get(f"{user.username}/data")
        assert isinstance(grp, AsyncContainer)
        tbl = await grp.write_dataframe(table, key="t", partitions=3)
        await tbl.write_partition(table.slice(0, 5), 1)
        assert await tbl.append_partition(table.slice(5, 5)) == 3
        assert (await tbl.read(as_="arrow")).num_rows == 30  # 10 + 5 + 10 + 5
    puts = _heads(bytes(proxy.sent), b"PUT /api/v1/table/partition/")
    posts = _heads(bytes(proxy.sent), b"POST /api/v1/table/partition/")
    assert len(puts) == 4
    assert len(posts) == 1
    assert not any(b"\r\nidempotency-key:" in head for head in puts)
    assert b"\r\nidempotency-key:" in posts[0]
