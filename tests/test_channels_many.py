"""More channel connections on one client than one HTTP/2 connection's default stream limit
(100): the server advertises a far higher ``SETTINGS_MAX_CONCURRENT_STREAMS``, and the client,
against a server that keeps h2's 100, opens another connection instead of waiting forever for
a stream slot. Against real servers over loopback (ours, and a plain grpclib one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream

import aiosdk
from aiosdk._core.transport import DEFAULT_MAX_CONCURRENT_STREAMS, _GrpcChannels
from aiosdk.proto import ListenRequest, ListenResponse
from aiosdk.server import ServerConfig, ServerThread

pytestmark = pytest.mark.anyio

WITHIN = 60.0
"""A hang guard, generous: the suite runs under load."""
OPEN = 150
"""Streams open at once on one client: more than h2's default limit of 100."""
LISTEN = "/aiosdk.v1.ChannelService/Listen"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerThread]:
    thread = ServerThread(ServerConfig(data_dir=tmp_path_factory.mktemp("channels-many")))
    await anyio.to_thread.run_sync(thread.start)
    try:
        yield thread
    finally:
        await anyio.to_thread.run_sync(thread.stop)


async def test_one_client_holds_more_than_a_hundred_channel_connections(
    server: ServerThread,
) -> None:
    ids = [f"many-{i:03d}" for i in range(OPEN)]
    async with (
        aiosdk.AsyncClient(server.http_url, token=server.admin_token) as app,
        aiosdk.AsyncClient(server.http_url) as holder,
    ):
        tokens = {client_id: await app.channels.create_channel(client_id) for client_id in ids}
        received: dict[str, Any] = {}
        connected = 0
        first_connected = anyio.Event()
        all_connected = anyio.Event()
        with anyio.fail_after(WITHIN):
            async with anyio.create_task_group() as tg:

                async def listen(client_id: str) -> None:
                    nonlocal connected
                    async with holder.channels.connect(tokens[client_id]) as ch:
                        connected += 1
                        first_connected.set()
                        if connected == OPEN:
                            all_connected.set()
                        received[client_id] = await ch.__anext__()

                # The first alone: the client learns the server's limit from its settings (until
                # then it assumes h2's default), and the rest share its connection.
                tg.start_soon(listen, ids[0])
                await first_connected.wait()
                for client_id in ids[1:]:
                    tg.start_soon(listen, client_id)
                await all_connected.wait()  # every stream open at once, before the send
                await app.channels.broadcast(ids, "to all of them")
        # The server allows them all on one HTTP/2 connection.
        grpc = holder._ctx.transport._grpc
        assert grpc is not None
        assert len(grpc.channels) == 1
    assert set(received) == set(ids)
    assert {message.data for message in received.values()} == {"to all of them"}


class _Holding:
    """A bare grpclib service: ``Listen`` answers once and holds the stream open until the
    client ends it."""

    def __mapping__(self) -> dict[str, Handler]:
        return {
            LISTEN: Handler(self.listen, Cardinality.STREAM_STREAM, ListenRequest, ListenResponse)
        }

    async def listen(self, stream: Stream[ListenRequest, ListenResponse]) -> None:
        await stream.recv_message()
        await stream.send_message(ListenResponse())
        while await stream.recv_message() is not None:
            pass


async def test_the_client_opens_another_connection_when_one_is_full() -> None:
    # A plain grpclib server keeps h2's limit of 100 streams per connection: stream 101 on the
    # same connection would wait, unbounded, for one of the others to end.
    raw = Server([_Holding()])
    await raw.start("127.0.0.1", 0)
    assert raw._server is not None
    port = raw._server.sockets[0].getsockname()[1]
    pool = _GrpcChannels("127.0.0.1", port, None)
    opened = 0
    all_open = anyio.Event()
    release = anyio.Event()

    async def hold() -> None:
        nonlocal opened
        slot = pool.acquire()
        try:
            async with slot.channel.request(
                LISTEN, Cardinality.STREAM_STREAM, ListenRequest, ListenResponse
            ) as stream:
                await stream.send_message(ListenRequest())
                assert await stream.recv_message() is not None
                opened += 1
                if opened == OPEN:
                    all_open.set()
                await release.wait()
                await stream.end()
                assert await stream.recv_message() is None
        finally:
            pool.release(slot)

    try:
        with anyio.fail_after(WITHIN):
            async with anyio.create_task_group() as tg:
                for _ in range(OPEN):
                    tg.start_soon(hold)
                await all_open.wait()
                assert len(pool.channels) == -(-OPEN // DEFAULT_MAX_CONCURRENT_STREAMS)
                release.set()
    finally:
        for channel in pool.channels:
            channel.close()
        raw.close()
        await raw.wait_closed()
