"""Channels across a restart of the real server (the same data directory and ports): stored
messages survive it, and a connection open across it resumes by position, every message once
and in order; tokens signed before it still work after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

import aiosdk
from aiosdk.server import ServerConfig, ServerThread

pytestmark = pytest.mark.anyio

ADMIN_TOKEN = "channels-restart-admin-token"
WITHIN = 30.0  # a hang guard, not a timing assertion


class RestartableServer:
    """The reference server, which can be stopped and started again on the same ports/data."""

    def __init__(self, data_dir: Path) -> None:
        self._config = ServerConfig(data_dir=data_dir, admin_token=ADMIN_TOKEN)
        self.thread = ServerThread(self._config)
        self.thread.start()
        port = urlsplit(self.thread.http_url).port
        assert port is not None
        self._config.http_port, self._config.grpc_port = port, self.thread.grpc_port
        self.http_url = self.thread.http_url

    def stop(self) -> None:
        self.thread.stop()

    def start_again(self) -> None:
        self.thread = ServerThread(self._config)
        self.thread.start()

    async def restart(self) -> None:
        await anyio.to_thread.run_sync(self.stop)
        await anyio.to_thread.run_sync(self.start_again)


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[RestartableServer]:
    server = RestartableServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
async def app(restartable: RestartableServer) -> AsyncIterator[aiosdk.AsyncClient]:
    """A new user's client with an API token (it survives the restart: it is in the database)."""
    async with aiosdk.AsyncClient(restartable.http_url, token=ADMIN_TOKEN) as admin:
        name = f"chrestart-{uuid.uuid4().hex[:12]}"
        await admin.admin.create_user(name)
        made = await admin._ctx.request("POST", "/tokens", json={"label": "app", "owner": name})
        token = made.json()["token"]
    async with aiosdk.AsyncClient(
        restartable.http_url, token=token, retry_mode="forceful"
    ) as client:
        yield client


async def next_message(ch: Any) -> Any:
    with anyio.fail_after(WITHIN):
        return await ch.__anext__()


async def test_stored_messages_survive_a_restart(
    restartable: RestartableServer, app: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("durable")
    positions = [await app.channels.send_message("durable", f"d{i}") for i in range(5)]
    await restartable.restart()
    async with (
        aiosdk.AsyncClient(restartable.http_url) as holder,
        holder.channels.connect(token) as ch,
    ):
        got = [await next_message(ch) for _ in range(5)]
    assert [m.data for m in got] == [f"d{i}" for i in range(5)]
    assert [m.position for m in got] == positions  # the same epoch and offsets
    assert await app.channels.send_message("durable", "after") is not None


async def test_a_connection_open_across_a_restart_resumes_exactly_once(
    restartable: RestartableServer, app: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("across")
    sent = [f"a{i}" for i in range(15)]
    for data in sent[:10]:
        await app.channels.send_message("across", data)
    got: list[Any] = []
    async with (
        aiosdk.AsyncClient(restartable.http_url) as holder,
        holder.channels.connect(token, window=3) as ch,
    ):
        while len(got) < len(sent):
            got.append(await next_message(ch))
            if len(got) == 4:
                await restartable.restart()  # the stream ends (UNAVAILABLE) mid-way
            if len(got) == 10:
                for data in sent[10:]:
                    await app.channels.send_message("across", data)
    assert [m.data for m in got] == sent  # none lost, none twice, in order
    assert [m.position.offset for m in got] == list(range(1, 16))
