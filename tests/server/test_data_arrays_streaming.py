"""``GET /array/full``, streamed slab by slab: selections against numpy's own answers (with slabs
of the default size and of a few bytes, so that every way a selection is cut is crossed), Range
pieces that join to the whole, HEAD without a read, and the server's memory near one slab."""

from __future__ import annotations

import itertools
import tracemalloc
from typing import Any

import anyio
import httpx
import numpy as np
import pytest

from aiosdk.server import Server
from aiosdk.server.data import arrays

from ._arrays import SLICES, decoded, new_array, numpy_index, put_all, sample
from .conftest import assert_error, url

pytestmark = pytest.mark.anyio

Home = tuple[str, httpx.AsyncClient]

CASES: list[tuple[tuple[int, ...], tuple[int, ...], list[str]]] = [
    ((23, 11), (5, 4), [*SLICES, "", "::-1,::-1", "22:0:-5,10", "4:5", "-1,-1"]),
    (
        (7, 6, 5),
        (3, 4, 2),
        ["", "::-1", "1:6:2,::-3,1:4", "-1,2:,::-2", "3,4,-1", "::2,0:0", ":,5,::-1", "::-4,-3"],
    ),
    ((), (), [""]),
    ((3, 0, 2), (2, 1, 2), ["", "1:,::-1", "::-1,:,1"]),
    ((5,), (8,), ["", "::-1", "1:4", "4"]),  # one edge chunk, bigger than the array
]


@pytest.fixture(params=[None, 24], ids=["default-slabs", "24-byte-slabs"])
def slab_bytes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The server's slab size for the test (in process): its default, or a few elements."""
    if request.param is not None:
        monkeypatch.setattr(arrays, "SLAB_BYTES", request.param)
    return arrays.SLAB_BYTES


async def _filled(
    http: httpx.AsyncClient, parent: str, key: str, shape: Any, chunks: Any, **more: Any
) -> tuple[str, np.ndarray[Any, Any]]:
    node = await new_array(http, parent, key, "<f8", shape, chunks, **more)
    values = sample("<f8", shape)
    await put_all(http, node["path"], values, chunks)
    return node["path"], values


async def test_streamed_selections_match_numpy(home: Home, slab_bytes: int) -> None:
    name, http = home

    async def check(path: str, values: np.ndarray[Any, Any], selection: str) -> None:
        params = {"slice": selection} if selection else {}
        got = decoded(await http.get(f"/array/full/{url(path)}", params=params))
        expected = values[numpy_index(selection)] if selection else values
        assert got.shape == expected.shape, selection
        np.testing.assert_array_equal(got, expected, err_msg=selection)

    async with anyio.create_task_group() as group:
        for number, (shape, chunks, selections) in enumerate(CASES):
            path, values = await _filled(http, name, f"a{number}", shape, chunks)
            for selection in selections:
                group.start_soon(check, path, values, selection)


async def test_elements_larger_than_a_slab_stream_one_by_one(home: Home, slab_bytes: int) -> None:
    name, http = home
    node = await new_array(http, name, "a", "|S30", (3, 4), (2, 3))
    values = sample("|S30", (3, 4))
    await put_all(http, node["path"], values, (2, 3))
    for selection in ("", "::-1,1:", "2,::-2"):
        params = {"slice": selection} if selection else {}
        got = decoded(await http.get(f"/array/full/{url(node['path'])}", params=params))
        expected = values[numpy_index(selection)] if selection else values
        np.testing.assert_array_equal(got, expected, err_msg=selection)


async def test_unwritten_chunks_stream_as_the_fill_value(home: Home, slab_bytes: int) -> None:
    name, http = home
    node = await new_array(http, name, "a", "<i2", (9, 7), (4, 3), fill_value=-3)
    values = np.full((9, 7), -3, "<i2")
    part = sample("<i2", (4, 3))
    block = await http.put(
        f"/array/block/{url(node['path'])}", params={"block": "1,1"}, content=part.tobytes()
    )
    assert block.status_code == 204, block.text
    values[4:8, 3:6] = part
    for selection in ("", "::-1,1::2", "8,::-1"):
        params = {"slice": selection} if selection else {}
        got = decoded(await http.get(f"/array/full/{url(node['path'])}", params=params))
        expected = values[numpy_index(selection)] if selection else values
        np.testing.assert_array_equal(got, expected, err_msg=selection)


