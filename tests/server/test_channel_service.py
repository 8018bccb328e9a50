"""The gRPC channel service, over loopback with grpclib's betterproto2 stubs (and raw grpclib
streams for Listen): tokens, limits, queues, idempotent replays, pops, Listen (resume, acks,
window, continuity, takeover, expiry), presence, anonymous token-holder calls."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel, Stream
from grpclib.const import Cardinality
from grpclib.exceptions import StreamTerminatedError
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk import proto
from aiosdk.cli import build_parser
from aiosdk.cli.serve import server_config
from aiosdk.server import Server, ServerConfig
from aiosdk.server.channels.models import Channel as ChannelRow
from aiosdk.server.config import ChannelSettings

from .conftest import Users, create_token, unique, unit

pytestmark = pytest.mark.anyio

GRACE = 2.0
HEARTBEAT = 0.3
MAX_QUEUE = 8
GUARD = 60  # seconds: a hang guard, not a timing assertion
LISTEN = "/aiosdk.v1.ChannelService/Listen"


@pytest.fixture(scope="module")
async def server(
    database_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    """A server with short presence timings and small queues."""
    config = ServerConfig(
        data_dir=tmp_path_factory.mktemp("data"),
        database_url=database_url,
        channels=ChannelSettings(
            grace=GRACE, heartbeat=HEARTBEAT, sweep_interval=0.1, max_queue=MAX_QUEUE, window=4
        ),
    )
    async with Server(config) as running:
        yield running


class App:
    """A user's channel service stub (bearer) and an anonymous one (token holders)."""

    def __init__(self, name: str, token: str, channel: Channel) -> None:
        self.name = name
        self.token = token
        self.channel = channel
        self.stub = self.with_key(None)
        self.holder = proto.ChannelServiceStub(channel)

    def with_key(self, key: str | None) -> proto.ChannelServiceStub:
        metadata = {"authorization": f"Bearer {self.token}"}
        if key is not None:
            metadata["idempotency-key"] = key
        return proto.ChannelServiceStub(self.channel, metadata=metadata)

    def holder_with_key(self, key: str) -> proto.ChannelServiceStub:
        return proto.ChannelServiceStub(self.channel, metadata={"idempotency-key": key})

    async def create(self, client_id: str, minutes: int | None = None) -> proto.ChannelToken:
        return await self.stub.create_channel(
            proto.CreateChannelRequest(client_id=client_id, duration_minutes=minutes)
        )

    async def send(self, client_id: str, data: bytes | str) -> proto.ChannelPosition:
        text = isinstance(data, str)
        raw = data.encode() if isinstance(data, str) else data
        sent = await self.stub.send_message(
            proto.SendMessageRequest(client_id=client_id, data=raw, text=text)
        )
        assert sent.position is not None
        return sent.position


@pytest.fixture
async def app(users: Users, channel: Channel) -> App:
    name = await _new_user(users)
    token = (await create_token(users.admin, owner=name))["token"]
    return App(name, token, channel)


async def _new_user(users: Users) -> str:
    name, _ = await users.new()
    return name


async def refused(call: Any, status: Status) -> str:
    with pytest.raises(GRPCError) as info:
        await call
    assert info.value.status is status, (info.value.status, info.value.message)
    assert info.value.message
    return info.value.message


def client() -> str:
    return unique("c")


