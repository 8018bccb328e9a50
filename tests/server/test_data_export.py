"""Exports: tables as Parquet, CSV, JSON and Arrow, sparse arrays as dense ``.npy``, chosen by
``?format=`` (a MIME type or a suffix) or ``Accept``; an unknown format is a 406 that lists
the formats. Each export parses back equal. Arrays are rendered by the same functions
(:func:`aiosdk.server.data.export.render_array`), tested here directly."""

from __future__ import annotations

import io
import json

import httpx
import numpy
import pyarrow  # type: ignore[import-untyped]
import pyarrow.csv  # type: ignore[import-untyped]
import pyarrow.parquet  # type: ignore[import-untyped]
import pytest

from aiosdk.server.data import export

from ._tables import ARROW, append_all, new_table, parse, sample, stream
from .conftest import assert_error, create, url

pytestmark = pytest.mark.anyio


async def test_table_exports_parse_back_equal(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    path = f"{name}/t"
    await new_table(http, name, "t")
    parts = [sample(0, 4), sample(4, 3)]
    await append_all(http, path, parts)
    expected = pyarrow.concat_tables(parts)
    target = f"/table/full/{url(path)}"
    for asked in ["parquet", ".parquet", "application/vnd.apache.parquet"]:
        response = await http.get(target, params={"format": asked})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/vnd.apache.parquet"
        back = pyarrow.parquet.read_table(io.BytesIO(response.content))
        assert back.to_pylist() == expected.to_pylist()
    csv = await http.get(target, headers={"Accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    options = pyarrow.csv.ConvertOptions(
        column_types=expected.schema, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    back = pyarrow.csv.read_csv(io.BytesIO(csv.content), convert_options=options)
    assert back.to_pylist() == expected.to_pylist()
    records = (await http.get(target, params={"format": "json"})).json()
    assert len(records) == 7
    assert records[1]["i"] is None
    assert records[0]["s"] == "row 0 ✓"
    assert records[0]["t"].startswith("2024-01-01T12:00:00")
    arrow = await http.get(target, params={"format": "arrow"})
    assert arrow.headers["content-type"] == ARROW
    assert parse(arrow.content).to_pylist() == expected.to_pylist()
    refused = await http.get(target, params={"format": "xlsx"})
    message = assert_error(refused, 406, "invalid_request")["message"]
    assert "application/vnd.apache.parquet" in message
    assert_error(await http.get(target, headers={"Accept": "image/png"}), 406, "invalid_request")
    native = await http.get(target, headers={"Accept": "*/*"})
    assert native.headers["content-type"] == ARROW


async def test_sparse_exports_dense_npy(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    await create(
        http, name, "m", structure_family="sparse", structure={"shape": [3, 4], "data_type": "<f4"}
    )
    target = f"/sparse/full/{url(name)}/m"
    entries = pyarrow.table(
        {
            "coord_0": pyarrow.array([0, 2], pyarrow.int64()),
            "coord_1": pyarrow.array([3, 1], pyarrow.int64()),
            "data": pyarrow.array([1.5, -4.0], pyarrow.float32()),
        }
    )
    assert (await http.put(target, content=stream(entries))).status_code == 204
    response = await http.get(target, params={"format": "npy"})
    assert response.status_code == 200, response.text
    dense = numpy.load(io.BytesIO(response.content))
    expected = numpy.zeros((3, 4), "<f4")
    expected[0, 3], expected[2, 1] = 1.5, -4.0
    numpy.testing.assert_array_equal(dense, expected)
    assert_error(await http.get(target, params={"format": "csv"}), 406, "invalid_request")


async def test_duplicate_coordinates_are_summed_dense(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    """As the client's ``COO.todense()`` does (bools: or)."""
    name, http = home
    for data_type, data, expected in [
        ("<i8", [1, 2, 5], [3, 0, 5]),
        ("|b1", [True, True, False], [True, False, False]),
    ]:
        key = f"m{data_type[1:]}"
        await create(
            http,
            name,
            key,
            structure_family="sparse",
            structure={"shape": [3], "data_type": data_type},
        )
        target = f"/sparse/full/{url(name)}/{key}"
        entries = pyarrow.table(
            {
                "coord_0": pyarrow.array([0, 0, 2], pyarrow.int64()),
                "data": pyarrow.array(data, pyarrow.from_numpy_dtype(numpy.dtype(data_type))),
            }
        )
        assert (await http.put(target, content=stream(entries))).status_code == 204
        response = await http.get(target, params={"format": "npy"})
        dense = numpy.load(io.BytesIO(response.content))
        numpy.testing.assert_array_equal(dense, numpy.array(expected, data_type))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
async def test_a_type_the_format_cannot_hold_is_a_422(
    home: tuple[str, httpx.AsyncClient], fmt: str
) -> None:
    name, http = home
    table = pyarrow.table({"x": pyarrow.array([(1, 2, 3)], pyarrow.month_day_nano_interval())})
    path = f"{name}/t"
    await new_table(http, name, "t", table.schema)
    await append_all(http, path, [table])
    response = await http.get(f"/table/full/{url(path)}", params={"format": fmt})
    assert "cannot be written" in assert_error(response, 422, "invalid_request")["message"]


_UNITS_CSV_CANNOT_HOLD = ["Y", "M", "W", "h", "m", "ps", "fs", "as"]


@pytest.mark.parametrize(
    "data_type", [f"{kind}8[{unit}]" for kind in "Mm" for unit in _UNITS_CSV_CANNOT_HOLD]
)
async def test_datetimes_csv_cannot_hold_are_refused_not_a_500(data_type: str) -> None:
    values = numpy.array([1, 2], data_type)
    with pytest.raises(export.InvalidContentError, match="cannot be written"):
        await export.render_array(values, export.CSV)


async def test_json_exports_are_capped_by_their_number_of_values(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    """Values, not bytes: 4 MB of int8 would be far more as JSON text."""
    name, http = home
    path = f"{name}/t"
    table = pyarrow.table({"b": numpy.zeros(export.MAX_JSON_VALUES + 1, "<i1")})
    await new_table(http, name, "t", table.schema)
    await append_all(http, path, [table])
    response = await http.get(f"/table/full/{url(path)}", params={"format": "json"})
    assert "values" in assert_error(response, 422, "invalid_request")["message"]
    with pytest.raises(export.InvalidContentError):
        await export.render_array(numpy.zeros(export.MAX_JSON_VALUES + 1, "<i1"), export.JSON)


async def test_a_huge_sparse_array_is_not_exported_dense(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    await create(
        http,
        name,
        "m",
        structure_family="sparse",
        structure={"shape": [100_000, 100_000], "data_type": "<f8"},
    )
    response = await http.get(f"/sparse/full/{url(name)}/m", params={"format": ".npy"})
    assert "Arrow" in assert_error(response, 422, "invalid_request")["message"]


@pytest.mark.parametrize(
    "values",
    [
        numpy.arange(12, dtype="<i4").reshape(3, 4),
        numpy.array([1.5, numpy.nan, -numpy.inf, 2.0]),
        numpy.array([[True, False]]),
        numpy.array([1 + 2j, -3.5j], "<c16"),
        numpy.array(["2024-01-01T00:00", "NaT"], "M8[m]"),
        numpy.array([b"ab", b"c"], "S2"),
        numpy.array(7.0),
    ],
)
async def test_array_renderings_parse_back(values: numpy.ndarray) -> None:
    assert await export.render_array(values, export.RAW) == values.tobytes()
    npy = await export.render_array(values, export.NPY)
    numpy.testing.assert_array_equal(numpy.load(io.BytesIO(npy)), values)
    rendered = json.loads(await export.render_array(values, export.JSON))
    if values.ndim == 0:
        assert rendered == values.item()
    elif values.dtype.kind == "f":
        assert rendered == [None if not numpy.isfinite(v) else v for v in values.tolist()]
    elif values.dtype.kind == "c":
        assert rendered == [[v.real, v.imag] for v in values.tolist()]
    elif values.dtype.kind not in "MS":
        assert rendered == values.tolist()
    if 1 <= values.ndim <= 2 and values.dtype.kind in "iuf":
        text = await export.render_array(values, export.CSV)
        back = numpy.loadtxt(
            io.StringIO(text.decode()), delimiter=",", dtype=values.dtype, ndmin=values.ndim
        )
        numpy.testing.assert_array_equal(back, values)


def test_formats_and_resolution() -> None:
    assert export.formats("array", {"shape": [2, 3, 4]}) == [export.RAW, export.NPY, export.JSON]
    assert export.CSV in export.formats("array", {"shape": [5]})
    assert export.resolve_format("array", {"shape": [5]}, None, None) is None
    assert export.resolve_format("array", {"shape": [5]}, None, "application/octet-stream") is None
    assert export.resolve_format("array", {"shape": [5]}, "npy", None) == export.NPY
    assert (
        export.resolve_format("table", None, None, "text/csv;q=0.5, application/json")
        == export.JSON
    )
    assert export.resolve_format("table", None, None, "text/*") == export.CSV
    with pytest.raises(export.NotAcceptableError):
        export.resolve_format("array", {"shape": [2, 3, 4]}, "csv", None)
