"""``set_threads()`` swaps in a pool of the new size; the old one must not stay open."""

from __future__ import annotations

import anyio
import pytest

import aiosdk

from .scripted import ScriptedServer, delayed

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def connections_settle(server: ScriptedServer, at_most: int) -> int:
    for _ in range(500):  # closed connections reach the server's side within moments
        if server.open_connections <= at_most:
            break
        await anyio.sleep(0.01)
    return server.open_connections


async def test_resizing_closes_the_old_pool(scripted: ScriptedServer) -> None:
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        for threads in range(1, 31):
            client.set_threads(threads)
            await client.server_info()
        # Thirty pools were made; only the one in use keeps its connection (it used to be 30).
        assert await connections_settle(scripted, 1) == 1
    assert await connections_settle(scripted, 0) == 0


async def test_a_call_running_on_a_retired_pool_completes(scripted: ScriptedServer) -> None:
    scripted.script(delayed(0.3))
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.server_info)  # slow, on the first pool
            for _ in range(500):
                if scripted.requests:
                    break
                await anyio.sleep(0.01)
            client.set_threads(4)  # retires the pool under the running call
            await client.server_info()  # on the new pool
        assert await connections_settle(scripted, 1) == 1  # the old pool closed after its call
