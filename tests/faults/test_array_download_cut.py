"""An array read whose connection is cut mid-block, against the real server through a proxy.

The proxy (:class:`~faults.proxy.TcpProxy`) relays HTTP/1.1 exchanges and cuts the first answer
to a block request after part of its body (a TCP reset). On asyncio the fast transport receives
each block's body straight into the result; on trio httpx's transport hands it over in spans.
Either way ``"forceful"`` resumes the block with ``Range`` where it stopped and the array reads
as written, ``"default"`` fetches the block again from its start, and ``"disabled"`` raises the
transport error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import numpy as np
import pytest

import aiosdk
from aiosdk.server import ServerThread
from aiosdk.testing.accounts import AsyncAccounts

from .proxy import TcpProxy

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
SHAPE, CHUNKS = (1024, 1024), (256, 1024)  # 8 MiB of float64 in 4 blocks of 2 MiB
CUT_AFTER = 3 * MiB // 2


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxy(server: ServerThread) -> Iterator[TcpProxy]:
    address = urlsplit(server.http_url)
    assert address.hostname is not None
    assert address.port is not None
    relay = TcpProxy(address.hostname, address.port).start()
    relay.cut_response_to("/api/v1/array/block/", CUT_AFTER)
    yield relay
    relay.stop()


def block_ranges(proxy: TcpProxy) -> list[str | None]:
    """The ``Range`` header (or None) of every block request the clients sent."""
    heads = re.findall(rb"GET /api/v1/array/block/.*?\r\n\r\n", bytes(proxy.sent), re.S)
    found = (re.search(rb"(?im)^range:(.*?)\r?$", head) for head in heads)
    return [None if match is None else match[1].strip().decode() for match in found]


async def written_array(accounts: AsyncAccounts) -> tuple[str, np.ndarray]:
    user = await accounts.user("cut")
    owner = await accounts.client(user)
    group = await owner.catalog.create_container(f"{user.username}/cut")
    data = np.random.default_rng(7).standard_normal(SHAPE)
    array = await group.write_array(data, key="a", chunks=CHUNKS)
    return array.path, data


@pytest.mark.parametrize(("mode", "resumed"), [("forceful", True), ("default", False)])
async def test_a_block_cut_mid_body_is_fetched_again_and_the_array_reads_as_written(
    proxy: TcpProxy,
    server: ServerThread,
    aiosdk_accounts: AsyncAccounts,
    mode: str,
    resumed: bool,
) -> None:
    path, data = await written_array(aiosdk_accounts)
    async with aiosdk.AsyncClient(
        proxy.url, token=server.admin_token, retry_mode=mode
    ) as through_proxy:
        array = await through_proxy.catalog.get(path)
        got = await array.read(concurrency=2)
    assert proxy.cuts
    np.testing.assert_array_equal(got, data)
    blocks = SHAPE[0] // CHUNKS[0]
    ranges = block_ranges(proxy)
    assert len(ranges) == blocks + 1  # the cut block was asked for twice
    asked = [range_ for range_ in ranges if range_ is not None]
    if resumed:
        (only,) = asked
        at = int(only.removeprefix("bytes=").removesuffix("-"))
        assert 0 < at <= CUT_AFTER  # from what had arrived when the connection broke
    else:
        assert asked == []


async def test_a_block_cut_mid_body_raises_when_retries_are_disabled(
    proxy: TcpProxy, server: ServerThread, aiosdk_accounts: AsyncAccounts
) -> None:
    path, _ = await written_array(aiosdk_accounts)
    async with aiosdk.AsyncClient(
        proxy.url, token=server.admin_token, retry_mode="disabled"
    ) as through_proxy:
        array = await through_proxy.catalog.get(path)
        with pytest.raises(aiosdk.TransportError):
            await array.read(concurrency=1)
    assert proxy.cuts
    assert block_ranges(proxy)[-1] is None
