"""``/api/v1/array``: array nodes' bytes, block by block and by selection, over loopback with raw
httpx against the real server, on SQLite and PostgreSQL; checked against numpy's own answers."""

from __future__ import annotations

import os
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
import zarr

from aiosdk.server import Server
from aiosdk.server.data.arrays import ArrayData
from aiosdk.server.data.store import BlobStore, DurableLocalStore
from aiosdk.server.data.structures import ArrayStructure, validate_array_structure

from ._arrays import (
    SLICES,
    block_of,
    blocks_of,
    decoded,
    new_array,
    numpy_index,
    put_all,
    read_full,
    sample,
    text,
)
from .conftest import Users, assert_error, create, unique, url

pytestmark = pytest.mark.anyio


DTYPES = [
    "|b1",
    "|i1",
    "<i2",
    "<i4",
    "<i8",
    "|u1",
    "<u2",
    "<u4",
    "<u8",
    "<f2",
    "<f4",
    "<f8",
    "<c8",
    "<c16",
    "<M8[s]",
    "<M8[ns]",
    "<m8[ms]",
    "|S5",
    "<U3",
]


async def test_every_dtype_round_trips_by_block_and_whole(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    async with anyio.create_task_group() as group:
        for dtype in DTYPES:
            group.start_soon(_round_trip, http, name, dtype)


async def _round_trip(http: httpx.AsyncClient, name: str, dtype: str) -> None:
    shape, chunks = (3, 5), (2, 3)  # edge blocks on both axes
    node = await new_array(
        http, name, dtype.replace("|", "").replace("<", ""), dtype, shape, chunks
    )
    assert node["structure"]["data_type"] == np.dtype(dtype).str
    values = sample(dtype, shape)
    await put_all(http, node["path"], values, chunks)

    async def check(index: tuple[int, ...]) -> None:
        response = await http.get(
            f"/array/block/{url(node['path'])}", params={"block": text(index)}
        )
        expected = block_of(values, index, chunks)
        got = decoded(response)
        assert got.shape == expected.shape, (dtype, index)
        np.testing.assert_array_equal(got, expected, err_msg=f"{dtype} block {index}")

    async with anyio.create_task_group() as group:
        for index in blocks_of(shape, chunks):
            group.start_soon(check, index)
    np.testing.assert_array_equal(await read_full(http, node["path"]), values, err_msg=dtype)


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [((), ()), ((0,), (1,)), ((3, 0, 2), (2, 1, 2)), ((1,), (4,)), ((4, 1, 3), (4, 1, 3))],
)
async def test_0d_zero_length_and_single_block_arrays(
    home: tuple[str, httpx.AsyncClient], shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    name, http = home
    node = await new_array(http, name, "a", "<i4", shape, chunks, fill_value=7)
    path = url(node["path"])
    values = sample("<i4", shape)
    await put_all(http, node["path"], values, chunks)
    np.testing.assert_array_equal(await read_full(http, node["path"]), values)
    if shape == ():
        response = await http.get(f"/array/block/{path}")
        assert response.headers["x-aiosdk-shape"] == ""
        np.testing.assert_array_equal(decoded(response), values)
    if 0 in shape:
        assert blocks_of(shape, chunks) == []
        assert_error(
            await http.get(f"/array/block/{path}", params={"block": "0,0,0"}),
            400,
            "invalid_request",
        )


async def test_unwritten_blocks_read_as_the_fill_value(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    node = await new_array(http, name, "a", "<f4", (5, 5), (2, 2), fill_value="NaN")
    values = await read_full(http, node["path"])
    assert values.shape == (5, 5)
    assert np.isnan(values).all()
    edge = decoded(await http.get(f"/array/block/{url(node['path'])}", params={"block": "2,2"}))
    assert edge.shape == (1, 1)


BAD_SLICES = ["1:2:0", "a", "1:2:3:4", "30", "-24", "1,2,3", ",", "--1", "1e3"]


async def test_selections_match_numpy_and_bad_ones_are_400(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    shape, chunks = (23, 11), (5, 4)
    node = await new_array(http, name, "a", "<f8", shape, chunks)
    values = sample("<f8", shape)
    await put_all(http, node["path"], values, chunks)

    async def check(selection: str) -> None:
        expected = values[numpy_index(selection)]
        got = await read_full(http, node["path"], selection)
        assert got.shape == expected.shape, selection
        np.testing.assert_array_equal(got, expected, err_msg=selection)

    async def refused(selection: str) -> None:
        target = f"/array/full/{url(node['path'])}"
        response = await http.get(target, params={"slice": selection})
        assert_error(response, 400, "invalid_request")

    async with anyio.create_task_group() as group:
        for selection in SLICES:
            group.start_soon(check, selection)
        for selection in BAD_SLICES:
            group.start_soon(refused, selection)


async def test_ranges_and_if_range(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    node = await new_array(http, name, "a", "<u1", (100,), (50,))
    values = np.arange(100, dtype="<u1")
    await put_all(http, node["path"], values, (50,))
    target = f"/array/block/{url(node['path'])}"
    whole = await http.get(target, params={"block": "1"})
    etag = whole.headers["etag"]
    part = await http.get(target, params={"block": "1"}, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.headers["content-range"] == "bytes 10-19/50"
    assert part.content == bytes(range(60, 70))
    rest = await http.get(target, params={"block": "1"}, headers={"Range": "bytes=45-"})
    assert rest.content == bytes(range(95, 100))
    tail = await http.get(target, params={"block": "1"}, headers={"Range": "bytes=-3"})
    assert tail.content == bytes(range(97, 100))
    same = await http.get(
        target, params={"block": "1"}, headers={"Range": "bytes=5-", "If-Range": etag}
    )
    assert same.status_code == 206
    assert same.content == bytes(range(55, 100))
    stale = await http.get(
        target, params={"block": "1"}, headers={"Range": "bytes=5-", "If-Range": '"other"'}
    )
    assert stale.status_code == 200
    assert stale.content == bytes(range(50, 100))
    beyond = await http.get(target, params={"block": "1"}, headers={"Range": "bytes=50-"})
    assert_error(beyond, 416, "invalid_request")
    assert beyond.headers["content-range"] == "bytes */50"
    cached = await http.get(target, params={"block": "1"}, headers={"If-None-Match": etag})
    assert cached.status_code == 304
    # A rewrite changes the tag: a resume after it gets the whole block again.
    await put_all(http, node["path"], values[::-1].copy(), (50,))
    changed = await http.get(
        target, params={"block": "1"}, headers={"Range": "bytes=5-", "If-Range": etag}
    )
    assert changed.status_code == 200
    assert changed.content == bytes(range(49, -1, -1))
    # The full read resumes too.
    full = f"/array/full/{url(node['path'])}"
    first = await http.get(full)
    resumed = await http.get(
        full, headers={"Range": "bytes=90-", "If-Range": first.headers["etag"]}
    )
    assert resumed.status_code == 206
    assert resumed.content == first.content[90:]


async def test_bad_blocks_and_bodies_are_refused(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    node = await new_array(http, name, "a", "<f8", (5, 3), (2, 2))
    target = f"/array/block/{url(node['path'])}"
    for block in ("3,0", "0", "0,0,0", "a,b", "-1,0", "", "\u00b2,0", "0,1\u00b2"):
        assert_error(await http.get(target, params={"block": block}), 400, "invalid_request")
        response = await http.put(target, params={"block": block}, content=b"x" * 32)
        assert_error(response, 400, "invalid_request")
    short = await http.put(target, params={"block": "2,1"}, content=b"x" * 16)
    message = assert_error(short, 422, "invalid_request")["message"]
    assert "8 bytes" in message  # the edge block (1, 1) of <f8
    long = await http.put(target, params={"block": "0,0"}, content=b"x" * 33)
    assert "32 bytes" in assert_error(long, 422, "invalid_request")["message"]

    async def chunked() -> Any:
        yield b"x" * 10
        yield b"x" * 10

    streamed = await http.put(target, params={"block": "0,0"}, content=chunked())
    assert "32 bytes" in assert_error(streamed, 422, "invalid_request")["message"]


INVALID_STRUCTURES = [
    None,
    {"shape": [2]},
    {"data_type": ">f8", "shape": [2], "chunks": [1]},
    {"data_type": "<f8", "shape": [2], "chunks": [0]},
    {"data_type": "<f8", "shape": [-1], "chunks": [1]},
    {"data_type": "<f8", "shape": [2, 2], "chunks": [1]},
    {"data_type": "O", "shape": [2]},
    {"data_type": "<U0", "shape": [2]},
    {"data_type": "<M8", "shape": [2]},
    {"data_type": "<V8", "shape": [2]},
    {"data_type": "<f8", "shape": [2], "extra": 1},
    {"data_type": "<f8", "shape": [2**20, 2**20], "chunks": [2**20, 64]},
    {"data_type": "<u1", "shape": [2**40], "chunks": [1]},
    {"data_type": "<f8", "shape": [1] * 33},
    {"data_type": "<f8", "shape": [2], "dims": ["x", "y"]},
    {"data_type": "<f8", "shape": [2, 2], "dims": ["x", "x"]},
    {"data_type": "|u1", "shape": [2], "fill_value": 256},
    {"data_type": "|b1", "shape": [2], "fill_value": 0},
    {"data_type": "<f8", "shape": [True]},
    {"data_type": "<f8", "shape": [2], "fill_value": 10**400},
    {"data_type": "<f4", "shape": [2], "fill_value": 1e300},
    {"data_type": "<f2", "shape": [2], "fill_value": 70000},
    {"data_type": "<c16", "shape": [2], "fill_value": [0, 10**400]},
    {"data_type": "<c8", "shape": [2], "fill_value": [1e300, 0]},
    {"data_type": "<f8", "shape": [0, 2**64], "chunks": [1, 1]},
    {"data_type": "<u1", "shape": [0, 2**62]},
    {"data_type": "<u1", "shape": [2], "chunks": [2**64]},
]


async def test_invalid_structures_are_422(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    for structure in INVALID_STRUCTURES:
        body = {"key": "bad", "structure_family": "array", "structure": structure}
        response = await http.post(f"/catalog/children/{url(name)}", json=body)
        message = assert_error(response, 422, "invalid_request")["message"]
        assert "structure" in message, (structure, message)


async def test_patch_writes_regions_and_extends(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    node = await new_array(http, name, "a", "<i8", (4, 3), (3, 2), dims=["t", "x"])
    path = url(node["path"])
    expected = np.zeros((4, 3), "<i8")
    region = sample("<i8", (2, 2), 1)
    response = await http.patch(
        f"/array/full/{path}", params={"offset": "1,1", "shape": "2,2"}, content=region.tobytes()
    )
    assert response.status_code == 204, response.text
    expected[1:3, 1:3] = region
    np.testing.assert_array_equal(await read_full(http, node["path"]), expected)

    more = sample("<i8", (3, 3), 2)
    outside = await http.patch(
        f"/array/full/{path}", params={"offset": "4,0", "shape": "3,3"}, content=more.tobytes()
    )
    assert "extend" in assert_error(outside, 422, "invalid_request")["message"]
    grown = await http.patch(
        f"/array/full/{path}",
        params={"offset": "4,0", "shape": "3,3", "extend": "true"},
        content=more.tobytes(),
    )
    assert grown.status_code == 204, grown.text
    expected = np.concatenate([expected, more])
    after = (await http.get(f"/catalog/nodes/{path}")).json()
    assert after["structure"]["shape"] == [7, 3]
    assert after["structure"]["dims"] == ["t", "x"]
    assert after["revision"] == node["revision"] + 1
    np.testing.assert_array_equal(await read_full(http, node["path"]), expected)
    # The old edge block (1, 1) is whole now: its padding reads as the fill value.
    block = decoded(await http.get(f"/array/block/{path}", params={"block": "1,1"}))
    np.testing.assert_array_equal(block, expected[3:6, 2:3])
    wrong = await http.patch(
        f"/array/full/{path}", params={"offset": "0,0", "shape": "1,1"}, content=b"x" * 9
    )
    assert "8 bytes" in assert_error(wrong, 422, "invalid_request")["message"]
    bad = await http.patch(f"/array/full/{path}", params={"offset": "0", "shape": "1"}, content=b"")
    assert_error(bad, 400, "invalid_request")
    for offset, shape in (("\u00b2,0", "1,1"), ("0,0", "1,\u00b2")):
        odd = await http.patch(
            f"/array/full/{path}", params={"offset": offset, "shape": shape}, content=b"x" * 8
        )
        assert_error(odd, 400, "invalid_request")
    odd_slice = await http.get(f"/array/full/{path}", params={"slice": "\u00b2"})
    assert_error(odd_slice, 400, "invalid_request")


async def test_writes_keep_what_an_extension_wrote_past_a_stale_edge(
    home: tuple[str, httpx.AsyncClient], server: Server
) -> None:
    """A block or region written from a structure read before a concurrent extension (shape
    100 -> 128, chunks 64) keeps the rows the extension committed past the old edge."""
    name, http = home
    node = await new_array(http, name, "a", "<i4", (100,), (64,))
    path = url(node["path"])
    stale = ArrayStructure.of(node["structure"])
    grown = sample("<i4", (28,), 1)
    response = await http.patch(
        f"/array/full/{path}",
        params={"offset": "100", "shape": "28", "extend": "true"},
        content=grown.tobytes(),
    )
    assert response.status_code == 204, response.text
    blobs = await BlobStore.directory(server.data_dir / "blobs")
    data = ArrayData(blobs, node["id"], stale)  # as a writer that read the old shape has it
    edge = sample("<i4", (36,), 2)
    await data.write_block((1,), edge.tobytes())
    expected = np.concatenate([np.zeros(64, "<i4"), edge, grown])
    np.testing.assert_array_equal(await read_full(http, node["path"]), expected)
    region = sample("<i4", (36,), 3)
    await data.write_region((64,), (36,), region.tobytes())
    expected[64:100] = region
    np.testing.assert_array_equal(await read_full(http, node["path"]), expected)


async def test_chunk_writes_are_flushed_to_disk(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory store's writes go through write_file: the file and its directory are
    flushed before the write returns, and no temporary file is left."""
    flushed: list[int] = []
    fsync = os.fsync

    def counting(fd: int) -> None:
        flushed.append(fd)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    blobs = await BlobStore.directory(tmp_path / "blobs")
    assert isinstance(blobs.store, DurableLocalStore)
    structure = ArrayStructure.of(
        validate_array_structure({"data_type": "|u1", "shape": [4], "chunks": [4]})
    )
    await ArrayData(blobs, "n", structure).write_block((0,), b"abcd")
    assert len(flushed) >= 4  # zarr.json and the chunk: each file and its directory
    chunk = tmp_path / "blobs" / "arrays" / "n" / "c" / "0"
    assert await anyio.Path(chunk).read_bytes() == b"abcd"
    names = [p.name async for p in anyio.Path(chunk.parent).iterdir()]
    assert names == ["0"]


async def test_empty_bodies_and_tags_of_unwritten_data(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    empty = await new_array(http, name, "e", "<f8", (0,), (1,))
    for header in ("bytes=-5", "bytes=0-"):
        response = await http.get(f"/array/full/{url(empty['path'])}", headers={"Range": header})
        assert_error(response, 416, "invalid_request")
        assert response.headers["content-range"] == "bytes */0"
    one = await new_array(http, name, "a", "<f8", (4,), (4,))
    two = await new_array(http, name, "b", "<f8", (4,), (4,))
    tags = set()
    for node in (one, two):
        for route, params in (("block", {"block": "0"}), ("full", {})):
            response = await http.get(f"/array/{route}/{url(node['path'])}", params=params)
            assert response.status_code == 200, response.text
            tags.add(response.headers["etag"])
    assert len(tags) == 4


async def test_the_store_is_a_zarr_v3_array(
    home: tuple[str, httpx.AsyncClient], server: Server
) -> None:
    name, http = home
    node = await new_array(http, name, "a", "<f4", (9, 4), (4, 4))
    values = sample("<f4", (9, 4))
    await put_all(http, node["path"], values, (4, 4))
    directory = server.data_dir / "blobs" / "arrays" / node["id"]
    opened = await anyio.to_thread.run_sync(lambda: zarr.open_array(directory, mode="r")[:])
    np.testing.assert_array_equal(opened, values)


async def test_concurrent_writers_of_different_blocks_all_land(
    home: tuple[str, httpx.AsyncClient],
) -> None:
    name, http = home
    shape, chunks = (40, 40), (10, 10)
    node = await new_array(http, name, "a", "<f8", shape, chunks)
    values = sample("<f8", shape)
    target = f"/array/block/{url(node['path'])}"

    async def write(index: tuple[int, ...]) -> None:
        body = np.ascontiguousarray(block_of(values, index, chunks)).tobytes()
        response = await http.put(target, params={"block": text(index)}, content=body)
        assert response.status_code == 204, response.text

    async with anyio.create_task_group() as group:
        for index in blocks_of(shape, chunks):
            group.start_soon(write, index)
    np.testing.assert_array_equal(await read_full(http, node["path"]), values)


async def test_authorization(owner: tuple[str, httpx.AsyncClient], users: Users) -> None:
    name, http = owner
    node = await new_array(http, name, unique("a"), "<f8", (2,), (2,))
    path = url(node["path"])
    _, stranger = await users.new()
    for response in (
        await stranger.get(f"/array/block/{path}", params={"block": "0"}),
        await stranger.get(f"/array/full/{path}"),
        await stranger.get(f"/formats/{path}"),
        await stranger.put(f"/array/block/{path}", params={"block": "0"}, content=b"x" * 16),
        await stranger.patch(
            f"/array/full/{path}", params={"offset": "0", "shape": "1"}, content=b"x" * 8
        ),
    ):
        assert_error(response, 404, "node_not_found")
    reader = await users.client(name, scope="read")
    assert (await reader.get(f"/array/block/{path}", params={"block": "0"})).status_code == 200
    refused = await reader.put(f"/array/block/{path}", params={"block": "0"}, content=b"x" * 16)
    assert_error(refused, 403, "permission_denied")
    container = await create(http, name, unique("box"))
    response = await http.get(f"/array/block/{url(container['path'])}", params={"block": "0"})
    assert "not an array" in assert_error(response, 400, "invalid_request")["message"]


async def test_formats_and_export(home: tuple[str, httpx.AsyncClient]) -> None:
    name, http = home
    node = await new_array(http, name, "a", "<i2", (3, 2), (2, 2))
    values = sample("<i2", (3, 2))
    await put_all(http, node["path"], values, (2, 2))
    path = url(node["path"])
    formats = (await http.get(f"/formats/{path}")).json()["formats"]
    assert formats[0]["mime"] == "application/octet-stream"
    assert "application/x-npy" in {f["mime"] for f in formats}
    npy = await http.get(f"/array/full/{path}", params={"format": ".npy"})
    assert npy.headers["content-type"] == "application/x-npy"
    assert npy.content.startswith(b"\x93NUMPY")
    csv = await http.get(f"/array/full/{path}", headers={"Accept": "text/csv"})
    assert csv.status_code == 200
    assert_error(
        await http.get(f"/array/full/{path}", params={"format": "xls"}), 406, "invalid_request"
    )


async def test_deleting_removes_the_data(
    home: tuple[str, httpx.AsyncClient], server: Server
) -> None:
    name, http = home
    box = await create(http, name, "box")
    node = await new_array(http, box["path"], "a", "<f8", (4,), (2,))
    await put_all(http, node["path"], sample("<f8", (4,)), (2,))
    directory = anyio.Path(server.data_dir / "blobs" / "arrays" / node["id"])
    assert await directory.exists()
    response = await http.delete(f"/catalog/nodes/{url(box['path'])}", params={"recursive": "true"})
    assert response.status_code == 204
    with anyio.fail_after(10):
        while await directory.exists():  # noqa: ASYNC110 - polls the file system
            await anyio.sleep(0.01)
