"""Whole-table reads and exports over loopback against the real server: the stored partitions
joined into one IPC stream (an ``ETag``, ``Range`` resuming it), column selections and every
export of a table of several partitions streamed partition by partition and parsing back
equal, the server's memory during an export bounded by a partition rather than the table, and
a partition body stored as it came (or re-encoded when its schema message is not the
table's)."""

from __future__ import annotations

import io
import tracemalloc
from typing import Any

import httpx
import numpy
import pyarrow  # type: ignore[import-untyped]
import pyarrow.csv  # type: ignore[import-untyped]
import pyarrow.parquet  # type: ignore[import-untyped]
import pytest

from aiosdk.server import Server
from aiosdk.server.data import tables

from ._tables import ARROW, append, append_all, new_table, parse, sample, stream
from .conftest import url

pytestmark = pytest.mark.anyio


def _parts() -> list[Any]:
    """Three partitions of every kind of column, each with its own dictionary."""
    return [sample(0, 7), sample(7, 5).slice(1), sample(30, 4)]


async def _table(home: tuple[str, httpx.AsyncClient], parts: list[Any]) -> str:
    name, http = home
    await new_table(http, name, "t")
    await append_all(http, f"{name}/t", parts)
    return f"{name}/t"


async def test_a_whole_read_is_the_partitions_joined(home: tuple[str, httpx.AsyncClient]) -> None:
    _, http = home
    parts = _parts()
    path = await _table(home, parts)
    expected = pyarrow.concat_tables(parts)
    # (the identity form: httpx asks for zstd when zstandard is installed, and only the
    # identity form has ranges; see test_data_compression.py)
    identity = {"Accept-Encoding": "identity"}
    whole = await http.get(f"/table/full/{url(path)}", headers=identity)
    assert whole.status_code == 200, whole.text
    assert whole.headers["x-aiosdk-rows"] == str(expected.num_rows)
    back = parse(whole.content)
    assert back.equals(expected)
    assert back.schema.equals(expected.schema, check_metadata=True)
    assert [b.num_rows for b in back.to_batches()] == [p.num_rows for p in parts]
    etag = whole.headers["etag"]
    assert whole.headers["accept-ranges"] == "bytes"
    assert not etag.startswith("W/")
    unchanged = await http.get(f"/table/full/{url(path)}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.headers["etag"] == etag
    assert not unchanged.content

    cut = len(whole.content) // 3
    rest = await http.get(
        f"/table/full/{url(path)}", headers={"Range": f"bytes={cut}-", "If-Range": etag}
    )
    assert rest.status_code == 206
    assert (
        rest.headers["content-range"]
        == f"bytes {cut}-{len(whole.content) - 1}/{len(whole.content)}"
    )
    assert whole.content[:cut] + rest.content == whole.content
    middle = await http.get(f"/table/full/{url(path)}", headers={"Range": "bytes=100-299"})
    assert middle.status_code == 206
    assert middle.content == whole.content[100:300]
    beyond = await http.get(
        f"/table/full/{url(path)}", headers={"Range": f"bytes={len(whole.content)}-"}
    )
    assert beyond.status_code == 416

    # A partition rewritten: another ETag, and a resume with the old one gets the whole anew.
    response = await http.put(
        f"/table/partition/{url(path)}",
        params={"partition": 1},
        content=stream(sample(50, 2)),
        headers={"Content-Type": ARROW},
    )
    assert response.status_code == 204, response.text
    again = await http.get(
        f"/table/full/{url(path)}", headers={"Range": f"bytes={cut}-", "If-Range": etag}
    )
    assert again.status_code == 200
    assert again.headers["etag"] != etag
    changed = await http.get(f"/table/full/{url(path)}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert parse(again.content).equals(pyarrow.concat_tables([parts[0], sample(50, 2), parts[2]]))


async def test_a_partition_read_has_an_etag_and_ranges(home: tuple[str, httpx.AsyncClient]) -> None:
    _, http = home
    parts = _parts()
    path = await _table(home, parts)
    one = await http.get(f"/table/partition/{url(path)}", params={"partition": 2})
    assert parse(one.content).equals(parts[2])
    tail = await http.get(
        f"/table/partition/{url(path)}",
        params={"partition": 2},
        headers={"Range": "bytes=10-", "If-Range": one.headers["etag"]},
    )
    assert tail.status_code == 206
    assert tail.content == one.content[10:]
    unchanged = await http.get(
        f"/table/partition/{url(path)}",
        params={"partition": 2},
        headers={"If-None-Match": one.headers["etag"]},
    )
    assert unchanged.status_code == 304


async def test_unwritten_partitions_and_an_empty_table_read_as_no_rows(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    await new_table(http, name, "declared", npartitions=3)
    path = f"{name}/declared"
    response = await http.put(
        f"/table/partition/{url(path)}",
        params={"partition": 1},
        content=stream(sample(0, 4)),
        headers={"Content-Type": ARROW},
    )
    assert response.status_code == 204, response.text
    back = parse((await http.get(f"/table/full/{url(path)}")).content)
    assert back.equals(sample(0, 4))
    await new_table(http, name, "empty")
    empty = parse((await http.get(f"/table/full/{url(name)}/empty")).content)
    assert empty.num_rows == 0
    assert empty.schema.equals(sample().schema)
    for fmt in ("parquet", "csv", "json"):
        answer = await http.get(f"/table/full/{url(name)}/empty", params={"format": fmt})
        assert answer.status_code == 200, answer.text
    assert (
        await http.get(f"/table/full/{url(name)}/empty", params={"format": "json"})
    ).json() == []


async def test_a_column_selection_of_several_partitions_parses_back_equal(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    _, http = home
    parts = _parts()
    path = await _table(home, parts)
    columns = ["cat", "t_tokyo", "s", "i"]
    response = await http.get(f"/table/full/{url(path)}", params={"column": columns})
    assert response.status_code == 200, response.text
    back = parse(response.content)
    assert back.equals(pyarrow.concat_tables(parts).select(columns))
    assert "etag" not in response.headers  # rendered, not the stored bytes: no resuming
    part = await http.get(
        f"/table/partition/{url(path)}", params={"partition": 1, "column": ["f", "cat"]}
    )
    assert parse(part.content).equals(parts[1].select(["f", "cat"]))


async def test_every_export_of_several_partitions_parses_back_equal(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    _, http = home
    parts = _parts()
    path = await _table(home, parts)
    expected = pyarrow.concat_tables(parts)
    target = f"/table/full/{url(path)}"

    arrow = await http.get(target, params={"format": "arrow", "column": ["i", "cat"]})
    assert parse(arrow.content).equals(expected.select(["i", "cat"]))

    parquet = await http.get(target, params={"format": "parquet"})
    assert parquet.status_code == 200, parquet.text
    assert parquet.headers["content-type"] == "application/vnd.apache.parquet"
    file = pyarrow.parquet.ParquetFile(io.BytesIO(parquet.content))
    assert file.metadata.num_row_groups == len(parts)  # one per partition: written as they came
    assert file.read().to_pylist() == expected.to_pylist()

    csv = await http.get(target, params={"format": "csv"})
    assert csv.content.count(b'"i"') == 1  # one header
    options = pyarrow.csv.ConvertOptions(
        column_types=expected.schema, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    back = pyarrow.csv.read_csv(io.BytesIO(csv.content), convert_options=options)
    assert back.to_pylist() == expected.to_pylist()

    records = (await http.get(target, params={"format": "json", "column": ["i", "s"]})).json()
    assert records == expected.select(["i", "s"]).to_pylist()


async def test_a_type_the_format_cannot_hold_is_a_422_before_any_byte(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    months = pyarrow.table({"m": pyarrow.array([(1, 2, 3)], pyarrow.month_day_nano_interval())})
    await new_table(http, name, "months", schema=months.schema)
    assert (await append(http, f"{name}/months", months)).status_code == 200
    response = await http.get(f"/table/full/{url(name)}/months", params={"format": "csv"})
    assert response.status_code == 422, response.text


async def _drain(http: httpx.AsyncClient, target: str, params: dict[str, Any]) -> int:
    """Read an answer to its end without keeping it; its size."""
    size = 0
    async with http.stream("GET", target, params=params) as response:
        assert response.status_code == 200
        async for piece in response.aiter_raw():
            size += len(piece)
    return size


async def test_an_export_holds_a_partition_in_memory_not_the_table(
    home: tuple[str, httpx.AsyncClient], server: Server
) -> None:
    name, http = home
    rng = numpy.random.default_rng(3)
    rows = 50_000  # 4 float64 columns: 1.6 MB a partition, 38 MB in all
    parts = [pyarrow.table({f"c{k}": rng.random(rows) for k in range(4)}) for _ in range(24)]
    await new_table(http, name, "big", schema=parts[0].schema)
    await append_all(http, f"{name}/big", parts)
    target = f"/table/full/{url(name)}/big"
    for params in ({"format": "parquet"}, {"format": "csv"}, {"column": ["c3", "c1", "c2", "c0"]}):
        tracemalloc.start()
        try:
            size = await _drain(http, target, params)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert size > 30_000_000, (params, size)
        # (whole, the export alone would be more than the bound)
        assert peak < 20_000_000, f"{peak:,} bytes allocated at once exporting {params}"


async def test_a_partition_body_is_stored_as_it_came_when_its_schema_is_the_tables(
    home: tuple[str, httpx.AsyncClient], server: Server
) -> None:
    name, http = home
    part = sample(0, 6)
    await new_table(http, name, "t")
    body = stream(part)
    assert (await append(http, f"{name}/t", part)).status_code == 200
    node = (await http.get(f"/catalog/nodes/{url(name)}/t")).json()
    stored = server.data_dir / "blobs" / tables.partition_key(node["id"], 0)
    assert stored.read_bytes() == body

    # The same data with other schema metadata: stored with the table's own schema message.
    other = part.replace_schema_metadata({"from": "elsewhere"})
    assert (await append(http, f"{name}/t", other)).status_code == 200
    second = (server.data_dir / "blobs" / tables.partition_key(node["id"], 1)).read_bytes()
    assert second != stream(other)
    whole = parse((await http.get(f"/table/full/{url(name)}/t")).content)
    assert whole.equals(pyarrow.concat_tables([part, part]))
    assert whole.schema.metadata == part.schema.metadata


async def test_a_bad_body_is_refused_and_leaves_the_partition_as_it_was(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    part = sample(0, 6)
    await new_table(http, name, "t")
    assert (await append(http, f"{name}/t", part)).status_code == 200
    body = stream(part)
    target = f"/table/partition/{url(name)}/t"
    headers = {"Content-Type": ARROW}
    for bad in (
        body[: len(body) // 2],  # half a body
        body[:-8],  # no end-of-stream marker
        body + b"\xff" * 16,  # something after it
        body + body[part.schema.serialize().size :],  # a second stream's batches after it
    ):
        response = await http.put(target, params={"partition": 0}, content=bad, headers=headers)
        assert response.status_code in (204, 422), response.text
        # Refused: the partition as it was; accepted: the stream the body began with, alone.
        whole = await http.get(f"/table/full/{url(name)}/t")
        assert parse(whole.content).equals(part), response.status_code
    half = await http.put(
        target, params={"partition": 0}, content=body[: len(body) // 2], headers=headers
    )
    assert half.status_code == 422
