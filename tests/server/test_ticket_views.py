"""Server-side views (:mod:`aiosdk.server.tickets.views`) of tables and arrays written over the
real server's HTTP API: results checked against pandas and numpy computed locally, written in
a node's layout (a node declared with a result's structure reads it through the normal data
routes), bad queries refused with clear messages before anything is written."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow  # type: ignore[import-untyped]
import pyarrow.compute  # type: ignore[import-untyped]
import pytest

from aiosdk import proto
from aiosdk.server import Server
from aiosdk.server.data import tables
from aiosdk.server.data.arrays import ArrayData
from aiosdk.server.data.store import BlobStore
from aiosdk.server.data.structures import ArrayStructure
from aiosdk.server.errors import InvalidRequestError
from aiosdk.server.storage import new_id
from aiosdk.server.tickets import views

from ._arrays import new_array, put_all, read_full
from ._tables import append_all, encoded_schema, new_table, parse
from .conftest import create, get, url

pytestmark = pytest.mark.anyio

UTC = datetime.timezone.utc


def events(start: int, rows: int) -> Any:
    """Rows of every kind a filter looks at, nulls in each column."""
    ids = list(range(start, start + rows))

    def nulled(values: list[Any]) -> list[Any]:
        return [None if i % 5 == 3 else v for i, v in zip(ids, values, strict=True)]

    base = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    return pyarrow.table(
        {
            "i": pyarrow.array(nulled(ids), pyarrow.int64()),
            "v": pyarrow.array(nulled([(i * 37) % 11 / 2 for i in ids]), pyarrow.float64()),
            "s": pyarrow.array(nulled([f"run_{i % 4}" for i in ids]), pyarrow.string()),
            "ok": pyarrow.array(nulled([i % 3 == 0 for i in ids]), pyarrow.bool_()),
            "t": pyarrow.array(
                nulled([base + datetime.timedelta(hours=i) for i in ids]),
                pyarrow.timestamp("us", tz="UTC"),
            ),
            "cat": pyarrow.array(
                nulled([["red", "green", "blue"][i % 3] for i in ids]), pyarrow.string()
            ).dictionary_encode(),
        }
    )


PARTS = [events(0, 17), events(17, 0), events(17, 9), events(26, 14)]
SOURCE = pyarrow.concat_tables(PARTS)


@pytest.fixture(scope="module")
async def blobs(server: Server) -> BlobStore:
    """The running server's blob store (its directory, opened again)."""
    return await BlobStore.directory(server.data_dir / "blobs")


@pytest.fixture
async def events_table(home: tuple[str, httpx.AsyncClient]) -> views.DataRef:
    """A table node of :data:`PARTS` (one of them empty) written over the API."""
    name, http = home
    await new_table(http, name, "events", SOURCE.schema)
    await append_all(http, f"{name}/events", PARTS)
    node = await get(http, f"{name}/events")
    return views.DataRef("table", node["id"], node["structure"])


def table_view(
    where: list[dict[str, Any]] | None = None,
    sort: Sequence[tuple[str, bool]] = (),
    **fields: Any,
) -> views.TableQuery:
    message = proto.TableView(
        where_json=json.dumps(where) if where else "",
        sort=[proto.SortKey(column=column, descending=down) for column, down in sort],
        **fields,
    )
    return views.table_query(message)


async def stored_table(blobs: BlobStore, result_id: str, structure: dict[str, Any]) -> Any:
    """The table stored under ``result_id``, its partitions read as the routes read them."""
    parts = []
    for index in range(structure["npartitions"]):
        stream = await blobs.get(tables.partition_key(result_id, index))
        assert stream is not None
        part = tables.read_stream(stream)
        assert part.num_rows == structure["nrows"][index]
        parts.append(part)
    schema = tables.decode_schema(structure["arrow_schema"])
    assert all(part.schema.equals(schema, check_metadata=True) for part in parts)
    return pyarrow.concat_tables(parts) if parts else schema.empty_table()


