"""Channels through a real loopback TCP proxy in front of the server's gRPC port: a connection
cut mid-stream is resumed by position (every message once, in order), a dirty disconnect is a
presence event after the grace period (none if the client came back within it), a silent peer
is noticed, and a send or pop whose reply was lost is applied once when retried.

Discovery goes to a scripted HTTP server that names the proxy as the gRPC endpoint; the
application's own client talks to the server directly.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

import aiosdk
from aiosdk.server import ServerConfig, ServerThread
from aiosdk.server.config import ChannelSettings

from .conftest import RetryLog
from .proxy import TcpProxy
from .scripted import ScriptedServer

pytestmark = pytest.mark.anyio

WITHIN = 20.0  # a hang guard, not a timing assertion
QUICK_GRACE = 0.3  # a dropped connection is a disconnect this soon (the "quick" server)
HEARTBEAT = 0.3  # the quick server's heartbeat: silence for 3x this is a dropped connection


@pytest.fixture(scope="module")
def quick() -> Iterator[ServerThread]:
    """A server that reports dropped connections after a short grace, and beats often."""
    settings = ChannelSettings(grace=QUICK_GRACE, sweep_interval=0.1, heartbeat=HEARTBEAT)
    with ServerThread(ServerConfig(channels=settings)) as thread:
        yield thread


@pytest.fixture(scope="module")
def patient() -> Iterator[ServerThread]:
    """A server whose grace outlasts any test: a reconnect always comes within it."""
    with ServerThread(ServerConfig(channels=ChannelSettings(grace=600.0))) as thread:
        yield thread


@dataclass
class Setup:
    """A server, a TCP proxy in front of its gRPC port, discovery naming the proxy, and a new
    user of the server (the application) with a client straight to it."""

    server: ServerThread
    relay: TcpProxy
    scripted: ScriptedServer
    app: aiosdk.AsyncClient
    app_token: str

    def holder(self, **options: Any) -> aiosdk.AsyncClient:
        """A client with no credentials whose gRPC calls go through the proxy."""
        return aiosdk.AsyncClient(self.scripted.url, **options)

    def proxied_app(self, **options: Any) -> aiosdk.AsyncClient:
        """The application with an API token of its own, its gRPC calls through the proxy."""
        return aiosdk.AsyncClient(self.scripted.url, token=self.app_token, **options)


@asynccontextmanager
async def through_a_proxy(server: ServerThread) -> AsyncIterator[Setup]:
    relay = await anyio.to_thread.run_sync(TcpProxy(server.grpc_host, server.grpc_port).start)
    scripted = await anyio.to_thread.run_sync(ScriptedServer().start)
    scripted.grpc_port = relay.port
    try:
        async with aiosdk.AsyncClient(server.http_url, token=server.admin_token) as admin:
            token = await new_user_token(admin)
            async with aiosdk.AsyncClient(server.http_url, token=token) as app:
                yield Setup(server, relay, scripted, app, token)
    finally:
        await anyio.to_thread.run_sync(scripted.stop)
        await anyio.to_thread.run_sync(relay.stop)


async def new_user_token(admin: aiosdk.AsyncClient) -> str:
    """An API token of a new user (no password: nothing to hash)."""
    name = f"chcut-{uuid.uuid4().hex[:12]}"
    await admin.admin.create_user(name)
    made = await admin._ctx.request("POST", "/tokens", json={"label": "app", "owner": name})
    token: str = made.json()["token"]
    return token


async def next_message(ch: Any) -> Any:
    with anyio.fail_after(WITHIN):
        return await ch.__anext__()


async def presence(app: aiosdk.AsyncClient, until: Callable[[list[Any]], bool]) -> list[Any]:
    """Every presence event of the application's (a new user: this test's only), read until
    ``until`` holds."""
    events: list[Any] = []
    with anyio.fail_after(WITHIN):
        async with aclosing(app.channels.presence(after=0)) as stream:  # type: ignore[type-var]
            async for event in stream:
                events.append(event)
                if until(events):
                    break
    return events


def kinds(events: Sequence[Any]) -> list[tuple[str, str, bool]]:
    return [(e.client_id, e.kind, e.clean) for e in events]


# -- a connection cut mid-stream ----------------------------------------------------------------


async def test_a_cut_connection_resumes_in_order_and_exactly_once(patient: ServerThread) -> None:
    async with through_a_proxy(patient) as setup:
        app = setup.app
        token = await app.channels.create_channel("cut")
        sent = [f"m{i}" for i in range(30)]
        for data in sent[:20]:  # waiting: the stream is fed in windows of 4
            await app.channels.send_message("cut", data)
        got: list[Any] = []
        async with setup.holder() as holder, holder.channels.connect(token, window=4) as ch:
            while len(got) < len(sent):
                got.append(await next_message(ch))
                if len(got) == 6:
                    setup.relay.cut_after(1)  # the next byte the server sends: mid-stream
                if len(got) == 20:
                    for data in sent[20:]:  # and live ones after the reconnect
                        await app.channels.send_message("cut", data)
            assert ch.client_id == "cut"
        assert setup.relay.cuts == 1
        assert setup.relay.connections >= 2  # it reconnected
        assert [m.data for m in got] == sent  # none lost, none twice, in order
        assert [m.position.offset for m in got] == list(range(1, 31))
        assert len({m.position.epoch for m in got}) == 1
        events = await presence(app, lambda e: len(e) >= 2)
        # a reconnect within the grace is no disconnect: one connection, closed cleanly
        assert kinds(events) == [("cut", "connected", False), ("cut", "disconnected", True)]


async def test_a_cut_connection_raises_when_retries_are_disabled(quick: ServerThread) -> None:
    async with through_a_proxy(quick) as setup:
        app = setup.app
        token = await app.channels.create_channel("no-retry")
        await app.channels.send_message("no-retry", "one")
        received: list[Any] = []

        async def listen(holder: aiosdk.AsyncClient) -> None:
            async with holder.channels.connect(token) as ch:
                received.append(await next_message(ch))
                setup.relay.cut_after(1)
                await app.channels.send_message("no-retry", "two")
                received.append(await next_message(ch))

        async with setup.holder(retry_mode="disabled") as holder:
            with pytest.raises((aiosdk.TransportError, aiosdk.ServiceUnavailableError)):
                await listen(holder)
        assert [m.data for m in received] == ["one"]
        assert setup.relay.connections == 1


# -- presence on a dirty disconnect -------------------------------------------------------------


async def test_a_dropped_connection_is_a_dirty_disconnect_after_the_grace(
    quick: ServerThread,
) -> None:
    async with through_a_proxy(quick) as setup:
        app = setup.app
        token = await app.channels.create_channel("dirty")
        await app.channels.send_message("dirty", "one")

        async def listen(holder: aiosdk.AsyncClient) -> None:
            async with holder.channels.connect(token) as ch:
                await next_message(ch)
                setup.relay.cut_after(1)
                await app.channels.send_message("dirty", "two")
                await next_message(ch)

        async with setup.holder(retry_mode="disabled") as holder:
            with pytest.raises((aiosdk.TransportError, aiosdk.ServiceUnavailableError)):
                await listen(holder)
        events = await presence(app, lambda e: len(e) >= 2)
        assert kinds(events) == [("dirty", "connected", False), ("dirty", "disconnected", False)]
        # the message the cut stream never acknowledged is still there
        assert "two" in await app.channels.get_channel_messages(token)


async def test_a_connect_channel_not_refreshed_is_a_dirty_disconnect(quick: ServerThread) -> None:
    async with through_a_proxy(quick) as setup, setup.holder() as holder:
        token = await setup.app.channels.create_channel("unrefreshed")
        await holder.channels.connect_channel(token)
        events = await presence(setup.app, lambda e: len(e) >= 2)
        assert kinds(events) == [
            ("unrefreshed", "connected", False),
            ("unrefreshed", "disconnected", False),
        ]


async def test_a_silent_peer_is_noticed(quick: ServerThread) -> None:
    """A connection that hears nothing (not even heartbeats) is treated as dropped."""
    async with through_a_proxy(quick) as setup:
        token = await setup.app.channels.create_channel("silent")
        await setup.app.channels.send_message("silent", "one")

        async def listen(holder: aiosdk.AsyncClient) -> None:
            async with holder.channels.connect(token) as ch:
                await next_message(ch)
                setup.relay.blackhole()
                await next_message(ch)

        async with setup.holder(retry_mode="disabled") as holder:
            with pytest.raises((aiosdk.TransportError, aiosdk.ServiceUnavailableError)):
                await listen(holder)


# -- lost replies, retried ----------------------------------------------------------------------


async def test_a_send_whose_reply_was_lost_is_stored_once(
    patient: ServerThread, retry_log: RetryLog
) -> None:
    async with (
        through_a_proxy(patient) as setup,
        setup.proxied_app(retry_mode="forceful") as proxied,
    ):
        token = await setup.app.channels.create_channel("once")
        await proxied.get_status()  # the gRPC channel is open: the next reply is the send's
        setup.relay.drop_next_grpc_reply()
        position = await proxied.channels.send_message("once", "exactly once")
        assert setup.relay.dropped == 1
        assert retry_log.retries
        assert position.offset == 1
        setup.relay.drop_next_grpc_reply()
        positions = await proxied.channels.broadcast(["once"], b"broadcast once")
        assert setup.relay.dropped == 2
        assert [p.offset for p in positions] == [2]
        assert await setup.app.channels.get_channel_messages(token) == [
            "exactly once",
            b"broadcast once",
        ]


async def test_a_pop_whose_reply_was_lost_answers_the_same_message(
    patient: ServerThread, retry_log: RetryLog
) -> None:
    async with (
        through_a_proxy(patient) as setup,
        setup.holder(retry_mode="forceful") as holder,
    ):
        app = setup.app
        token = await app.channels.create_channel("pop-once")
        for data in ("a", "b", "c"):
            await app.channels.send_message("pop-once", data)
        assert await holder.channels.has_channel_messages(token)  # opens the gRPC channel
        setup.relay.drop_next_grpc_reply()
        assert await holder.channels.pop_first_message(token) == "a"
        setup.relay.drop_next_grpc_reply()
        assert await holder.channels.connect_and_pop_first_message(token) == "b"
        assert setup.relay.dropped == 2
        assert len(retry_log.retries) >= 2
        assert await app.channels.get_channel_messages(token) == ["c"]  # none popped twice
