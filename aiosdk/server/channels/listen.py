"""One Listen stream: a channel's messages to its token's holder, in batches, within a window
of unacknowledged ones.

The stream holds the channel (its row's ``stream_id``; a newer stream takes it over) and keeps
in memory what it sent and not yet got acknowledged (at most the window) and what it may send
next (a buffer, at most the window). It reads the database only when it must: at the start,
after a wake-up (a change of the channel committed here or, on PostgreSQL, in another process,
see :mod:`.hub`), when it was handed a message out of order or had no room for it, and every
:data:`POLL_SECONDS` or so as a backstop. Messages sent in this process to a stream that is
caught up are leased to it by their sender and handed to it after the commit: no read at all.

A message the stream read unleased is leased to it before it is sent (one UPDATE for the batch),
so a concurrent pop, which skips a live stream's leases, never gets it as well.
Acknowledgements are written by the hub, with the other streams' (:meth:`.hub.ChannelHub.ack`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Sequence

import anyio
import betterproto2
from grpclib import GRPCError, Status
from grpclib.exceptions import StreamTerminatedError
from grpclib.server import Stream
from sqlalchemy import delete, select, update

from ... import proto
from ..logs import logger
from ..state import ServerState
from ..storage.models import new_id, utcnow
from ..unit_of_work import UnitOfWork
from . import presence, queues, tokens
from .hub import Handed
from .models import Channel, ChannelMessage

__all__ = ["POLL_SECONDS", "MAX_BATCH_BYTES", "Listener", "listen"]

POLL_SECONDS = 30.0
"""How often, at most, an idle stream looks at its channel when wake-ups reach it (jittered up
to half as much again); :data:`UNHEARD_POLL_SECONDS` while they may not."""
UNHEARD_POLL_SECONDS = 5.0
MAX_BATCH_BYTES = 1024 * 1024
"""The data of one batch, at most (one message at least): well under the 4 MiB that gRPC
clients accept by default."""

_TAKEN_OVER = "another connection took over this channel"

ListenStream = Stream[proto.ListenRequest, proto.ListenResponse]


async def listen(state: ServerState, closing: asyncio.Event, stream: ListenStream) -> None:
    """Serve one Listen call (see the module's docstring and ``channels.proto``)."""
    first = await stream.recv_message()
    start = first.start if first is not None else None
    if start is None:
        raise GRPCError(Status.INVALID_ARGUMENT, "a Listen stream's first message is `start`")
    try:
        claims = tokens.decode(state.keyring, start.token)
    except tokens.InvalidChannelToken as exc:
        raise GRPCError(Status.UNAUTHENTICATED, str(exc)) from None
    settings = state.channels.settings
    window = min(start.window or settings.window, settings.max_window)
    listener = Listener(state, closing, claims, window)
    await listener.begin(start.after)
    await listener.serve(stream)


class Listener:
    """The state of one Listen stream (see the module's docstring)."""

    def __init__(
        self,
        state: ServerState,
        closing: asyncio.Event,
        claims: tokens.ChannelClaims,
        window: int,
    ) -> None:
        self.stream_id = new_id()
        self.channel_id = claims.channel_id
        self._state = state
        self._closing = closing
        self._claims = claims
        self._window = window
        self._epoch = ""
        self._expires_at = claims.expires_at
        self._client_id = claims.client_id
        self._owner = ""
        self._sent_through = 0
        self._known_last = 0
        self._in_flight: deque[int] = deque()
        self._acked = 0
        self._buffer: deque[Handed] = deque()
        self._more = True
        self._stale = False
        self._syncing = False
        self._event = asyncio.Event()
        self._closed = False
        self._ended = False
        self._error: GRPCError | None = None

    def __repr__(self) -> str:
        return f"<Listener {self._client_id!r} stream={self.stream_id}>"

    # --- what the hub calls ---

    def can_lease(self, epoch: str) -> bool:
        return (
            not self._more
            and not self._syncing
            and epoch == self._epoch
            and len(self._in_flight) + len(self._buffer) < self._window
        )

    def handoff(self, epoch: str, messages: Sequence[Handed]) -> None:
        if epoch != self._epoch or self._syncing:
            self._more = True
        else:
            for message in messages:
                if message.offset <= self._known_last:
                    continue  # read already
                room = len(self._in_flight) + len(self._buffer) < self._window
                if message.offset == self._known_last + 1 and not self._more and room:
                    self._buffer.append(message)
                    self._known_last = message.offset
                else:
                    self._more = True
        self._event.set()

    def more(self) -> None:
        self._more = True
        self._event.set()

    def wake(self) -> None:
        self._stale = True
        self._more = True
        self._event.set()

    # --- the stream ---

    async def begin(self, after: proto.ChannelPosition | None) -> None:
        """Take the channel: check the token and the resume position, remove what ``after``
        acknowledges, mark the channel connected (an event if it was not)."""
        state = self._state
        hub = state.channels.hub
        work = UnitOfWork(state.sessions)
        try:
            await work.begin_write()
            db = work.session
            channel = await queues.holder_channel(db, self._claims, lock=True)
            if after is not None:
                if after.epoch != channel.epoch:
                    raise GRPCError(
                        Status.OUT_OF_RANGE,
                        "continuity lost: the channel's epoch is no longer"
                        f" {after.epoch[:64]!r} (its messages were cleared, or it ended)",
                    )
                if after.offset > channel.last_offset:
                    raise GRPCError(
                        Status.OUT_OF_RANGE,
                        f"continuity lost: the channel never reached offset {after.offset}"
                        f" (its last is {channel.last_offset})",
                    )
                self._sent_through = self._acked = after.offset
                await db.execute(
                    delete(ChannelMessage)
                    .where(
                        ChannelMessage.channel_id == channel.id,
                        ChannelMessage.offset <= after.offset,
                    )
                    .execution_options(synchronize_session=False)
                )
            channel.stream_id = self.stream_id
            if await presence.connect(db, channel):
                hub.presence_changed(work, channel.owner)
            hub.wake(work, [channel.id])  # an older stream, here or elsewhere, lets go
            self._epoch = channel.epoch
            self._expires_at = channel.expires_at
            self._owner = channel.owner
            self._known_last = self._sent_through
            await work.commit()
        finally:
            with anyio.CancelScope(shield=True):
                await work.close()

    async def serve(self, stream: ListenStream) -> None:
        """Send ``connected``, then batches and heartbeats until the stream ends."""
        hub = self._state.channels.hub
        hub.register(self)
        reader = asyncio.create_task(self._read(stream), name="aiosdk-listen-reader")
        clean = False
        try:
            heartbeat = self._state.channels.settings.heartbeat
            await stream.send_message(
                proto.ListenResponse(
                    connected=proto.ListenConnected(
                        client_id=self._client_id,
                        epoch=self._epoch,
                        expires_at=self._expires_at,
                        heartbeat_seconds=heartbeat,
                    )
                )
            )
            clean = await self._loop(stream, heartbeat)
        finally:
            reader.cancel()
            hub.unregister(self)
            with anyio.CancelScope(shield=True):
                await self._finish(clean)

    async def _loop(self, stream: ListenStream, heartbeat: float) -> bool:
        """Whether the holder closed the stream (a clean disconnect)."""
        hub = self._state.channels.hub
        last_sent = time.monotonic()
        next_poll = last_sent + _poll_seconds(hub.listening)
        while True:
            self._event.clear()
            if self._error is not None:
                raise self._error
            if self._closed:
                return True
            if self._ended:
                return False
            if self._closing.is_set():
                raise GRPCError(Status.UNAVAILABLE, "The server is shutting down")
            if self._expires_at <= utcnow():
                raise GRPCError(Status.NOT_FOUND, "the channel token expired")
            if self._stale or (self._more and self._room() > len(self._buffer)):
                await self._sync()
                continue
            batch = self._take_batch()
            if batch is not None:
                await stream.send_message(proto.ListenResponse(messages=batch))
                last_sent = time.monotonic()
                continue
            now = time.monotonic()
            if now - last_sent >= heartbeat:
                await stream.send_message(proto.ListenResponse(heartbeat=proto.ListenHeartbeat()))
                last_sent = time.monotonic()
                continue
            if now >= next_poll:
                next_poll = now + _poll_seconds(hub.listening)
                self.wake()
                continue
            until_expiry = (self._expires_at - utcnow()).total_seconds()
            timeout = min(heartbeat - (now - last_sent), next_poll - now, until_expiry)
            await _wait(self._event, self._closing, max(timeout, 0.001))

    def _room(self) -> int:
        return self._window - len(self._in_flight)

    def _take_batch(self) -> proto.ChannelMessages | None:
        room = self._room()
        if room <= 0 or not self._buffer:
            return None
        messages: list[proto.ChannelMessage] = []
        size = 0
        while self._buffer and len(messages) < room:
            message = self._buffer[0]
            if messages and size + len(message.data) > MAX_BATCH_BYTES:
                break
            self._buffer.popleft()
            size += len(message.data)
            messages.append(
                proto.ChannelMessage(
                    offset=message.offset,
                    data=message.data,
                    text=message.text,
                    sent_at=message.sent_at,
                )
            )
            self._in_flight.append(message.offset)
            self._sent_through = message.offset
        return proto.ChannelMessages(messages=messages, epoch=self._epoch)

    async def _sync(self) -> None:
        """Look at the channel's row (it may have ended for this stream) and read the messages
        after those sent, as many as the window has room for, leasing them."""
        state = self._state
        self._syncing = True
        self._stale = False
        self._more = False
        try:
            async with state.sessions() as db:
                channel = await db.scalar(
                    select(Channel)
                    .where(Channel.id == self.channel_id)
                    .execution_options(populate_existing=True)
                )
                self._check(channel)
                assert channel is not None
                room = self._room()
                if room <= 0:
                    self._more = True
                    return
                last = channel.last_offset
                rows = (
                    await db.execute(
                        select(
                            ChannelMessage.offset,
                            ChannelMessage.data,
                            ChannelMessage.text,
                            ChannelMessage.sent_at,
                            ChannelMessage.lease,
                        )
                        .where(
                            ChannelMessage.channel_id == self.channel_id,
                            ChannelMessage.offset > self._sent_through,
                            ChannelMessage.offset <= last,
                        )
                        .order_by(ChannelMessage.offset)
                        .limit(room)
                    )
                ).all()
            unleased = [row.offset for row in rows if row.lease != self.stream_id]
            leased = await self._lease(unleased) if unleased else set()
            self._buffer = deque(
                Handed(row.offset, row.data, row.text, row.sent_at)
                for row in rows
                if row.lease == self.stream_id or row.offset in leased
            )
            self._known_last = max(self._known_last, last)
            if len(rows) >= room:
                self._more = True
        except BaseException:
            self._more = True
            raise
        finally:
            self._syncing = False

    def _check(self, channel: Channel | None) -> None:
        if channel is None or channel.token_hash != self._claims.token_hash:
            raise GRPCError(Status.NOT_FOUND, queues.GONE)
        if channel.expires_at <= utcnow():
            raise GRPCError(Status.NOT_FOUND, "the channel token expired")
        if channel.stream_id != self.stream_id:
            raise GRPCError(Status.ABORTED, _TAKEN_OVER)
        if channel.epoch != self._epoch:
            raise GRPCError(
                Status.OUT_OF_RANGE,
                "continuity lost: the channel's messages were cleared (it has a new epoch)",
            )

    async def _lease(self, offsets: list[int]) -> set[int]:
        """Lease the messages at ``offsets`` to this stream; those still there."""
        work = UnitOfWork(self._state.sessions)
        try:
            await work.begin_write()
            result = await work.session.execute(
                update(ChannelMessage)
                .where(
                    ChannelMessage.channel_id == self.channel_id,
                    ChannelMessage.offset.in_(offsets),
                )
                .values(lease=self.stream_id)
                .returning(ChannelMessage.offset)
                .execution_options(synchronize_session=False)
            )
            leased = set(result.scalars().all())
            await work.commit()
            return leased
        finally:
            with anyio.CancelScope(shield=True):
                await work.close()

    async def _read(self, stream: ListenStream) -> None:
        state = self._state
        try:
            async for request in stream:
                kind, value = betterproto2.which_one_of(request, "kind")
                if kind == "ack" and isinstance(value, proto.ListenAck):
                    offset = min(value.offset, self._sent_through)
                    if offset > self._acked:
                        self._acked = offset
                        while self._in_flight and self._in_flight[0] <= offset:
                            self._in_flight.popleft()
                        state.channels.hub.ack(state.sessions, self.channel_id, offset)
                elif kind == "close":
                    self._closed = True
                    return
                else:
                    self._error = GRPCError(
                        Status.INVALID_ARGUMENT,
                        "after `start`, a Listen stream takes `ack` and `close` only",
                    )
                    return
                self._event.set()
        except GRPCError as exc:
            self._error = exc
        except (StreamTerminatedError, ConnectionError):
            pass
        finally:
            self._ended = True
            self._event.set()

    async def _finish(self, clean: bool) -> None:
        """Let go of the channel if the stream still holds it; disconnect it if ``clean``
        (otherwise the sweep does, after the grace period, unless the holder is back)."""
        state = self._state
        work = UnitOfWork(state.sessions)
        try:
            await work.begin_write()
            db = work.session
            channel = await db.scalar(
                select(Channel)
                .where(Channel.id == self.channel_id, Channel.stream_id == self.stream_id)
                .with_for_update()
            )
            if channel is None:
                return
            channel.stream_id = None
            if clean and await presence.disconnect(db, channel, clean=True):
                state.channels.hub.presence_changed(work, channel.owner)
            await db.flush()
            await work.commit()
        except Exception:
            logger.exception("Ending a Listen stream of channel %s failed", self.channel_id)
        finally:
            await work.close()


def _poll_seconds(listening: bool) -> float:
    base = POLL_SECONDS if listening else UNHEARD_POLL_SECONDS
    return base * random.uniform(1.0, 1.5)  # jitter, not a secret


async def _wait(event: asyncio.Event, closing: asyncio.Event, seconds: float) -> None:
    """Return once ``event`` or ``closing`` is set, or after ``seconds``."""
    if event.is_set() or closing.is_set():
        return
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(closing.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