def frame(table: Any) -> pd.DataFrame:
    """``table`` as pandas has it, dictionary columns as their values."""
    df = table.to_pandas()
    for column in df.columns:
        if isinstance(df[column].dtype, pd.CategoricalDtype):
            df[column] = df[column].astype(object).where(df[column].notna(), None)
    return df.reset_index(drop=True)


def sorted_frame(df: pd.DataFrame, keys: list[tuple[str, bool]]) -> pd.DataFrame:
    """``df`` sorted by ``keys`` as the catalog sorts: nulls last ascending, first descending,
    ties in their order (stable sorts, the least significant key first)."""
    for column, descending in reversed(keys):
        df = df.sort_values(
            column,
            ascending=not descending,
            na_position="first" if descending else "last",
            kind="stable",
        )
    return df


EXPECTED = frame(SOURCE)
T10 = datetime.datetime(2024, 1, 1, 10, tzinfo=UTC)
CASES: list[tuple[str, dict[str, Any], Any]] = [
    ("all", {}, lambda df: df),
    ("eq", {"where": [{"op": "eq", "key": "v", "value": 2}]}, lambda df: df[df.v == 2.0]),
    ("eq null", {"where": [{"op": "eq", "key": "i", "value": None}]}, lambda df: df[df.i.isna()]),
    (
        "noteq matches nulls",
        {"where": [{"op": "noteq", "key": "s", "value": "run_1"}]},
        lambda df: df[~(df.s == "run_1")],
    ),
    (
        "ranges",
        {"where": [{"op": "ge", "key": "v", "value": 1.5}, {"op": "lt", "key": "i", "value": 30}]},
        lambda df: df[(df.v >= 1.5) & (df.i < 30)],
    ),
    (
        "string order",
        {"where": [{"op": "gt", "key": "s", "value": "run_1"}]},
        lambda df: df[df.s.notna() & (df.s > "run_1")],
    ),
    (
        "timestamps",
        {"where": [{"op": "le", "key": "t", "value": "2024-01-01T10:00:00Z"}]},
        lambda df: df[df.t <= pd.Timestamp(T10)],
    ),
    (
        "booleans",
        {"where": [{"op": "eq", "key": "ok", "value": True}]},
        lambda df: df[df.ok == True],  # noqa: E712
    ),
    (
        "in with null",
        {"where": [{"op": "in", "key": "i", "values": [1, 2.0, 2.5, 33, None]}]},
        lambda df: df[df.i.isin([1, 2, 33]) | df.i.isna()],
    ),
    (
        "notin",
        {"where": [{"op": "notin", "key": "cat", "values": ["red", "blue"]}]},
        lambda df: df[~df.cat.isin(["red", "blue"])],
    ),
    (
        "dictionary eq",
        {"where": [{"op": "eq", "key": "cat", "value": "green"}]},
        lambda df: df[df.cat == "green"],
    ),
    (
        "keypresent",
        {"where": [{"op": "keypresent", "key": "v", "exists": False}]},
        lambda df: df[df.v.isna()],
    ),
    (
        "substring",
        {"where": [{"op": "contains", "key": "s", "value": "n_2"}]},
        lambda df: df[df.s.notna() & df.s.str.contains("n_2", regex=False)],
    ),
    (
        "like",
        {"where": [{"op": "like", "key": "s", "pattern": "run\\_%3"}]},
        lambda df: df[df.s.notna() & df.s.str.fullmatch(r"run_.*3")],
    ),
    (
        "regex",
        {"where": [{"op": "regex", "key": "s", "pattern": "N_[12]$", "case_sensitive": False}]},
        lambda df: df[df.s.notna() & df.s.str.contains(r"(?i)n_[12]$")],
    ),
    (
        "sort",
        {"sort": [("s", True), ("v", False)]},
        lambda df: sorted_frame(df, [("s", True), ("v", False)]),
    ),
    (
        "sort a dictionary column",
        {"sort": [("cat", False), ("i", True)]},
        lambda df: sorted_frame(df, [("cat", False), ("i", True)]),
    ),
    (
        "where, sort, head, columns",
        {
            "where": [{"op": "gt", "key": "v", "value": 0}],
            "sort": [("v", True)],
            "head": 5,
            "columns": ["t", "v"],
        },
        lambda df: sorted_frame(df[df.v > 0], [("v", True)]).head(5)[["t", "v"]],
    ),
    (
        "tail of a sort by a column not kept",
        {"sort": [("i", False)], "tail": 4, "columns": ["s"]},
        lambda df: sorted_frame(df, [("i", False)]).tail(4)[["s"]],
    ),
    ("head past the end", {"head": 1000}, lambda df: df),
    ("tail 0", {"tail": 0}, lambda df: df.head(0)),
    ("no row", {"where": [{"op": "gt", "key": "i", "value": 10**6}]}, lambda df: df.head(0)),
]


