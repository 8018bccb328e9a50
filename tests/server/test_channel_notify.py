"""Channels across two servers sharing a PostgreSQL database (one process, two servers: what
each serves reaches the other only through the database and its notifications): a message sent
through one wakes a Listen stream of the other, a Listen stream of one takes over the other's,
presence events reach a Presence stream of the other."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from grpclib import Status
from grpclib.client import Channel

from aiosdk import proto
from aiosdk.server import Server, ServerConfig
from aiosdk.server.config import ChannelSettings

from .conftest import POSTGRES_URL_ENV, create_token, fresh_postgres_database, make_client, new_user
from .test_channel_service import GUARD, Listen, connected

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture(scope="module")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Server, Server]]:
    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        pytest.skip(f"PostgreSQL cases are off: {POSTGRES_URL_ENV} is not set or empty")
    settings = ChannelSettings(grace=3.0, heartbeat=5.0, sweep_interval=0.1)
    async with fresh_postgres_database(base_url) as url:
        first_dir: Path = tmp_path_factory.mktemp("first")
        first = ServerConfig(data_dir=first_dir, database_url=url, channels=settings)
        async with Server(first) as one:
            second = ServerConfig(
                data_dir=tmp_path_factory.mktemp("second"),
                database_url=url,
                channels=settings,
                keyring_file=first_dir / "keyring.json",
                admin_token=one.admin_token,
            )
            async with Server(second) as two:
                yield one, two


async def test_a_send_through_one_server_reaches_a_stream_of_the_other(
    servers: tuple[Server, Server],
) -> None:
    one, two = servers
    async with make_client(one, one.admin_token) as admin:
        name = await new_user(admin)
        token = (await create_token(admin, owner=name))["token"]
    bearer = {"authorization": f"Bearer {token}"}
    to_one, to_two = Channel(one.grpc_host, one.grpc_port), Channel(two.grpc_host, two.grpc_port)
    try:
        sender = proto.ChannelServiceStub(to_one, metadata=bearer)
        watcher = proto.ChannelServiceStub(to_one, metadata=bearer)
        made = await sender.create_channel(proto.CreateChannelRequest(client_id="x"))
        with anyio.fail_after(GUARD):
            events = watcher.presence(proto.PresenceRequest(after=0))
            listen = await Listen(to_two).open(made.token)
            await connected(listen)
            event = await anext(events)
            assert (event.client_id, event.kind) == ("x", proto.PresenceKind.CONNECTED)
            for i in range(3):
                await sender.send_message(
                    proto.SendMessageRequest(client_id="x", data=f"m{i}".encode())
                )
            got: list[bytes] = []
            while len(got) < 3:
                batch = await listen.messages()
                got += [m.data for m in batch.messages]
                await listen.ack(batch.messages[-1].offset)
            assert got == [b"m0", b"m1", b"m2"]
            newer = await Listen(to_one).open(made.token)  # takes over, from the other server
            await connected(newer)
            status, _ = await listen.ended()
            assert status is Status.ABORTED
            await newer.close()
            event = await anext(events)
            assert (event.kind, event.clean) == (proto.PresenceKind.DISCONNECTED, True)
            await events.aclose()
    finally:
        to_one.close()
        to_two.close()
