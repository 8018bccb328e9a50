"""Tables as DataFrames (aiosdk.catalog.frames): what pyarrow's to_pandas gives, writable, with
numeric columns as views of the buffer the table was received into."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")

from aiosdk.catalog.frames import to_pandas  # noqa: E402
from aiosdk.testing.accounts import AsyncAccounts  # noqa: E402


def received(table: Any) -> Any:
    """``table`` as a read decodes it: from one writable buffer holding its IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    stream = sink.getvalue()
    buffer = pa.allocate_buffer(stream.size)
    memoryview(buffer).cast("B")[:] = memoryview(stream).cast("B")
    return pa.ipc.open_stream(buffer).read_all()


def frames() -> dict[str, Any]:
    n = 7
    rng = np.random.default_rng(3)
    return {
        "floats": pd.DataFrame({"a": rng.random(n), "b": rng.random(n).astype("float32")}),
        "ints": pd.DataFrame(
            {f"{t}": np.arange(n, dtype=t) for t in ("int8", "uint16", "int32", "uint64")}
        ),
        "mixed": pd.DataFrame(
            {
                "t": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
                "v": rng.random(n),
                "s": [f"s{i}" for i in range(n)],
                "c": pd.Categorical(list("abcabca")),
                "ok": [True, False] * 3 + [True],
                "i": np.arange(n),
            }
        ),
        "nulls": pd.DataFrame({"x": [1.0, None, 3.0, 4.0, None, 6.0, 7.0], "y": np.arange(n)}),
        "nullable ints": pd.DataFrame({"x": pd.array(range(n), dtype="Int64"), "y": np.ones(n)}),
        "named index": pd.DataFrame(
            {"v": rng.random(n)}, index=pd.Index([f"k{i}" for i in range(n)], name="key")
        ),
        "numeric index": pd.DataFrame(
            {"v": rng.random(n)}, index=pd.Index(np.arange(10, 10 + n), name="i")
        ),
        "stepped range": pd.DataFrame({"v": rng.random(n)}, index=pd.RangeIndex(5, 5 + 2 * n, 2)),
        "attrs": pd.DataFrame({"v": rng.random(n)}).pipe(lambda d: d.attrs.update(u=1) or d),
        "dates": pd.DataFrame({"d": [dt.date(2026, 1, i + 1) for i in range(n)], "v": range(n)}),
        "empty": pd.DataFrame({"a": np.zeros(0), "b": np.zeros(0, dtype="int64")}),
    }


@pytest.mark.parametrize("name", list(frames()))
def test_the_frame_is_what_to_pandas_gives(name: str) -> None:
    table = received(pa.Table.from_pandas(frames()[name]))
    expected = table.to_pandas()
    got = to_pandas(table)
    pd.testing.assert_frame_equal(got, expected)
    assert got.attrs == expected.attrs


def test_tables_without_pandas_metadata_and_sliced_columns() -> None:
    table = received(pa.table({"a": np.arange(10.0), "b": np.arange(10)})).slice(3, 4)
    pd.testing.assert_frame_equal(to_pandas(table), table.to_pandas())
    assert list(to_pandas(table)["b"]) == [3, 4, 5, 6]


def test_numeric_columns_are_writable_views_of_the_received_buffer() -> None:
    table = received(pa.table({"a": np.arange(4.0), "s": ["w", "x", "y", "z"]}))
    frame = to_pandas(table)
    frame.iloc[0, 0] = 9.0
    frame.loc[1, "a"] = 8.0
    frame.iloc[2:, 0] *= 2
    frame.loc[3, "s"] = "q"
    assert list(frame["a"]) == [9.0, 8.0, 4.0, 6.0]
    assert list(frame["s"]) == ["w", "x", "y", "q"]


def test_a_table_decoded_from_read_only_bytes_is_converted_by_pyarrow() -> None:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("a", pa.float64())])) as writer:
        writer.write_table(pa.table({"a": np.arange(3.0)}))
    table = pa.ipc.open_stream(sink.getvalue().to_pybytes()).read_all()  # bytes: read-only
    frame = to_pandas(table)
    pd.testing.assert_frame_equal(frame, table.to_pandas())
    frame.iloc[0, 0] = 5.0  # pyarrow copied: writable, and the table is unchanged
    assert table.column("a")[0].as_py() == 0.0


def test_duplicate_column_names_are_left_to_pyarrow() -> None:
    table = received(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["a", "a"]))
    pd.testing.assert_frame_equal(to_pandas(table), table.to_pandas())


@pytest.mark.anyio
async def test_a_table_read_from_the_server_is_writable(aiosdk_accounts: AsyncAccounts) -> None:
    user = await aiosdk_accounts.user("frames")
    client = await aiosdk_accounts.client(user)
    home = await client.catalog.create_container(f"{user.username}/data")
    df = pd.DataFrame({"t": np.arange(1000), "v": np.random.default_rng(1).random(1000)})
    tbl = await home.write_dataframe(df, key="writable")
    got = await tbl.read()
    pd.testing.assert_frame_equal(got, df)
    got.iloc[0, 1] = -1.0
    got.loc[5, "t"] = 42
    assert got.iloc[0, 1] == -1.0
    assert got.loc[5, "t"] == 42
    pd.testing.assert_frame_equal(await tbl.read(), df)  # a new read: the stored data