@pytest.mark.parametrize(("query", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_table_views_are_what_pandas_computes(
    blobs: BlobStore, events_table: views.DataRef, query: dict[str, Any], expected: Any
) -> None:
    result_id = new_id()
    family, structure = await views.compute_view(
        blobs, events_table, table_view(**query), result_id
    )
    assert family == "table"
    result = await stored_table(blobs, result_id, structure)
    want = expected(EXPECTED).reset_index(drop=True)
    assert structure["columns"] == list(want.columns)
    assert sum(structure["nrows"]) == len(want)
    pd.testing.assert_frame_equal(
        frame(result), want, check_dtype=False
    )  # (ints with nulls: floats)
    kept = SOURCE.schema if "columns" not in query else None
    if kept is not None:  # the source's schema, dictionary and metadata included
        assert result.schema.equals(kept, check_metadata=True)
    if len(want) == 0:
        assert structure["npartitions"] == 0


async def test_a_table_result_reads_through_the_data_routes(
    blobs: BlobStore,
    events_table: views.DataRef,
    home: tuple[str, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(views, "PARTITION_BYTES", 300)  # several partitions
    query = table_view([{"op": "noteq", "key": "cat", "value": "red"}], columns=["cat", "i", "t"])
    _, structure = await views.compute_view(blobs, events_table, query, new_id())
    assert structure["npartitions"] > 2
    # A node declared with the result's schema and partitions, its bytes the view's:
    name, http = home
    node = await new_table(
        http,
        name,
        "view",
        tables.decode_schema(structure["arrow_schema"]),
        npartitions=structure["npartitions"],
    )
    await views.compute_view(blobs, events_table, query, node["id"])
    response = await http.get(f"/table/full/{url(name)}/view")
    assert response.status_code == 200, response.text
    assert "etag" in response.headers  # the stored partitions joined as they are
    want = EXPECTED[~(EXPECTED.cat == "red")][["cat", "i", "t"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(frame(parse(response.content)), want, check_dtype=False)
    last = structure["npartitions"] - 1
    response = await http.get(f"/table/partition/{url(name)}/view", params={"partition": last})
    assert parse(response.content).num_rows == structure["nrows"][last]
    exported = await http.get(f"/table/full/{url(name)}/view", params={"format": "csv"})
    assert exported.status_code == 200, exported.text
    assert len(exported.text.splitlines()) == len(want) + 1


async def test_list_columns_contain_elements(
    blobs: BlobStore, home: tuple[str, httpx.AsyncClient]
) -> None:
    name, http = home
    tags = pyarrow.table(
        {
            "n": [0, 1, 2, 3, 4, 5],
            "tags": [["a", "b"], ["b"], None, [], ["c", None], ["ab"]],
        }
    )
    await new_table(http, name, "tags", tags.schema)
    await append_all(http, f"{name}/tags", [tags.slice(0, 3), tags.slice(3)])
    node = await get(http, f"{name}/tags")
    source = views.DataRef("table", node["id"], node["structure"])

    async def rows(value: Any) -> list[int]:
        query = table_view([{"op": "contains", "key": "tags", "value": value}], columns=["n"])
        result_id = new_id()
        _, structure = await views.compute_view(blobs, source, query, result_id)
        found: list[int] = (await stored_table(blobs, result_id, structure))["n"].to_pylist()
        return found

    assert await rows("b") == [0, 1]  # an element, never a substring ("ab")
    assert await rows("ab") == [5]
    assert await rows(None) == [4]
    with pytest.raises(InvalidRequestError, match="it takes a string, not 1"):
        await rows(1)
    with pytest.raises(InvalidRequestError, match="no order"):
        await views.compute_view(blobs, source, table_view(sort=[("tags", False)]), new_id())


ODD = pyarrow.table(
    {
        "d": pyarrow.array([Decimal("1.5"), None, Decimal("2.25")], pyarrow.decimal128(5, 2)),
        "u": pyarrow.array([1, 2, 255], pyarrow.uint8()),
        "h": pyarrow.array([0.5, 1, None], pyarrow.float16()),
        "ls": pyarrow.array(["a", "b", None], pyarrow.large_string()),
        "sv": pyarrow.array(["x", None, "z"], pyarrow.string_view()),
        "n": pyarrow.nulls(3),
        "day": pyarrow.array([0, 1, 2], pyarrow.date32()),
        "pair": pyarrow.array([[1, 2], [3, 4], None], pyarrow.list_(pyarrow.int8(), 2)),
        "st": pyarrow.array([{"a": 1}, None, {"a": 2}]),
    }
)
ODD_CASES: list[tuple[list[dict[str, Any]], list[int]]] = [
    ([{"op": "eq", "key": "d", "value": 2.25}], [2]),
    ([{"op": "in", "key": "d", "values": [1.5, 2.25]}], [0, 2]),
    ([{"op": "in", "key": "u", "values": [300, 255, -1]}], [2]),
    ([{"op": "gt", "key": "u", "value": -1}], [0, 1, 2]),
    ([{"op": "lt", "key": "h", "value": 0.75}], [0]),
    ([{"op": "ge", "key": "ls", "value": "b"}], [1]),
    ([{"op": "in", "key": "sv", "values": ["z", None]}], [1, 2]),
    ([{"op": "like", "key": "sv", "pattern": "_"}], [0, 2]),
    ([{"op": "eq", "key": "n", "value": None}], [0, 1, 2]),
    ([{"op": "ge", "key": "day", "value": "1970-01-02"}], [1, 2]),
    ([{"op": "contains", "key": "pair", "value": 4}], [1]),
    ([{"op": "keypresent", "key": "st"}], [0, 2]),
]


@pytest.mark.parametrize(("where", "rows"), ODD_CASES)
async def test_views_of_columns_of_other_types(
    blobs: BlobStore, home: tuple[str, httpx.AsyncClient], where: list[Any], rows: list[int]
) -> None:
    name, http = home
    await new_table(http, name, "odd", ODD.schema)
    await append_all(http, f"{name}/odd", [ODD])
    node = await get(http, f"{name}/odd")
    source = views.DataRef("table", node["id"], node["structure"])
    result_id = new_id()
    query = table_view(where, sort=[("sv", True)])
    _, structure = await views.compute_view(blobs, source, query, result_id)
    result = await stored_table(blobs, result_id, structure)
    # (string_view, which pyarrow cannot take rows of, is large_string in the result)
    assert result.schema.field("sv").type == pyarrow.large_string()
    want = ODD.cast(result.schema).take(rows)
    nulls_first = pyarrow.compute.sort_indices(want, sort_keys=[("sv", "descending", "at_start")])
    assert result.equals(want.take(nulls_first))


REFUSED_TABLE_VIEWS: list[tuple[dict[str, Any], str]] = [
    ({"where": [{"op": "eq", "key": "nope", "value": 1}]}, "no column 'nope'"),
    ({"where": [{"op": "eq", "key": "i.x", "value": 1}]}, r"no column 'i\.x' \(a key names one"),
    ({"where": [{"op": "eq", "key": "i", "value": "1"}]}, "holds int64: it takes a number"),
    ({"where": [{"op": "eq", "key": "s", "value": True}]}, "it takes a string"),
    ({"where": [{"op": "lt", "key": "ok", "value": 1}]}, "holds bool: it takes no ordered"),
    ({"where": [{"op": "ge", "key": "t", "value": "soon"}]}, "'soon' is not one of its values"),
    ({"where": [{"op": "like", "key": "i", "pattern": "1%"}]}, "like needs a string column"),
    ({"where": [{"op": "contains", "key": "v", "value": 1}]}, "contains needs a list column"),
    ({"where": [{"op": "regex", "key": "s", "pattern": "(a)\\1"}]}, "RE2"),
    ({"columns": ["i", "missing"]}, "no column 'missing'"),
    ({"sort": [("missing", False)]}, "no column 'missing'"),
]


@pytest.mark.parametrize(("query", "message"), REFUSED_TABLE_VIEWS)
async def test_views_that_do_not_fit_the_table_are_refused(
    blobs: BlobStore, events_table: views.DataRef, query: dict[str, Any], message: str
) -> None:
    result_id = new_id()
    with pytest.raises(InvalidRequestError, match=message):
        await views.compute_view(blobs, events_table, table_view(**query), result_id)
    assert await blobs.get(tables.partition_key(result_id, 0)) is None


MALFORMED_TABLE_VIEWS: list[tuple[dict[str, Any], str]] = [
    ({"where_json": "[{"}, "filters is not valid JSON"),
    ({"where_json": '[{"op": "nope", "key": "a"}]'}, "unknown op 'nope'"),
    ({"where_json": '[{"op": "fulltext", "text": "x"}]'}, r"where\[0\] \(fulltext\) is about"),
    ({"where_json": '[{"op": "specs", "include": ["x"]}]'}, "about catalog nodes"),
    ({"where_json": '[{"op": "structure_family", "value": "x"}]'}, "about catalog nodes"),
    ({"head": 1, "tail": 1}, "head or tail, not both"),
    ({"columns": ["a", "b", "a"]}, "'a' more than once"),
    ({"columns": [""]}, "must not be empty"),
    ({"sort": [proto.SortKey(column="")]}, "must not be empty"),
]


@pytest.mark.parametrize(("fields", "message"), MALFORMED_TABLE_VIEWS)
def test_malformed_table_views_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        views.table_query(proto.TableView(**fields))


async def test_a_view_of_the_wrong_family_is_refused(
    blobs: BlobStore, events_table: views.DataRef
) -> None:
    with pytest.raises(
        InvalidRequestError, match="An array view needs an array; the source is a table"
    ):
        await views.compute_view(blobs, events_table, views.ArrayQuery(), new_id())
    array = views.DataRef("array", new_id(), {"data_type": "<f8", "shape": [3]})
    with pytest.raises(
        InvalidRequestError, match="A table view needs a table; the source is an array"
    ):
        await views.compute_view(blobs, array, views.TableQuery(), new_id())


# --- arrays ------------------------------------------------------------------------------------

VALUES = (np.arange(7 * 6 * 5, dtype="<i2").reshape(7, 6, 5) * 3) % 101 - 50


@pytest.fixture
async def cube(home: tuple[str, httpx.AsyncClient]) -> views.DataRef:
    """A 7x6x5 int16 array node in chunks of 3x4x2, written block by block over the API."""
    name, http = home
    node = await new_array(http, name, "cube", "<i2", VALUES.shape, (3, 4, 2))
    await put_all(http, f"{name}/cube", VALUES, (3, 4, 2))
    return views.DataRef("array", node["id"], node["structure"])


def axis(item: int | slice) -> proto.AxisSelection:
    if isinstance(item, int):
        return proto.AxisSelection(index=item)
    return proto.AxisSelection(start=item.start, stop=item.stop, step=item.step)


def array_view(
    selection: tuple[int | slice, ...] = (), reduce: str | None = None, axis_: int | None = None
) -> views.ArrayQuery:
    items = [axis(item) for item in selection]
    return views.array_query(proto.ArrayView(selection=items, reduce=reduce, axis=axis_))


def reduced(values: Any, reduce: str | None, axis_: int | None) -> Any:
    return values if reduce is None else np.asarray(getattr(np, reduce)(values, axis=axis_))


ARRAY_CASES: list[tuple[tuple[int | slice, ...], str | None, int | None]] = [
    ((), None, None),
    ((2,), None, None),
    ((slice(None, None, -2), slice(1, 5), -1), None, None),
    ((slice(-3, None), 0, slice(None, None, 3)), None, None),
    ((5, 4, 3), None, None),
    ((), "sum", None),
    ((), "mean", 0),
    ((slice(1, 6, 2),), "min", -1),
    ((1, slice(None, None, -1)), "max", 0),
    ((slice(2, 2),), "sum", 0),
    ((slice(0, 4), 3), "mean", None),
]


@pytest.mark.parametrize(("selection", "reduce", "axis_"), ARRAY_CASES)
async def test_array_views_are_what_numpy_computes(
    blobs: BlobStore,
    cube: views.DataRef,
    selection: tuple[int | slice, ...],
    reduce: str | None,
    axis_: int | None,
) -> None:
    result_id = new_id()
    query = array_view(selection, reduce, axis_)
    family, structure = await views.compute_view(blobs, cube, query, result_id)
    assert family == "array"
    want = reduced(VALUES[selection], reduce, axis_)
    assert structure["data_type"] == want.dtype.str
    assert structure["shape"] == list(want.shape)
    read = await ArrayData(blobs, result_id, ArrayStructure.of(structure)).selection(())
    got = await read.whole()
    np.testing.assert_array_equal(got, want)


async def test_an_array_result_reads_through_the_data_routes(
    blobs: BlobStore,
    cube: views.DataRef,
    home: tuple[str, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, http = home
    monkeypatch.setattr(views, "CHUNK_BYTES", 40)  # several chunks: 4 rows of 5 int16 each
    query = array_view((slice(None, None, -1), slice(1, None)))
    _, structure = await views.compute_view(blobs, cube, query, new_id())
    assert structure["chunks"] == [1, 4, 5]
    node = await new_array(
        http, name, "view", structure["data_type"], structure["shape"], structure["chunks"]
    )
    assert node["structure"] == structure
    await views.compute_view(blobs, cube, query, node["id"])
    want = VALUES[::-1, 1:]
    np.testing.assert_array_equal(await read_full(http, f"{name}/view"), want)
    part = await read_full(http, f"{name}/view", "2,-1,::2")
    np.testing.assert_array_equal(part, want[2, -1, ::2])
    block = await http.get(f"/array/block/{url(name)}/view", params={"block": "3,1,0"})
    assert block.status_code == 200, block.text
    assert np.frombuffer(block.content, "<i2").tolist() == want[3, 4:, :].ravel().tolist()


async def test_a_reduction_to_0_d_reads_through_the_data_routes(
    blobs: BlobStore, cube: views.DataRef, home: tuple[str, httpx.AsyncClient]
) -> None:
    name, http = home
    query = array_view((slice(1, 3),), "mean")
    _, structure = await views.compute_view(blobs, cube, query, new_id())
    assert structure == {
        "data_type": "<f8",
        "shape": [],
        "chunks": [],
        "dims": None,
        "fill_value": 0,
    }
    node = await create(http, name, "mean", structure_family="array", structure=structure)
    await views.compute_view(blobs, cube, query, node["id"])
    response = await http.get(f"/array/full/{url(name)}/mean")
    assert response.headers["x-aiosdk-shape"] == ""
    assert np.frombuffer(response.content, "<f8")[0] == VALUES[1:3].mean()


async def test_arrays_of_other_types_reduce_as_numpy_does(
    blobs: BlobStore, home: tuple[str, httpx.AsyncClient]
) -> None:
    name, http = home
    flags = np.array([[True, False, True], [True, True, True]])
    times = np.array(["2024-01-02", "2023-05-01", "2025-01-01"], dtype="<M8[D]")
    cases = [(flags, ("sum", 0), ("mean", None), ("max", -1)), (times, ("min", None), ("max", 0))]
    for number, (values, *reductions) in enumerate(cases):
        key = f"a{number}"
        node = await new_array(http, name, key, values.dtype.str, values.shape, values.shape)
        await put_all(http, f"{name}/{key}", values, values.shape)
        source = views.DataRef("array", node["id"], node["structure"])
        for reduce, axis_ in reductions:
            result_id = new_id()
            query = array_view((), reduce, axis_)
            _, structure = await views.compute_view(blobs, source, query, result_id)
            read = await ArrayData(blobs, result_id, ArrayStructure.of(structure)).selection(())
            want = reduced(values, reduce, axis_)
            assert structure["data_type"] == want.dtype.str
            np.testing.assert_array_equal(await read.whole(), want)
    for reduce in ("sum", "mean"):
        with pytest.raises(InvalidRequestError, match=f"Cannot take the {reduce} of <M8"):
            await views.compute_view(blobs, source, array_view((), reduce), new_id())


REFUSED_ARRAY_VIEWS: list[tuple[tuple[Any, ...], str]] = [
    (((7,), None, None), "index 7 is out of bounds for axis 0 of length 7"),
    (((0, 0, 0, 0), None, None), "has 4 indices; the array has 3 dimensions"),
    (((), "sum", 3), r"axis 3 is out of range: the selection has 3 dimensions \(axes 0 to 2"),
    (((1, 2, 3), "sum", 0), "axis 0 is out of range: the selection has 0 dimensions"),
    (((slice(3, 3),), "max", 0), "The max of nothing"),
    (((slice(0, 0),), "mean", None), "The mean of nothing"),
]


@pytest.mark.parametrize(("view", "message"), REFUSED_ARRAY_VIEWS)
async def test_array_views_that_do_not_fit_are_refused_before_anything_is_written(
    blobs: BlobStore, cube: views.DataRef, view: tuple[Any, ...], message: str, server: Server
) -> None:
    result_id = new_id()
    with pytest.raises(InvalidRequestError, match=message):
        await views.compute_view(blobs, cube, array_view(*view), result_id)
    assert not (server.data_dir / "blobs" / "arrays" / result_id).exists()


MALFORMED_ARRAY_VIEWS: list[tuple[dict[str, Any], str]] = [
    (
        {"selection": [proto.AxisSelection(index=1, start=0)]},
        r"selection\[0\] is an index or a slice",
    ),
    ({"selection": [proto.AxisSelection(), proto.AxisSelection(step=0)]}, "step must not be 0"),
    ({"selection": [proto.AxisSelection()] * 33}, "at most 32 axes"),
    ({"reduce": "median"}, "reduce 'median' is not one of sum, mean, min, max"),
    ({"axis": 0}, "axis is the axis of a reduction: give reduce too"),
]


@pytest.mark.parametrize(("fields", "message"), MALFORMED_ARRAY_VIEWS)
def test_malformed_array_views_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        views.array_query(proto.ArrayView(**fields))


async def test_objects_are_written_as_nodes_are(
    blobs: BlobStore, home: tuple[str, httpx.AsyncClient]
) -> None:
    """What an application computes is written the same way: a table (empty, too) and arrays
    of any shape (a zero-length axis, big-endian values stored little-endian)."""
    name, http = home
    empty = pyarrow.table({"x": pyarrow.array([], pyarrow.int32())})
    structure = await views.write_table_object(blobs, new_id(), empty)
    assert structure == {
        "arrow_schema": encoded_schema(empty.schema),
        "columns": ["x"],
        "npartitions": 0,
        "nrows": [],
    }
    for key, values in (
        ("flat", np.zeros((0, 3), "<f4")),
        ("big", np.arange(6, dtype=">i4").reshape(2, 3)),
    ):
        result_id = new_id()
        structure = await views.write_array_object(blobs, result_id, values)
        node = await create(http, name, key, structure_family="array", structure=structure)
        await views.write_array_object(blobs, node["id"], values)
        got = await read_full(http, f"{name}/{key}")
        assert got.dtype.str == values.dtype.newbyteorder("<").str
        np.testing.assert_array_equal(got, values)
