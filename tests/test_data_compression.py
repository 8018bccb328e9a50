"""Negotiated zstd compression of bulk reads, against the real server: reads with
``compression="zstd"`` equal numpy's and pyarrow's data, the wire carries zstd for data that
compresses and identity for random floats, ``zstd;q=0`` refuses it, a ``Range`` is answered
unencoded, ETags differ per form, and without ``zstandard`` asking for zstd is a clear error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pandas  # noqa: F401  (pyarrow imports it when first converting: here, not on the loop)
import pyarrow as pa
import pytest
import zstandard
from starlette.datastructures import Headers

import aiosdk
from aiosdk.catalog.arrays import AsyncArrayClient
from aiosdk.catalog.containers import AsyncContainer
from aiosdk.server import ServerThread
from aiosdk.server.data.arrays import ChunksChangedError
from aiosdk.server.http.encoding import accepts_zstd, encoded_etag, negotiated
from aiosdk.testing.accounts import AsyncAccounts

pytestmark = pytest.mark.anyio

ROWS = 1 << 20  # 8 MiB of float64: two probes' worth


async def _group(accounts: AsyncAccounts, hint: str) -> tuple[aiosdk.AsyncClient, AsyncContainer]:
    user = await accounts.user(hint)
    client = await accounts.client(user)
    return client, await client.catalog.create_container(f"{user.username}/{hint}")


class _Wire:
    """What the client's transport sent and got: each request's Accept-Encoding and each
    answer's Content-Encoding."""

    def __init__(self) -> None:
        self.sent: list[str | None] = []
        self.got: list[str | None] = []

    def reset(self) -> None:
        self.sent.clear()
        self.got.clear()


async def _watched(client: aiosdk.AsyncClient) -> _Wire:
    await client._ctx.transport._http_pool()  # (the pool is made on first use)
    pool = client._ctx.transport._pool
    assert pool is not None
    inner = pool.transport
    handle = inner.handle_async_request
    wire = _Wire()

    async def watched(request: httpx.Request) -> httpx.Response:
        response = await handle(request)
        if "/array/" in request.url.path or "/table/" in request.url.path:
            wire.sent.append(request.headers.get("accept-encoding"))
            wire.got.append(response.headers.get("content-encoding"))
        return response

    inner.handle_async_request = watched  # type: ignore[method-assign]
    return wire