async def test_range_pieces_of_a_streamed_read_join_to_the_whole(
    home: Home, slab_bytes: int
) -> None:
    name, http = home
    path, values = await _filled(http, name, "a", (23, 11), (5, 4))
    target = f"/array/full/{url(path)}"
    for selection in ("", "::-2,1:9:3"):
        params = {"slice": selection} if selection else {}
        whole = await http.get(target, params=params)
        etag = whole.headers["etag"]
        expected = values[numpy_index(selection)] if selection else values
        assert whole.content == np.ascontiguousarray(expected).tobytes()
        size = len(whole.content)
        cuts = sorted(
            {c for c in (0, 1, 7, 8, 100, 333, 800, size // 2, size - 9, size - 1) if c < size}
        )
        cuts.append(size)
        joined = b""
        for first, end in itertools.pairwise(cuts):
            piece = await http.get(
                target,
                params=params,
                headers={"Range": f"bytes={first}-{end - 1}", "If-Range": etag},
            )
            assert piece.status_code == 206, (first, end, piece.text)
            assert piece.headers["content-range"] == f"bytes {first}-{end - 1}/{size}"
            assert piece.headers["etag"] == etag
            joined += piece.content
        assert joined == whole.content
        tail = await http.get(target, params=params, headers={"Range": "bytes=-13"})
        assert tail.status_code == 206
        assert tail.content == whole.content[-13:]
        beyond = await http.get(target, params=params, headers={"Range": f"bytes={size}-"})
        assert_error(beyond, 416, "invalid_request")
        assert beyond.headers["content-range"] == f"bytes */{size}"
        same = await http.get(target, params=params, headers={"If-None-Match": etag})
        assert same.status_code == 304


async def test_head_answers_the_headers_of_get_without_reading(home: Home, server: Server) -> None:
    name, http = home
    node = await new_array(http, name, "a", "<f8", (10, 4), (4, 4))
    path, target = node["path"], f"/array/full/{url(node['path'])}"
    await put_all(http, path, sample("<f8", (10, 4)), (4, 4))
    varying = {"date", "x-request-id"}
    for headers in ({}, {"Range": "bytes=5-40"}):
        get = await http.get(target, params={"slice": "::-1"}, headers=headers)
        head = await http.head(target, params={"slice": "::-1"}, headers=headers)
        assert head.status_code == get.status_code
        assert head.content == b""
        assert {k: v for k, v in head.headers.items() if k not in varying} == {
            k: v for k, v in get.headers.items() if k not in varying
        }
    # A damaged chunk fails a read (cut short), not a HEAD, which reads none.
    chunk = anyio.Path(server.data_dir / "blobs" / "arrays" / node["id"] / "c" / "1" / "0")
    await chunk.write_bytes(b"short")
    head = await http.head(target)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(10 * 4 * 8)
    assert head.headers["x-aiosdk-shape"] == "10,4"
    with pytest.raises(httpx.RemoteProtocolError):
        await http.get(target)


async def test_a_large_full_read_holds_about_one_slab(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 MiB in chunks of 64 x 1024, pasted into slabs of 4 MiB (64 rows): the traced memory
    (numpy's included) while the client takes it and drops it stays a few slabs, well below
    the whole."""
    name, http = home
    monkeypatch.setattr(arrays, "SLAB_BYTES", 4 * 2**20)
    shape, chunks = (512, 8192), (64, 1024)
    path, values = await _filled(http, name, "a", shape, chunks)
    whole = values.nbytes
    slab = 64 * 8192 * 8
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        received = 0
        async with http.stream("GET", f"/array/full/{url(path)}") as response:
            assert response.status_code == 200
            async for piece in response.aiter_raw():
                received += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == whole
    assert peak < 3 * slab < whole, (peak, slab, whole)


async def test_a_client_gone_mid_stream_stops_the_reading(
    home: Home, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that takes the first bytes of a 64 MiB read and drops the connection: the
    server stops reading slabs (without this it reads all 64: its transport's send() returns
    quietly once the client is gone)."""
    name, http = home
    monkeypatch.setattr(arrays, "SLAB_BYTES", 2**20)
    path, values = await _filled(http, name, "a", (1024, 8192), (64, 8192))
    slabs = values.nbytes // 2**20
    read = 0
    ended = anyio.Event()
    original_slab, original_pieces = arrays.SelectionRead._slab, arrays.SelectionRead.pieces

    async def counted_slab(self: Any, *args: Any) -> memoryview:
        nonlocal read
        read += 1
        return await original_slab(self, *args)

    async def watched_pieces(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            async for piece in original_pieces(self, *args, **kwargs):
                yield piece
        finally:
            ended.set()

    monkeypatch.setattr(arrays.SelectionRead, "_slab", counted_slab)
    monkeypatch.setattr(arrays.SelectionRead, "pieces", watched_pieces)
    host, port = httpx.URL(server.http_url).host, httpx.URL(server.http_url).port
    request = (
        f"GET /api/v1/array/full/{url(path)} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {http.headers['authorization']}\r\nAccept-Encoding: identity\r\n\r\n"
    )
    async with await anyio.connect_tcp(host, port or 80) as stream:
        await stream.send(request.encode())
        assert b" 200 " in await stream.receive(65536)
    with anyio.fail_after(60):
        await ended.wait()
    assert read < slabs, (read, slabs)


async def test_a_chunk_changed_mid_stream_cuts_the_read_short(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read whose last chunk is rewritten while the first ones are on their way is cut short
    (its ETag named the old chunk); a resume with that ETag gets the new array whole."""
    name, http = home
    monkeypatch.setattr(arrays, "SLAB_BYTES", 2**20)
    shape, chunks = (1024, 4096), (128, 4096)  # 32 MiB, 8 rows of chunks of 4 MiB
    path, values = await _filled(http, name, "a", shape, chunks)
    target = f"/array/full/{url(path)}"
    rewritten = values.copy()
    rewritten[896:] = -1.0
    received = 0
    etag = ""

    async def read_while_rewriting() -> None:
        nonlocal received, etag
        async with http.stream("GET", target) as response:
            etag = response.headers["etag"]
            async for piece in response.aiter_raw():
                if received == 0:  # the kernel holds a few MiB at most: the rest is unread
                    put = await http.put(
                        f"/array/block/{url(path)}",
                        params={"block": "7,0"},
                        content=rewritten[896:].tobytes(),
                    )
                    assert put.status_code == 204, put.text
                received += len(piece)

    with pytest.raises(httpx.RemoteProtocolError):
        await read_while_rewriting()
    assert 0 < received < values.nbytes
    resumed = await http.get(target, headers={"Range": f"bytes={received}-", "If-Range": etag})
    assert resumed.status_code == 200
    np.testing.assert_array_equal(decoded(resumed), rewritten)


async def test_a_selection_s_etag_covers_the_chunks_it_reads_only(home: Home) -> None:
    name, http = home
    node = await new_array(http, name, "stepped", "<i4", (12,), (2,))
    path, target = node["path"], f"/array/full/{url(node['path'])}"
    values = np.arange(12, dtype="<i4")
    await put_all(http, path, values, (2,))
    params = {"slice": "1::4"}  # elements 1, 5, 9: chunks 0, 2, 4 (a step over two chunks)
    first = await http.get(target, params=params)
    assert np.frombuffer(first.content, "<i4").tolist() == [1, 5, 9]
    etag = first.headers["etag"]

    async def rewrite(block: int) -> None:
        response = await http.put(
            f"/array/block/{url(path)}",
            params={"block": str(block)},
            content=np.array([-1, -2], dtype="<i4").tobytes(),
        )
        assert response.status_code == 204, response.text

    await rewrite(1)  # a chunk the step skips: the selection's bytes and its ETag stay
    same = await http.get(target, params=params, headers={"If-None-Match": etag})
    assert same.status_code == 304
    await rewrite(2)  # a chunk it reads: a new ETag, and the new bytes
    changed = await http.get(target, params=params, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert np.frombuffer(changed.content, "<i4").tolist() == [1, -2, 9]