class Listen:
    """A raw Listen stream."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self.stream: Stream[proto.ListenRequest, proto.ListenResponse] | None = None
        self._cm: Any = None

    async def open(
        self, token: str, after: proto.ChannelPosition | None = None, window: int = 0
    ) -> Listen:
        self._cm = self._channel.request(
            LISTEN, Cardinality.STREAM_STREAM, proto.ListenRequest, proto.ListenResponse
        )
        self.stream = await self._cm.__aenter__()
        await self.stream.send_message(
            proto.ListenRequest(start=proto.ListenStart(token=token, after=after, window=window))
        )
        return self

    async def recv(self) -> proto.ListenResponse:
        assert self.stream is not None
        message = await self.stream.recv_message()
        assert message is not None
        return message

    async def messages(self) -> proto.ChannelMessages:
        """The next batch (heartbeats skipped)."""
        while True:
            response = await self.recv()
            if response.messages is not None:
                return response.messages
            assert response.heartbeat is not None

    async def ack(self, offset: int) -> None:
        assert self.stream is not None
        await self.stream.send_message(proto.ListenRequest(ack=proto.ListenAck(offset=offset)))

    async def close(self) -> None:
        assert self.stream is not None
        await self.stream.send_message(proto.ListenRequest(close=proto.ListenClose()), end=True)
        while await self.stream.recv_message() is not None:
            pass
        await self.stream.recv_trailing_metadata()
        await self._cm.__aexit__(None, None, None)

    async def ended(self) -> tuple[Status, str]:
        """Read until the stream ends with an error: its status and message."""
        with pytest.raises(GRPCError) as info:
            await self._until_ended()
        await self.abort()
        return info.value.status, info.value.message or ""

    async def _until_ended(self) -> None:
        assert self.stream is not None
        try:
            while True:
                message = await self.stream.recv_message()
                if message is None:
                    await self.stream.recv_trailing_metadata()
        except StreamTerminatedError as exc:
            # (the server resets a stream it ended while the client may still send: the status
            # is in the trailers it sent first, which grpclib's __aexit__ reads)
            cm, self._cm = self._cm, None
            await cm.__aexit__(type(exc), exc, exc.__traceback__)

    async def abort(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            await self.stream.cancel() if self.stream is not None else None
            with contextlib.suppress(Exception):
                await cm.__aexit__(None, None, None)


async def connected(listen: Listen) -> proto.ListenConnected:
    response = await listen.recv()
    assert response.connected is not None
    return response.connected


# --- tokens ---


async def test_create_and_inspect(app: App) -> None:
    made = await app.create("alice", 5)
    assert made.token.startswith("aio_ch_")
    assert made.client_id == "alice"
    assert made.epoch
    assert made.expires_at is not None
    assert (
        timedelta(minutes=4) < made.expires_at - datetime.now(timezone.utc) <= timedelta(minutes=5)
    )
    info = await app.holder.inspect_token(proto.TokenRequest(token=made.token))
    assert (info.client_id, info.live) == ("alice", True)
    assert info.expires_at == made.expires_at
    default = await app.create(client())
    assert default.expires_at is not None
    assert default.expires_at - datetime.now(timezone.utc) > timedelta(minutes=119)
    for minutes in (0, 1441):
        await refused(app.create(client(), minutes), Status.INVALID_ARGUMENT)


async def test_malformed_and_forged_tokens_are_unauthenticated(app: App) -> None:
    made = await app.create(client())
    body, _, signature = made.token.removeprefix("aio_ch_").partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["i"] = "mallory"
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    bad = [
        "",
        "nonsense",
        "aio_ch_",
        "aio_ch_!!!.x",
        made.token[:-3] + "AAA",
        f"aio_ch_{forged_body}.{signature}",
        "aio_ch_" + "A" * 5000,
    ]
    for token in bad:
        message = await refused(
            app.holder.get_messages(proto.TokenRequest(token=token)), Status.UNAUTHENTICATED
        )
        assert made.token not in message
        await refused(
            app.holder.inspect_token(proto.TokenRequest(token=token)), Status.UNAUTHENTICATED
        )


async def test_a_replaced_token_is_not_found_and_the_queue_is_kept(app: App) -> None:
    cid = client()
    first = await app.create(cid)
    await app.send(cid, "kept")
    second = await app.create(cid)
    assert second.epoch == first.epoch  # the same channel
    await refused(app.holder.get_messages(proto.TokenRequest(token=first.token)), Status.NOT_FOUND)
    info = await app.holder.inspect_token(proto.TokenRequest(token=first.token))
    assert not info.live
    got = await app.holder.get_messages(proto.TokenRequest(token=second.token))
    assert [m.data for m in got.messages] == [b"kept"]
    assert got.epoch == first.epoch


async def test_an_expired_channel_is_not_found_and_starts_anew(
    app: App, database: async_sessionmaker[AsyncSession]
) -> None:
    cid = client()
    made = await app.create(cid)
    await app.send(cid, "old")
    async with unit(database) as db:
        await db.execute(
            update(ChannelRow)
            .where(ChannelRow.owner == app.name, ChannelRow.client_id == cid)
            .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        )
    await refused(app.holder.has_messages(proto.TokenRequest(token=made.token)), Status.NOT_FOUND)
    await refused(app.send(cid, "x"), Status.NOT_FOUND)
    again = await app.create(cid)
    assert again.epoch != made.epoch
    got = await app.holder.get_messages(proto.TokenRequest(token=again.token))
    assert got.messages == []
    assert (await app.send(cid, "new")).offset == 1


async def test_owners_are_separate_and_read_only_tokens_are_refused(
    app: App, users: Users, channel: Channel
) -> None:
    other = App(await _new_user(users), "", channel)
    other.token = (await create_token(users.admin, owner=other.name))["token"]
    other.stub = other.with_key(None)
    cid = client()
    await app.create(cid)
    await refused(other.send(cid, "x"), Status.NOT_FOUND)
    reader = App(app.name, "", channel)
    reader.token = (await create_token(users.admin, owner=app.name, scope="read"))["token"]
    reader.stub = reader.with_key(None)
    await refused(reader.create(client()), Status.PERMISSION_DENIED)
    await refused(reader.send(cid, "x"), Status.PERMISSION_DENIED)


async def test_anonymous_calls_only_for_token_holders(app: App, channel: Channel) -> None:
    anonymous = proto.ChannelServiceStub(channel)
    await refused(
        anonymous.create_channel(proto.CreateChannelRequest(client_id="x")),
        Status.UNAUTHENTICATED,
    )
    await refused(
        anonymous.send_message(proto.SendMessageRequest(client_id="x", data=b"")),
        Status.UNAUTHENTICATED,
    )
    await refused(
        anonymous.broadcast(proto.BroadcastRequest(client_ids=["x"], data=b"")),
        Status.UNAUTHENTICATED,
    )
    wrong = proto.ChannelServiceStub(channel, metadata={"authorization": "Bearer aio_nope"})
    made = await app.create(client())
    await refused(wrong.has_messages(proto.TokenRequest(token=made.token)), Status.UNAUTHENTICATED)
    assert not (await anonymous.has_messages(proto.TokenRequest(token=made.token))).has_messages
    # (a bearer sent anyway is fine when valid)
    assert not (await app.stub.has_messages(proto.TokenRequest(token=made.token))).has_messages


# --- limits and queues ---


async def test_client_id_and_message_limits(app: App) -> None:
    for bad in ("", "x" * 65, "é" * 33, "a\nb", "tab\there", "\x00"):
        await refused(app.create(bad), Status.INVALID_ARGUMENT)
    good = "é" * 32  # 64 bytes
    await app.create(good)
    await app.send(good, b"\x00" * 32 * 1024)
    await refused(app.send(good, b"\x00" * (32 * 1024 + 1)), Status.INVALID_ARGUMENT)
    await refused(
        app.stub.send_message(proto.SendMessageRequest(client_id=good, data=b"\xff", text=True)),
        Status.INVALID_ARGUMENT,
    )


async def test_queue_full_and_offsets(app: App) -> None:
    cid = client()
    made = await app.create(cid)
    offsets = [(await app.send(cid, f"m{i}")).offset for i in range(MAX_QUEUE)]
    assert offsets == list(range(1, MAX_QUEUE + 1))
    message = await refused(app.send(cid, "one too many"), Status.RESOURCE_EXHAUSTED)
    assert f"full ({MAX_QUEUE} messages)" in message
    got = await app.holder.get_messages(proto.TokenRequest(token=made.token))
    assert [m.data for m in got.messages] == [f"m{i}".encode() for i in range(MAX_QUEUE)]
    assert all(m.text for m in got.messages)
    popped = await app.holder.pop_message(proto.PopMessageRequest(token=made.token))
    assert popped.message is not None
    assert popped.message.data == b"m0"
    assert (await app.send(cid, "fits")).offset == MAX_QUEUE + 1


async def test_broadcast_is_all_or_nothing(app: App) -> None:
    ids = [client() for _ in range(5)]
    tokens = [(await app.create(cid)).token for cid in ids]
    sent = await app.stub.broadcast(proto.BroadcastRequest(client_ids=ids, data=b"hi"))
    assert [p.offset for p in sent.positions] == [1] * 5
    await refused(
        app.stub.broadcast(proto.BroadcastRequest(client_ids=[*ids, "nobody"], data=b"no")),
        Status.NOT_FOUND,
    )
    for token in tokens:
        got = await app.holder.get_messages(proto.TokenRequest(token=token))
        assert [m.data for m in got.messages] == [b"hi"]
    many = [client() for _ in range(60)]
    for cid in many:
        await app.create(cid)
    sent = await app.stub.broadcast(proto.BroadcastRequest(client_ids=many, data=b"all"))
    assert len(sent.positions) == 60
    await refused(
        app.stub.broadcast(proto.BroadcastRequest(client_ids=[], data=b"")),
        Status.INVALID_ARGUMENT,
    )


async def test_idempotent_send_and_pop_replays(app: App) -> None:
    cid = client()
    made = await app.create(cid)
    key = str(uuid.uuid4())
    request = proto.SendMessageRequest(client_id=cid, data=b"once")
    first = await app.with_key(key).send_message(request)
    again = await app.with_key(key).send_message(request)
    assert first.position == again.position
    got = await app.holder.get_messages(proto.TokenRequest(token=made.token))
    assert [m.data for m in got.messages] == [b"once"]
    await app.send(cid, "two")
    pop_key = str(uuid.uuid4())
    pop = proto.PopMessageRequest(token=made.token)
    popped = await app.holder_with_key(pop_key).pop_message(pop)
    replayed = await app.holder_with_key(pop_key).pop_message(pop)
    assert popped.message is not None
    assert replayed.message is not None
    assert popped.message.data == replayed.message.data == b"once"
    left = await app.holder.get_messages(proto.TokenRequest(token=made.token))
    assert [m.data for m in left.messages] == [b"two"]


async def test_concurrent_pops_never_return_the_same_message(app: App) -> None:
    cid = client()
    made = await app.create(cid)
    for i in range(MAX_QUEUE):
        await app.send(cid, f"m{i}")
    got: list[bytes] = []

    async def pop() -> None:
        popped = await app.holder.pop_message(proto.PopMessageRequest(token=made.token))
        if popped.message is not None:
            got.append(popped.message.data)

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            for _ in range(MAX_QUEUE + 4):
                group.start_soon(pop)
    assert sorted(got) == sorted(f"m{i}".encode() for i in range(MAX_QUEUE))
    empty = await app.holder.pop_message(proto.PopMessageRequest(token=made.token))
    assert empty.message is None


async def test_clear_gives_a_new_epoch(app: App) -> None:
    cid = client()
    made = await app.create(cid)
    for i in range(3):
        await app.send(cid, f"m{i}")
    cleared = await app.holder.clear_messages(proto.TokenRequest(token=made.token))
    assert cleared.cleared == 3
    assert cleared.epoch != made.epoch
    assert not (await app.holder.has_messages(proto.TokenRequest(token=made.token))).has_messages
    after = await app.send(cid, "next")
    assert after.epoch == cleared.epoch
    assert after.offset == 4  # offsets never go back


async def test_disconnect_removes_what_the_holder_consumed(app: App) -> None:
    cid = client()
    made = await app.create(cid)
    for i in range(4):
        await app.send(cid, f"m{i}")
    token = proto.TokenRequest(token=made.token)
    await app.holder.connect_channel(token)

    def consumed(epoch: str, offset: int) -> proto.DisconnectChannelRequest:
        acked = proto.ChannelPosition(epoch=epoch, offset=offset)
        return proto.DisconnectChannelRequest(token=made.token, acked=acked)

    assert (await app.holder.disconnect_channel(consumed("another epoch", 3))).disconnected
    left = await app.holder.get_messages(token)
    assert [m.offset for m in left.messages] == [1, 2, 3, 4]  # not this channel's history
    await app.holder.disconnect_channel(consumed(made.epoch, 2))
    left = await app.holder.get_messages(token)
    assert [m.data for m in left.messages] == [b"m2", b"m3"]


# --- Listen ---


async def test_listen_acks_window_and_resume(app: App, channel: Channel) -> None:
    cid = client()
    made = await app.create(cid)
    for i in range(6):
        await app.send(cid, f"m{i}")
    with anyio.fail_after(GUARD):
        listen = await Listen(channel).open(made.token, window=4)
        hello = await connected(listen)
        assert (hello.client_id, hello.epoch) == (cid, made.epoch)
        assert hello.heartbeat_seconds == HEARTBEAT
        batch = await listen.messages()
        assert [m.offset for m in batch.messages] == [1, 2, 3, 4]  # the window
        # leased to the live stream: a pop skips them
        popped = await app.holder.pop_message(proto.PopMessageRequest(token=made.token))
        assert popped.message is not None
        assert popped.message.offset == 5
        await listen.ack(2)
        batch = await listen.messages()
        assert [m.offset for m in batch.messages] == [6]
        sent = await app.send(cid, "live")
        batch = await listen.messages()
        assert [(m.offset, m.data) for m in batch.messages] == [(sent.offset, b"live")]
        heartbeat = await listen.recv()  # nothing more to send: a heartbeat
        assert heartbeat.heartbeat is not None
        await listen.ack(4)
        await listen.abort()  # dropped, not closed

        position = proto.ChannelPosition(epoch=made.epoch, offset=6)
        resumed = await Listen(channel).open(made.token, after=position)
        await connected(resumed)
        batch = await resumed.messages()
        assert [m.data for m in batch.messages] == [b"live"]
        await resumed.close()
    left = await app.holder.get_messages(proto.TokenRequest(token=made.token))
    assert [m.offset for m in left.messages] == [7]  # not acknowledged


async def test_listen_out_of_range(app: App, channel: Channel) -> None:
    cid = client()
    made = await app.create(cid)
    await app.send(cid, "a")
    with anyio.fail_after(GUARD):
        for after in (
            proto.ChannelPosition(epoch="other", offset=0),
            proto.ChannelPosition(epoch=made.epoch, offset=2),
        ):
            listen = await Listen(channel).open(made.token, after=after)
            status, message = await listen.ended()
            assert status is Status.OUT_OF_RANGE
            assert "continuity lost" in message
        listen = await Listen(channel).open(made.token)
        await connected(listen)
        await listen.messages()
        await app.holder.clear_messages(proto.TokenRequest(token=made.token))
        status, message = await listen.ended()
        assert status is Status.OUT_OF_RANGE


async def test_listen_takeover_replacement_and_expiry(
    app: App, channel: Channel, database: async_sessionmaker[AsyncSession]
) -> None:
    cid = client()
    made = await app.create(cid)
    with anyio.fail_after(GUARD):
        older = await Listen(channel).open(made.token)
        await connected(older)
        newer = await Listen(channel).open(made.token)
        await connected(newer)
        status, message = await older.ended()
        assert (status, message) == (Status.ABORTED, "another connection took over this channel")
        await app.create(cid)  # a new token: the old one's stream ends
        status, _ = await newer.ended()
        assert status is Status.NOT_FOUND

        cid = client()
        made = await app.create(cid)
        listen = await Listen(channel).open(made.token)
        await connected(listen)
        async with unit(database) as db:
            await db.execute(
                update(ChannelRow)
                .where(ChannelRow.owner == app.name, ChannelRow.client_id == cid)
                .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
            )
        status, _ = await listen.ended()  # (the sweep removes the channel, the stream looks)
        assert status is Status.NOT_FOUND

        bad = await Listen(channel).open("aio_ch_forged.sig")
        status, _ = await bad.ended()
        assert status is Status.UNAUTHENTICATED


# --- presence ---


async def presence_events(
    app: App, count: int, after: int | None = None
) -> list[proto.PresenceEvent]:
    events: list[proto.PresenceEvent] = []
    async for event in app.stub.presence(proto.PresenceRequest(after=after)):
        events.append(event)
        if len(events) == count:
            break
    return events


async def test_presence_clean_and_after_grace(app: App, channel: Channel) -> None:
    cid = client()
    made = await app.create(cid)
    token = proto.TokenRequest(token=made.token)
    kinds = proto.PresenceKind
    with anyio.fail_after(GUARD):
        assert (await app.holder.connect_channel(token)).connected
        assert not (await app.holder.connect_channel(token)).connected  # refreshed
        gone = proto.DisconnectChannelRequest(token=made.token)
        assert (await app.holder.disconnect_channel(gone)).disconnected
        assert not (await app.holder.disconnect_channel(gone)).disconnected
        events = await presence_events(app, 2, after=0)
        assert [(e.client_id, e.kind, e.clean) for e in events] == [
            (cid, kinds.CONNECTED, False),
            (cid, kinds.DISCONNECTED, True),
        ]
        last = events[-1].id

        await app.holder.connect_channel(token)  # not refreshed: the sweep disconnects it
        events = await presence_events(app, 2, after=last)
        assert [(e.kind, e.clean) for e in events] == [
            (kinds.CONNECTED, False),
            (kinds.DISCONNECTED, False),
        ]
        last = events[-1].id

        listen = await Listen(channel).open(made.token)
        await connected(listen)
        await anyio.sleep(GRACE * 1.5)  # refreshed by the server while open: still connected
        await listen.close()
        events = await presence_events(app, 2, after=last)
        assert [(e.kind, e.clean) for e in events] == [
            (kinds.CONNECTED, False),
            (kinds.DISCONNECTED, True),
        ]
        last = events[-1].id

        listen = await Listen(channel).open(made.token)
        await connected(listen)
        await listen.abort()  # dropped: disconnected after the grace period
        events = await presence_events(app, 2, after=last)
        assert [(e.kind, e.clean) for e in events] == [
            (kinds.CONNECTED, False),
            (kinds.DISCONNECTED, False),
        ]


async def test_presence_from_now_on(app: App) -> None:
    cid = client()
    made = await app.create(cid)
    await app.holder.connect_channel(proto.TokenRequest(token=made.token))
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as group:
            got: list[proto.PresenceEvent] = []

            async def watch() -> None:
                got.extend(await presence_events(app, 1))

            group.start_soon(watch)
            await anyio.sleep(0.2)
            await app.holder.disconnect_channel(proto.DisconnectChannelRequest(token=made.token))
    assert [(e.kind, e.clean) for e in got] == [(proto.PresenceKind.DISCONNECTED, True)]


async def test_fan_out_and_concurrent_sends_arrive_in_order_once(
    app: App, channel: Channel
) -> None:
    """Messages sent while streams listen (handed to them after the commit, or read when a
    stream had no room): every stream gets every message once, in order."""
    ids = [client() for _ in range(5)]
    tokens = [(await app.create(cid)).token for cid in ids]
    count = MAX_QUEUE * 3
    with anyio.fail_after(GUARD):
        streams = [await Listen(channel).open(token, window=3) for token in tokens]
        for stream in streams:
            await connected(stream)
        received: dict[int, list[bytes]] = {i: [] for i in range(len(ids))}

        async def consume(index: int) -> None:
            stream = streams[index]
            while len(received[index]) < count:
                batch = await stream.messages()
                offsets = [m.offset for m in batch.messages]
                assert offsets == sorted(offsets)
                received[index] += [m.data for m in batch.messages]
                await stream.ack(offsets[-1])

        async def send(sender: int) -> None:
            for i in range(count // 3):
                data = f"{sender}-{i}".encode()
                while True:
                    try:
                        await app.stub.broadcast(proto.BroadcastRequest(client_ids=ids, data=data))
                        break
                    except GRPCError as exc:  # a full queue: the streams catch up
                        if exc.status is not Status.RESOURCE_EXHAUSTED:
                            raise
                        await anyio.sleep(0.05)

        async with anyio.create_task_group() as group:
            for index in range(len(ids)):
                group.start_soon(consume, index)
            async with anyio.create_task_group() as senders:
                for sender in range(3):
                    senders.start_soon(send, sender)
        for stream in streams:
            await stream.close()
    expected = sorted(f"{s}-{i}".encode() for s in range(3) for i in range(count // 3))
    for index in range(len(ids)):
        assert sorted(received[index]) == expected
        for sender in range(3):  # each sender's messages in its order
            mine = [d for d in received[index] if d.startswith(f"{sender}-".encode())]
            assert mine == [f"{sender}-{i}".encode() for i in range(count // 3)]


async def test_streams_end_unavailable_when_the_server_stops(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path, channels=ChannelSettings(heartbeat=HEARTBEAT))
    server = Server(config)
    await server.start()
    grpc = Channel(server.grpc_host, server.grpc_port)
    try:
        admin = App("admin", server.admin_token, grpc)
        made = await admin.create("c")
        with anyio.fail_after(GUARD):
            listen = await Listen(grpc).open(made.token)
            await connected(listen)
            events = admin.stub.presence(proto.PresenceRequest())
            async with anyio.create_task_group() as group:
                outcome: list[Status] = []

                async def watch() -> None:
                    with pytest.raises(GRPCError) as info:
                        await anext(events)
                    outcome.append(info.value.status)

                group.start_soon(watch)
                await anyio.sleep(0.1)
                group.start_soon(server.stop)
                status, _ = await listen.ended()
            assert status is Status.UNAVAILABLE
            assert outcome == [Status.UNAVAILABLE]
    finally:
        grpc.close()
        await server.stop()


def test_serve_flags_and_settings() -> None:
    args = build_parser().parse_args(
        ["serve", "--channel-queue-size", "5", "--channel-grace", "2.5"]
    )
    settings = server_config(args).channels
    assert (settings.max_queue, settings.grace) == (5, 2.5)
    assert server_config(build_parser().parse_args(["serve"])).channels == ChannelSettings()
    for bad in ({"max_queue": 0}, {"grace": -1}, {"window": 5000}, {"max_duration_minutes": 2000}):
        with pytest.raises(ValueError, match="ChannelSettings"):
            ChannelSettings(**bad)  # type: ignore[arg-type]