@pytest.fixture
async def raw(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    """A plain httpx client of the server with the admin token (bodies read raw, as sent)."""
    async with httpx.AsyncClient(
        base_url=f"{server.http_url}/api/v1",
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    ) as client:
        yield client


async def _body(response: httpx.Response) -> bytes:
    """The body of an answer as it was sent (not decoded), the answer closed."""
    try:
        return b"".join([span async for span in response.aiter_raw()])
    finally:
        await response.aclose()


async def _zstd_body(response: httpx.Response) -> bytes:
    """The body of an answer read raw (as sent), decoded here when zstd-encoded."""
    body = await _body(response)
    if response.headers.get("content-encoding") == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return body


async def test_array_reads_with_zstd_equal_numpy_and_compress_on_the_wire(
    aiosdk_accounts: AsyncAccounts,
) -> None:
    client, grp = await _group(aiosdk_accounts, "zarrays")
    smooth = np.arange(ROWS, dtype="f8").reshape(1024, 1024)
    noise = np.random.default_rng(3).random((1024, 1024))
    a = await grp.write_array(smooth, key="smooth", chunks=(512, 1024))
    b = await grp.write_array(noise, key="noise", chunks=(512, 1024))
    wire = await _watched(client)

    assert np.array_equal(await a.read(compression="zstd"), smooth)
    assert wire.sent == ["zstd", "zstd"]
    assert wire.got == ["zstd", "zstd"]
    wire.reset()
    assert np.array_equal(await b.read(compression="zstd"), noise)
    assert wire.sent == ["zstd", "zstd"]
    assert wire.got == [None, None]
    wire.reset()

    # a selection (/array/full?slice=), a block, the blocks one by one
    part = await a.read(np.s_[3:1000:7, ::-3], compression="zstd")
    assert np.array_equal(part, smooth[3:1000:7, ::-3])
    assert np.array_equal(await a.read_block((1, 0), compression="zstd"), smooth[512:])
    blocks = [block async for _, block in a.iter_blocks(compression="zstd", concurrency=2)]
    assert np.array_equal(np.concatenate(blocks), smooth)
    assert set(wire.sent) == {"zstd"}
    assert set(wire.got) == {"zstd"}
    wire.reset()

    # without compression: identity asked for, identity sent
    assert np.array_equal(await a.read(), smooth)
    assert wire.sent == ["identity", "identity"]
    assert wire.got == [None, None]

    with pytest.raises(aiosdk.ConfigurationError, match="compression"):
        await a.read(compression="gzip")  # type: ignore[arg-type]


async def test_table_reads_with_zstd_equal_pyarrow(aiosdk_accounts: AsyncAccounts) -> None:
    client, grp = await _group(aiosdk_accounts, "ztables")
    table = pa.table(
        {
            "i": pa.array(np.arange(ROWS // 2, dtype=np.int64)),
            "z": pa.array(np.zeros(ROWS // 2)),
            "s": pa.array([f"row {k % 100}" for k in range(ROWS // 2)]),
        }
    )
    tbl = await grp.write_dataframe(table, key="t", partitions=3)
    wire = await _watched(client)
    assert (await tbl.read(as_="arrow", compression="zstd")).equals(table)
    assert wire.sent == ["zstd"]
    assert wire.got == ["zstd"]
    first = await tbl.read_partition(0, as_="arrow", compression="zstd")
    assert first.equals(table.slice(0, first.num_rows))
    parts = [p async for p in tbl.iter_partitions(as_="arrow", compression="zstd")]
    assert pa.concat_tables(parts).equals(table)
    assert set(wire.got) == {"zstd"}
    wire.reset()
    only = await tbl.read(columns=["i"], as_="arrow", compression="zstd")  # (rendered: as is)
    assert only.equals(table.select(["i"]))
    assert (await tbl.read(as_="arrow")).equals(table)
    assert wire.sent == ["zstd", "identity"]
    assert wire.got == [None, None]


async def test_the_server_negotiates_by_q_values_range_and_head(
    aiosdk_accounts: AsyncAccounts, raw: httpx.AsyncClient
) -> None:
    _, grp = await _group(aiosdk_accounts, "znegotiation")
    smooth = np.arange(ROWS, dtype="f8")
    arr = await grp.write_array(smooth, key="a", chunks=(ROWS,))
    assert isinstance(arr, AsyncArrayClient)
    url = f"/array/block/{arr.path}"
    params = {"block": "0"}

    async def get(**headers: str) -> httpx.Response:
        request = raw.build_request("GET", url, params=params, headers=headers)
        return await raw.send(request, stream=True)

    identity = await get(**{"Accept-Encoding": "identity"})
    assert "content-encoding" not in identity.headers
    assert identity.headers["vary"] == "Accept-Encoding"
    tag = identity.headers["etag"]
    assert await _zstd_body(identity) == smooth.tobytes()

    encoded = await get(**{"Accept-Encoding": "gzip, zstd;q=0.5"})
    assert encoded.headers["content-encoding"] == "zstd"
    assert encoded.headers["vary"] == "Accept-Encoding"
    assert encoded.headers["etag"] == encoded_etag(tag) == tag[:-1] + '-zstd"'
    body = await _body(encoded)
    assert len(body) < smooth.nbytes / 4  # arange floats: about an eighth
    assert zstandard.ZstdDecompressor().decompressobj().decompress(body) == smooth.tobytes()

    for refusal in ("zstd;q=0", "gzip, deflate", "*;q=0", "zstd;q=0.000, *", "zstd;q=2"):
        answer = await get(**{"Accept-Encoding": refusal})
        assert "content-encoding" not in answer.headers, refusal
        await answer.aclose()
    wildcard = await get(**{"Accept-Encoding": "*"})
    assert wildcard.headers["content-encoding"] == "zstd"
    await wildcard.aclose()

    # A Range is answered on the identity form (so a resume gets the same bytes)
    part = await get(**{"Accept-Encoding": "zstd", "Range": "bytes=100-", "If-Range": tag})
    assert part.status_code == 206
    assert "content-encoding" not in part.headers
    assert await _body(part) == smooth.tobytes()[100:]
    # A HEAD gets the identity form's headers (nothing compressed to answer it)
    head = await raw.head(url, params=params, headers={"Accept-Encoding": "zstd"})
    assert "content-encoding" not in head.headers
    assert head.headers["content-length"] == str(smooth.nbytes)
    # If-None-Match of the encoded form's tag: 304 with that tag
    cached = await get(**{"Accept-Encoding": "zstd", "If-None-Match": encoded_etag(tag)})
    assert cached.status_code == 304
    assert cached.headers["etag"] == encoded_etag(tag)
    await cached.aclose()

    # the whole table as one stream, raw
    tbl = await grp.write_dataframe(pa.table({"z": np.zeros(ROWS)}), key="t", partitions=2)
    answer = await raw.send(
        raw.build_request(
            "GET",
            f"/table/full/{tbl.path}",
            headers={"Accept-Encoding": "zstd", "Accept": "application/vnd.apache.arrow.stream"},
        ),
        stream=True,
    )
    assert answer.headers["content-encoding"] == "zstd"
    assert answer.headers["etag"].endswith('-zstd"')
    got = pa.ipc.open_stream(await _zstd_body(answer)).read_all()
    assert got.num_rows == ROWS
    assert got["z"].to_numpy().sum() == 0


def test_accept_encoding_is_parsed_with_q_values() -> None:
    def allows(value: str | None, **more: str) -> bool:
        headers: dict[str, Any] = {**more}
        if value is not None:
            headers["accept-encoding"] = value
        return accepts_zstd(Headers(headers))

    for allowed in ("zstd", "ZSTD", "gzip;q=1.0, zstd;q=0.001", "*", "zstd;q=1, *;q=0"):
        assert allows(allowed), allowed
    assert allows(" zstd ; q=0.5 ")
    for refused in (None, "", "identity", "zstd;q=0", "zstd;q=0.0, *", "*;q=0", "zstd;q=abc"):
        assert not allows(refused), refused  # (a malformed item is ignored)
    assert not allows("zstd", range="bytes=0-")


def test_asking_for_zstd_without_zstandard_is_a_missing_dependency_error() -> None:
    probe = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "zstandard" or name.startswith("zstandard."):
                    raise ImportError("zstandard is hidden")
        sys.meta_path.insert(0, Block())
        import aiosdk
        from aiosdk._core.compression import accept_encoding
        assert "zstandard" not in sys.modules
        assert accept_encoding(None) == {"Accept-Encoding": "identity"}
        try:
            accept_encoding("zstd")
        except aiosdk.MissingDependencyError as exc:
            print("missing:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "missing: compression='zstd' needs zstandard" in done.stdout
    assert "aiosdk[dataframe]" in done.stdout


async def test_asking_for_zstd_without_zstandard_fails_before_any_request(
    aiosdk_accounts: AsyncAccounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, grp = await _group(aiosdk_accounts, "znozstd")
    arr = await grp.write_array(np.arange(10.0), key="a")
    tbl = await grp.write_dataframe(pa.table({"x": [1, 2]}), key="t")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard raises ImportError
    with pytest.raises(aiosdk.MissingDependencyError, match=r"aiosdk\[dataframe\]"):
        await arr.read(compression="zstd")
    with pytest.raises(aiosdk.MissingDependencyError, match="zstandard"):
        await tbl.read_partition(0, compression="zstd")
    assert np.array_equal(await arr.read(), np.arange(10.0))  # no compression: no need of it


async def test_data_changed_under_the_probe_is_answered_as_usual() -> None:
    """A selection cut short while the probe reads it: no encoded answer, the route answers
    as it would without zstd (and is cut short there, once begun)."""

    async def changing() -> AsyncIterator[memoryview]:
        raise ChunksChangedError("changed")
        yield memoryview(b"")  # (an async generator)

    request = SimpleNamespace(scope={}, headers=Headers({"accept-encoding": "zstd"}))
    assert await negotiated(request, changing, 1 << 20, {}, "application/octet-stream") is None
