"""Channels end to end, against the real server over loopback (SQLite and PostgreSQL): the issue's
snippet as written (the holder of the token connects with a client that has no credentials),
every seed operation, live delivery in order, resumption by position and continuity lost,
replacement and expiry of tokens, atomic pops under concurrent callers, leases, presence events,
a full queue, oversize messages and bad client ids, owners kept apart, and 1,000 channels open
at once on one server."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from server.conftest import POSTGRES_URL_ENV, fresh_postgres_database

import aiosdk
from aiosdk.server import ServerConfig, ServerThread
from aiosdk.server.config import ChannelSettings

pytestmark = pytest.mark.anyio

WITHIN = 20.0
"""How long a condition may take to hold (a hang guard, generous: the suite runs under load)."""
QUEUE = 30
"""The module server's ``max_queue``."""
MAX_MESSAGE = 32 * 1024
MANY = 1000
HOLDERS = 20
"""Clients holding the ``MANY`` connections: a server takes 100 streams per HTTP/2 connection."""


# -- the module's server, on SQLite and on PostgreSQL ------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """The suite's blockbuster, but asyncpg reads ~/.pgpass when it connects (as in
    tests/server/conftest.py)."""
    with blockbuster_ctx() as bb:
        for function in bb.functions.values():
            function.can_block_in("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args")
        yield bb


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)],
)
async def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerThread]:
    """A server with a small queue bound, for this module, on each database."""
    if request.param == "sqlite":
        async for thread in _serving(tmp_path_factory, None):
            yield thread
        return
    import os

    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        pytest.skip(f"PostgreSQL cases are off: {POSTGRES_URL_ENV} is unset or empty")
    async with fresh_postgres_database(base_url) as url:
        async for thread in _serving(tmp_path_factory, url):
            yield thread


async def _serving(
    tmp_path_factory: pytest.TempPathFactory, database_url: str | None
) -> AsyncIterator[ServerThread]:
    config = ServerConfig(
        data_dir=tmp_path_factory.mktemp("channels"),
        database_url=database_url,
        channels=ChannelSettings(max_queue=QUEUE),
    )
    thread = ServerThread(config)
    await anyio.to_thread.run_sync(thread.start)
    try:
        yield thread
    finally:
        await anyio.to_thread.run_sync(thread.stop)


class Apps:
    """New users of the module's server, each with a client holding an API token (no password:
    nothing to hash), closed after the test."""

    def __init__(self, server: ServerThread, admin: aiosdk.AsyncClient) -> None:
        self.server = server
        self.admin = admin
        self.opened: list[aiosdk.AsyncClient] = []

    async def new(self, **options: Any) -> aiosdk.AsyncClient:
        name = f"ch-{uuid.uuid4().hex[:12]}"
        await self.admin.admin.create_user(name)
        made = await self.admin._ctx.request(
            "POST", "/tokens", json={"label": "app", "owner": name}
        )
        client = aiosdk.AsyncClient(self.server.http_url, token=made.json()["token"], **options)
        self.opened.append(client)
        return client


@pytest.fixture
async def apps(server: ServerThread) -> AsyncIterator[Apps]:
    async with aiosdk.AsyncClient(server.http_url, token=server.admin_token) as admin:
        made = Apps(server, admin)
        try:
            yield made
        finally:
            for client in made.opened:
                await client.aclose()


@pytest.fixture
async def app(apps: Apps) -> aiosdk.AsyncClient:
    """The application: a new user's client (its presence events are this test's only)."""
    return await apps.new()


@pytest.fixture
async def holder(server: ServerThread) -> AsyncIterator[aiosdk.AsyncClient]:
    """Whoever holds a token: a client of the same server with no credentials at all."""
    async with aiosdk.AsyncClient(server.http_url) as client:
        yield client


# -- helpers ------------------------------------------------------------------------------------


async def next_message(ch: aiosdk.channels.AsyncChannelConnection) -> Any:
    with anyio.fail_after(WITHIN):
        return await ch.__anext__()


async def take(ch: aiosdk.channels.AsyncChannelConnection, n: int) -> list[Any]:
    """The next ``n`` messages of ``ch`` (the connection stays open)."""
    return [await next_message(ch) for _ in range(n)]


async def presence(
    app: aiosdk.AsyncClient, until: Callable[[list[Any]], bool], *, after: int = 0
) -> list[Any]:
    """The owner's presence events after ``after`` (0: every one kept), read until ``until``
    holds for what was read."""
    events: list[Any] = []
    with anyio.fail_after(WITHIN):
        async with aclosing(app.channels.presence(after=after)) as stream:  # type: ignore[type-var]
            async for event in stream:
                events.append(event)
                if until(events):
                    break
    return events


def kinds(events: Sequence[Any]) -> list[tuple[str, str, bool]]:
    return [(e.client_id, e.kind, e.clean) for e in events]


def count(n: int) -> Callable[[list[Any]], bool]:
    return lambda events: len(events) >= n


def datas(messages: Sequence[Any]) -> list[str | bytes]:
    return [m.data for m in messages]


def forged(token: str) -> str:
    """``token`` with one character of its signature changed."""
    head, dot, signature = token.rpartition(".")
    assert dot, "a channel token is payload.signature"
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{flipped}{signature[1:]}"


MALFORMED = ["", "x", "aio_ch_", "aio_ch_.", "aio_ch_!!!.###", "not a token at all " * 20]


# -- the issue's snippet ------------------------------------------------------------------------


async def test_the_issue_snippet_as_written(server: ServerThread, app: aiosdk.AsyncClient) -> None:
    client, url = app, server.http_url
    token = await client.channels.create_channel("device-17", duration_minutes=120)
    sent = await client.channels.send_message("device-17", "hello")  # str or bytes, ≤ 32 KiB
    await client.channels.send_message("device-17", b"\x00\xffbytes")
    received: list[Any] = []
    # elsewhere, with only the token (no login needed):
    # (the issue writes aiosdk.AsyncClient(url).channels.connect(token): that client is never
    # closed, and grpclib warns of its connection when it is collected; so it is closed here)
    async with aiosdk.AsyncClient(url) as device, device.channels.connect(token) as ch:
        async for message in ch:  # live, in order
            received.append(message)
            if len(received) == 2:
                await client.channels.send_message("device-17", "live")
            if len(received) == 3:
                break
        assert ch.client_id == "device-17"
        assert token not in repr(ch)
    assert datas(received) == ["hello", b"\x00\xffbytes", "live"]
    assert [m.position.offset for m in received] == [1, 2, 3]
    assert {m.position.epoch for m in received} == {sent.epoch}
    assert received[0].position == sent
    assert all(m.sent_at.tzinfo is not None for m in received)
    # the application learns when the client connected and disconnected (it said so: clean)
    events = await presence(client, count(2))
    assert kinds(events) == [("device-17", "connected", False), ("device-17", "disconnected", True)]
    assert events[0].id < events[1].id
    assert all(isinstance(e.at, dt.datetime) for e in events)


async def test_the_application_calls_need_credentials(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("needs-login")
    with pytest.raises(aiosdk.AuthenticationError):
        await holder.channels.create_channel("needs-login")
    with pytest.raises(aiosdk.AuthenticationError):
        await holder.channels.send_message("needs-login", "x")
    with pytest.raises(aiosdk.AuthenticationError):
        await presence(holder, count(1))
    # ... and the token holder's do not (the token is the credential)
    assert await holder.channels.validate_token_and_extract_client_id(token) == "needs-login"


async def test_a_read_only_token_cannot_create_or_send(
    server: ServerThread, app: aiosdk.AsyncClient
) -> None:
    await app.channels.create_channel("ro")
    read_only = await app.tokens.create("read only", scope="read")
    async with aiosdk.AsyncClient(server.http_url, token=read_only.secret.reveal()) as reader:
        with pytest.raises(aiosdk.PermissionDeniedError):
            await reader.channels.create_channel("ro-2")
        with pytest.raises(aiosdk.PermissionDeniedError):
            await reader.channels.send_message("ro", "x")


# -- the seed's operations ----------------------------------------------------------------------


async def test_client_id_from_token(app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient) -> None:
    token = await app.channels.create_channel("seed-id")
    assert token.startswith("aio_")
    assert await holder.channels.client_id_from_token(token) == "seed-id"
    for bad in [*MALFORMED, forged(token), token + "x", token[:-3]]:
        assert await holder.channels.client_id_from_token(bad) is None, bad


async def test_validate_token_and_extract_client_id(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("seed-valid", duration_minutes=1)
    assert await holder.channels.validate_token_and_extract_client_id(token) == "seed-valid"
    for bad in [*MALFORMED, forged(token)]:
        with pytest.raises(aiosdk.InvalidTokenError) as raised:
            await holder.channels.validate_token_and_extract_client_id(bad)
        assert token not in str(raised.value)
    newer = await app.channels.create_channel("seed-valid")  # replaces it
    with pytest.raises(aiosdk.TokenTimedOutError) as timed_out:
        await holder.channels.validate_token_and_extract_client_id(token)
    assert isinstance(timed_out.value, aiosdk.NotFoundError)
    assert token not in str(timed_out.value)
    assert token not in repr(timed_out.value)
    assert await holder.channels.validate_token_and_extract_client_id(newer) == "seed-valid"


async def test_get_has_pop_clear(app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient) -> None:
    token = await app.channels.create_channel("seed-queue")
    ops = holder.channels
    assert await ops.get_channel_messages(token) == []
    assert await ops.has_channel_messages(token) is False
    assert await ops.pop_first_message(token) is None
    sent = ["one", b"two", "three", "fourth \u00e9\u6f22"]
    for message in sent:
        await app.channels.send_message("seed-queue", message)
    assert await ops.has_channel_messages(token) is True
    assert await ops.get_channel_messages(token) == sent  # oldest first, types kept
    assert await ops.get_channel_messages(token) == sent  # reading removes nothing
    assert await ops.pop_first_message(token) == "one"
    assert await ops.pop_first_message(token) == b"two"
    assert await ops.get_channel_messages(token) == sent[2:]
    await ops.clear_channel_messages(token)
    assert await ops.has_channel_messages(token) is False
    assert await ops.get_channel_messages(token) == []
    assert await ops.pop_first_message(token) is None
    # offsets go on after a clear; the epoch is new
    position = await app.channels.send_message("seed-queue", "after clear")
    assert position.offset >= 1
    assert await ops.get_channel_messages(token) == ["after clear"]


async def test_connect_channel_and_disconnect_channel_event(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("seed-presence")
    await holder.channels.connect_channel(token)
    await holder.channels.connect_channel(token)  # refreshes it: no second event
    await holder.channels.disconnect_channel_event(token)
    await holder.channels.disconnect_channel_event(token)  # not connected: no event
    await holder.channels.connect_channel(token)
    events = await presence(app, count(3))
    assert kinds(events) == [
        ("seed-presence", "connected", False),
        ("seed-presence", "disconnected", True),
        ("seed-presence", "connected", False),
    ]
    await holder.channels.disconnect_channel_event(token)
    (last,) = await presence(app, count(1), after=events[-1].id)
    assert kinds([last]) == [("seed-presence", "disconnected", True)]


async def test_connect_and_pop_first_message(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("seed-cpop")
    assert await holder.channels.connect_and_pop_first_message(token) is None  # empty: connects
    await app.channels.send_message("seed-cpop", "a")
    await app.channels.send_message("seed-cpop", b"b")
    assert await holder.channels.connect_and_pop_first_message(token) == "a"
    assert await holder.channels.connect_and_pop_first_message(token) == b"b"
    assert await holder.channels.connect_and_pop_first_message(token) is None
    await holder.channels.disconnect_channel_event(token)
    events = await presence(app, count(2))
    assert kinds(events) == [
        ("seed-cpop", "connected", False),
        ("seed-cpop", "disconnected", True),
    ]


async def test_every_token_holder_call_refuses_a_replaced_token(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    old = await app.channels.create_channel("seed-replaced")
    await app.channels.send_message("seed-replaced", "kept")
    new = await app.channels.create_channel("seed-replaced")
    assert new != old
    ops = holder.channels
    calls = {
        "get": ops.get_channel_messages,
        "has": ops.has_channel_messages,
        "pop": ops.pop_first_message,
        "clear": ops.clear_channel_messages,
        "connect": ops.connect_channel,
        "connect_and_pop": ops.connect_and_pop_first_message,
        "disconnect": ops.disconnect_channel_event,
    }
    for name, call in calls.items():
        with pytest.raises(aiosdk.TokenTimedOutError):
            await call(old)
        with pytest.raises(aiosdk.InvalidTokenError):  # and a forged one is refused too
            await call(forged(new))
        assert name  # (for the traceback)
    with pytest.raises(aiosdk.TokenTimedOutError):
        async with ops.connect(old) as ch:
            await next_message(ch)
    # the queue and its epoch were kept for the new token
    assert await ops.get_channel_messages(new) == ["kept"]


# -- delivery -----------------------------------------------------------------------------------


async def test_live_delivery_in_order_while_sending(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("live")
    n = 25
    async with holder.channels.connect(token, window=4) as ch, anyio.create_task_group() as tg:

        async def send_all() -> None:
            for i in range(n):
                await app.channels.send_message("live", f"m{i}")

        tg.start_soon(send_all)
        got = await take(ch, n)
    assert datas(got) == [f"m{i}" for i in range(n)]
    assert [m.position.offset for m in got] == list(range(1, n + 1))
    assert ch.position == got[-1].position or ch.position == got[-2].position
    # what the loop consumed was acknowledged: removed from the queue
    left = await holder.channels.get_channel_messages(token)
    assert left in ([], [f"m{n - 1}"])


async def test_a_connection_resumes_after_a_position(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("resume")
    positions = [await app.channels.send_message("resume", f"r{i}") for i in range(6)]
    async with holder.channels.connect(token, after=positions[2]) as ch:
        got = await take(ch, 3)
    assert datas(got) == ["r3", "r4", "r5"]
    # resuming counts everything up to the position as acknowledged
    assert "r2" not in await holder.channels.get_channel_messages(token)


async def test_a_stale_epoch_raises_continuity_lost(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("stale")
    await app.channels.send_message("stale", "before")
    async with holder.channels.connect(token) as ch:
        (first,) = await take(ch, 1)
    await holder.channels.clear_channel_messages(token)  # the history is lost: a new epoch
    after_clear = await app.channels.send_message("stale", "after")
    assert after_clear.epoch != first.position.epoch
    with pytest.raises(aiosdk.ContinuityLostError) as lost:
        async with holder.channels.connect(token, after=first.position) as ch:
            await next_message(ch)
    assert isinstance(lost.value, aiosdk.StatusError)
    assert token not in str(lost.value)
    beyond = aiosdk.channels.ChannelPosition(after_clear.epoch, after_clear.offset + 5)
    with pytest.raises(aiosdk.ContinuityLostError):
        async with holder.channels.connect(token, after=beyond) as ch:
            await next_message(ch)
    # nothing was skipped silently: the message of the new epoch is still there
    async with holder.channels.connect(token, after=None) as ch:
        (got,) = await take(ch, 1)
    assert got.data == "after"
    assert got.position == after_clear


async def test_a_clear_while_streaming_raises_continuity_lost(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("clear-live")
    await app.channels.send_message("clear-live", "one")

    async def listen() -> None:
        async with holder.channels.connect(token) as ch:
            await take(ch, 1)
            await holder.channels.clear_channel_messages(token)
            await app.channels.send_message("clear-live", "two")
            await take(ch, 1)

    with pytest.raises(aiosdk.ContinuityLostError):
        await listen()


async def test_a_newer_connection_takes_over(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("takeover")
    await app.channels.send_message("takeover", "first")
    async with holder.channels.connect(token) as older:
        assert datas(await take(older, 1)) == ["first"]  # yielded, not yet consumed
        async with holder.channels.connect(token) as newer:
            await app.channels.send_message("takeover", "second")
            got = await take(newer, 1)
            if got[-1].data == "first":  # never consumed by the older: the newer has it
                got += await take(newer, 1)
            assert datas(got)[-1] == "second"
            with pytest.raises(aiosdk.ConflictError):
                await next_message(older)


async def test_pop_skips_messages_leased_to_a_live_stream(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("lease")
    for data in ("l1", "l2", "l3"):
        await app.channels.send_message("lease", data)
    async with holder.channels.connect(token, window=2) as ch:
        assert datas(await take(ch, 1)) == ["l1"]  # the stream holds l1 and l2
        assert await holder.channels.pop_first_message(token) == "l3"
        assert await holder.channels.pop_first_message(token) is None
        assert datas(await take(ch, 1)) == ["l2"]


async def test_replacement_ends_the_old_stream_and_keeps_the_queue(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    old = await app.channels.create_channel("replace")
    first = await app.channels.send_message("replace", "one")
    tokens: list[str] = []
    connections: list[Any] = []

    async def listen() -> None:
        async with holder.channels.connect(old) as ch:
            connections.append(ch)
            assert datas(await take(ch, 1)) == ["one"]
            tokens.append(await app.channels.create_channel("replace"))
            await app.channels.send_message("replace", "two")
            await take(ch, 1)

    with pytest.raises(aiosdk.TokenTimedOutError):
        await listen()
    (new,) = tokens
    (ended,) = connections
    assert ended.position == first  # "one" was consumed (the loop asked for the next)
    async with holder.channels.connect(new, after=ended.position) as ch:
        got = await take(ch, 1)
    assert got[-1].data == "two"
    assert got[-1].position.epoch == first.epoch  # the channel, its epoch and offsets are kept
    assert got[-1].position.offset == 2
    assert await holder.channels.client_id_from_token(new) == "replace"


async def test_expiry_ends_a_stream_and_the_token(
    server: ServerThread, app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    """The shortest duration is a minute: the channel's row is given an expiry seconds away
    (as the server's own clock would, a minute on), then a stream on it ends when it comes."""
    client_id = f"expiring-{uuid.uuid4().hex[:8]}"
    token = await app.channels.create_channel(client_id, duration_minutes=1)
    await app.channels.send_message(client_id, "before")
    await expire_soon(server, client_id, seconds=3)
    received: list[Any] = []

    async def listen() -> None:
        async with holder.channels.connect(token) as ch:
            while True:
                received.append(await next_message(ch))

    with pytest.raises(aiosdk.TokenTimedOutError):
        await listen()
    assert datas(received) == ["before"]  # delivered while it lived; then the stream ended
    with pytest.raises(aiosdk.TokenTimedOutError):
        await holder.channels.validate_token_and_extract_client_id(token)
    with pytest.raises(aiosdk.NotFoundError):  # an expired channel takes no more messages
        await app.channels.send_message(client_id, "after")
    # a new channel for the id: a fresh epoch, offsets from 1, the old queue gone
    fresh = await app.channels.create_channel(client_id)
    position = await app.channels.send_message(client_id, "new")
    assert position.offset == 1
    assert await holder.channels.get_channel_messages(fresh) == ["new"]


async def expire_soon(server: ServerThread, client_id: str, *, seconds: float) -> None:
    """Make the channel of ``client_id`` (a name unique on the server) expire in ``seconds``."""
    from sqlalchemy import update

    from aiosdk.server.channels.models import Channel
    from aiosdk.server.storage import create_engine, default_database_url, session_factory

    url = server.server.config.database_url or default_database_url(server.data_dir)
    engine = await anyio.to_thread.run_sync(create_engine, url)
    try:
        async with session_factory(engine)() as db, db.begin():
            when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
            changed = await db.execute(
                update(Channel).where(Channel.client_id == client_id).values(expires_at=when)
            )
            assert changed.rowcount == 1  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


# -- concurrency --------------------------------------------------------------------------------


async def test_concurrent_pops_give_each_message_to_one_caller(
    server: ServerThread, app: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("race")
    sent = [f"x{i}" for i in range(QUEUE)]
    for data in sent:
        await app.channels.send_message("race", data)
    popped: list[tuple[int, str | bytes]] = []
    clients = [aiosdk.AsyncClient(server.http_url) for _ in range(4)]
    try:

        async def caller(n: int) -> None:
            channels = clients[n % len(clients)].channels
            pop = channels.connect_and_pop_first_message if n % 2 else channels.pop_first_message
            while (message := await pop(token)) is not None:
                popped.append((n, message))

        with anyio.fail_after(WITHIN):
            async with anyio.create_task_group() as tg:
                for n in range(16):
                    tg.start_soon(caller, n)
    finally:
        for client in clients:
            await client.aclose()
    got = [message for _, message in popped]
    assert sorted(got) == sorted(sent)  # every message once: none lost, none twice
    assert len({n for n, _ in popped}) > 1  # (they did race)
    assert await app.channels.send_message("race", "more")  # the queue has room again


# -- limits -------------------------------------------------------------------------------------


async def test_a_full_queue_raises_channel_full(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("full")
    other = await app.channels.create_channel("not-full")
    for i in range(QUEUE):
        await app.channels.send_message("full", str(i))
    with pytest.raises(aiosdk.ChannelFullError) as full:
        await app.channels.send_message("full", "one too many")
    assert isinstance(full.value, aiosdk.RateLimitError)
    assert str(QUEUE) in str(full.value)
    # a broadcast to a full queue stores nothing anywhere
    with pytest.raises(aiosdk.ChannelFullError):
        await app.channels.broadcast(["not-full", "full"], "to both")
    assert await holder.channels.get_channel_messages(other) == []
    assert len(await holder.channels.get_channel_messages(token)) == QUEUE
    # popping one makes room for one
    assert await holder.channels.pop_first_message(token) == "0"
    await app.channels.send_message("full", "fits now")
    with pytest.raises(aiosdk.ChannelFullError):
        await app.channels.send_message("full", "full again")


async def test_an_oversize_message_is_refused_before_sending(
    app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    token = await app.channels.create_channel("big")
    largest = b"\x01" * MAX_MESSAGE
    await app.channels.send_message("big", largest)
    text = "\u00e9" * (MAX_MESSAGE // 2)  # 32 KiB of UTF-8
    await app.channels.send_message("big", text)
    for oversize in (largest + b"!", text + "e", "\u00e9" * (MAX_MESSAGE // 2 + 1)):
        with pytest.raises(aiosdk.MessageTooLargeError) as raised:
            await app.channels.send_message("big", oversize)
        assert isinstance(raised.value, aiosdk.RequestTooLargeError)
        with pytest.raises(aiosdk.MessageTooLargeError):
            await app.channels.broadcast(["big"], oversize)
        # refused before any call: a client id without a channel would be NotFoundError
        with pytest.raises(aiosdk.MessageTooLargeError):
            await app.channels.send_message("no-such-channel", oversize)
    assert await holder.channels.get_channel_messages(token) == [largest, text]


async def test_bad_client_ids_are_refused(app: aiosdk.AsyncClient) -> None:
    await app.channels.create_channel("x" * 64)
    await app.channels.create_channel("\u00e9" * 32)  # 64 bytes
    await app.channels.create_channel("\u6f22\u5b57 with spaces/and:punctuation")
    for bad in ("", "x" * 65, "\u00e9" * 33, "tab\there", "nul\x00", "newline\n", "\x7f"):
        with pytest.raises(aiosdk.InvalidChannelIdError) as raised:
            await app.channels.create_channel(bad)
        assert isinstance(raised.value, ValueError)
        with pytest.raises(aiosdk.InvalidChannelIdError):
            await app.channels.send_message(bad, "x")
    for minutes in (0, -1, 1441):
        with pytest.raises((ValueError, aiosdk.BadRequestError)):
            await app.channels.create_channel("durations", duration_minutes=minutes)
    assert await app.channels.create_channel("durations", duration_minutes=1440)


async def test_a_send_without_a_live_channel_is_not_found(app: aiosdk.AsyncClient) -> None:
    with pytest.raises(aiosdk.NotFoundError) as raised:
        await app.channels.send_message("never-created", "lost?")
    assert not isinstance(raised.value, aiosdk.TokenTimedOutError)
    await app.channels.create_channel("exists")
    with pytest.raises(aiosdk.NotFoundError):  # all or nothing: "exists" got nothing either
        await app.channels.broadcast(["exists", "never-created"], "x")


async def test_broadcast(app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient) -> None:
    ids = [f"b{i}" for i in range(5)]
    tokens = [await app.channels.create_channel(i) for i in ids]
    await app.channels.send_message("b3", "first for b3")
    positions = await app.channels.broadcast(ids, b"to all")
    assert [p.offset for p in positions] == [1, 1, 1, 2, 1]  # in the request's order
    assert len({p.epoch for p in positions}) == 5  # each channel its own epoch
    for token, client_id in zip(tokens, ids, strict=True):
        expected = [b"to all"] if client_id != "b3" else ["first for b3", b"to all"]
        assert await holder.channels.get_channel_messages(token) == expected


async def test_owners_are_kept_apart(
    apps: Apps, app: aiosdk.AsyncClient, holder: aiosdk.AsyncClient
) -> None:
    other = await apps.new()
    mine = await app.channels.create_channel("device-1")
    theirs = await other.channels.create_channel("device-1")  # the same id, another owner
    await app.channels.send_message("device-1", "for mine")
    assert await holder.channels.get_channel_messages(theirs) == []
    assert await holder.channels.get_channel_messages(mine) == ["for mine"]
    await holder.channels.connect_channel(theirs)
    events = await presence(other, count(1))
    assert kinds(events) == [("device-1", "connected", False)]
    with pytest.raises(aiosdk.NotFoundError):
        await other.channels.send_message("device-2", "x")
    assert await app.channels.create_channel("device-2")
    with pytest.raises(aiosdk.NotFoundError):  # app's device-2 is not other's
        await other.channels.send_message("device-2", "x")


# -- fan-out ------------------------------------------------------------------------------------


async def test_a_thousand_channels_open_at_once(
    server: ServerThread, app: aiosdk.AsyncClient, request: pytest.FixtureRequest
) -> None:
    if "postgresql" in request.node.name:
        pytest.skip("one database is enough for this one (1,000 creates cost ~20 s)")
    ids = [f"fan-{i:04d}" for i in range(MANY)]
    tokens: dict[str, str] = {}
    limiter = anyio.CapacityLimiter(32)

    async def create(client_id: str) -> None:
        async with limiter:
            tokens[client_id] = await app.channels.create_channel(client_id)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for client_id in ids:
                tg.start_soon(create, client_id)
    holders = [aiosdk.AsyncClient(server.http_url) for _ in range(HOLDERS)]
    received: dict[str, list[Any]] = {}
    try:
        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:

                async def listen(n: int, client_id: str) -> None:
                    channels = holders[n % len(holders)].channels
                    async with channels.connect(tokens[client_id]) as ch:
                        received[client_id] = await take(ch, 1)

                for n, client_id in enumerate(ids):
                    tg.start_soon(listen, n, client_id)
                # every one of them is connected at once (none disconnected) before the send
                events = await presence(app, count(MANY))
                assert [k for k in kinds(events) if k[1] != "connected"] == []
                assert sorted(e.client_id for e in events) == ids
                for start in range(0, MANY, 250):
                    await app.channels.broadcast(ids[start : start + 250], "to everyone")
    finally:
        for client in holders:
            await client.aclose()
    assert set(received) == set(ids)
    for client_id in ids:
        (message,) = received[client_id]
        assert message.data == "to everyone"
        assert message.position.offset == 1
