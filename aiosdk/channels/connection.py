"""A token holder's live connection to its channel: the Listen stream, as an async iterator.

The server sends what is pending in batches (at most ``window`` messages not yet acknowledged
in flight) and a heartbeat after a quiet while. The connection acknowledges what the caller
consumed (a message is consumed when the loop asks for the next one), in batches: when a
quarter of the window was consumed, or :data:`ACK_DELAY` after the first message left
unacknowledged (a timer sends it alongside the pending receive, since cancelling grpclib's
``recv_message`` halfway through a message would lose the stream's framing), or at close; so
a fan-out's subscribers do not answer at once while the server still sends. (A caller
cancelled while it waits for a message, Ctrl-C say, loses the stream with the wait: its
DisconnectChannel carries what it consumed, so that nothing consumed comes again.) A
connection that
breaks, or hears nothing for three heartbeats, is opened again as the client's retry mode
allows (``"default"`` and ``"forceful"``: with backoff, within the retry budget; a message
consumed since starts a fresh count; ``"disabled"``: the failure is raised), resuming after the
last message consumed: nothing lost, nothing twice, in order. A position the server can no
longer resume from is a :class:`~aiosdk.ContinuityLostError`, never a silent skip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from types import TracebackType
from typing import Literal

import anyio
from typing_extensions import Self

from .._core.concurrency import to_the_end
from .._core.context import ClientContext
from .._core.errors import (
    AiosdkError,
    ClientClosedError,
    ContinuityLostError,
    ProtocolError,
    StatusError,
)
from .._core.errors import TimeoutError as SdkTimeoutError
from .._core.secrets import Secret
from .._core.transport import GrpcDuplex
from ..proto import (
    ChannelServiceStub,
    DisconnectChannelRequest,
    ListenAck,
    ListenClose,
    ListenConnected,
    ListenRequest,
    ListenResponse,
    ListenStart,
)
from .types import (
    ChannelMessage,
    ChannelPosition,
    channel_message,
    check_after,
    check_token,
    check_window,
    refined,
)

__all__ = ["ACK_DELAY", "CLOSE_TIMEOUT", "HEARTBEATS_MISSED", "AsyncChannelConnection"]

log = logging.getLogger("aiosdk")

LISTEN = "/aiosdk.v1.ChannelService/Listen"
ACK_DELAY = 0.05
"""Seconds a consumed message waits, at most, to be acknowledged with those after it (while
the caller goes on consuming)."""
HEARTBEATS_MISSED = 3
"""A connection that hears nothing for this many heartbeat periods is treated as dropped."""
CLOSE_TIMEOUT = 5.0
"""Seconds closing waits for the server to end the stream after ``close``."""
CONNECT_TIMEOUT = 30.0
"""Seconds opening waits for the server's ``connected`` (when the client has no timeout)."""
_DEFAULT_HEARTBEAT = 15.0
_DEFAULT_WINDOW = 256


class _Connected:
    """What the stream yields (inside) when it is open: the server's ``connected``."""

    __slots__ = ("info",)

    def __init__(self, info: ListenConnected) -> None:
        self.info = info


class _Alive:
    """What the stream yields (inside) at its first heartbeat: it lasted, which counts as
    progress (a fresh count of retries), as a message does."""

    __slots__ = ()


_ALIVE = _Alive()


class AsyncChannelConnection:
    """A channel's live messages for the holder of its token, as an async context manager and
    an async iterator of :class:`~aiosdk.ChannelMessage`:
    ``async with client.channels.connect(token) as ch: async for message in ch: ...``.

    Entering opens the stream (a bad token raises there: :class:`~aiosdk.InvalidTokenError`,
    :class:`~aiosdk.TokenTimedOutError`); iterating yields the messages in order, waiting for
    new ones, until the stream ends: the token expired or was replaced
    (:class:`~aiosdk.TokenTimedOutError`), the channel's history was lost
    (:class:`~aiosdk.ContinuityLostError`), another connection of the same channel took over
    (:class:`~aiosdk.ConflictError`), or a failure the retry mode does not retry. Leaving the
    block closes the stream cleanly (the application sees a clean disconnect); leaving it
    without an exception counts the last message as consumed too (with one, it comes again on
    the next connection).

    Attributes:
        client_id: the channel's client id (once connected).
        epoch: the channel's epoch (once connected).
        position: the position of the last message consumed (at first, ``after``), to resume
            after with ``connect(token, after=position)``.
        expires_at: when the token expires (once connected; UTC, the server's clock).
    """

    def __init__(
        self,
        ctx: ClientContext,
        token: str,
        *,
        after: ChannelPosition | None = None,
        window: int | None = None,
    ) -> None:
        self._ctx = ctx
        self._token = Secret(check_token(token))  # never shown: repr, vars, logs
        self._window = check_window(window)
        self.client_id: str | None = None
        self.epoch: str | None = None
        self.position: ChannelPosition | None = check_after(after)
        self._state: Literal["new", "open", "ended", "closed"] = "new"
        self._items: AsyncIterator[ChannelMessage | _Connected | _Alive] | None = None
        self._duplex: GrpcDuplex | None = None
        self._delivered: ChannelMessage | None = None  # yielded, not yet consumed
        self._acked = 0  # the offset acknowledged on the current stream
        self._ack_timer: asyncio.TimerHandle | None = None  # ACK_DELAY after the first unacked
        self._ack_task: asyncio.Task[None] | None = None  # the timer's acknowledgement, sending
        self._sending = asyncio.Lock()  # acknowledgements go out one at a time, in order
        self._heartbeat = _DEFAULT_HEARTBEAT
        self._cut = False  # the stream was cut by a cancellation of the caller
        self.expires_at: datetime | None = None

    def __repr__(self) -> str:
        who = repr(self.client_id) if self.client_id is not None else "(not connected)"
        where = f" at {self.position.offset}" if self.position is not None else ""
        return f"<{type(self).__name__} {who} {self._state}{where}>"

    # -- lifetime ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Open the stream: wait for the server's answer (a refused token raises here)."""
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the stream cleanly (see :meth:`aclose`); without an exception, the last message
        delivered counts as consumed."""
        await self._close(consumed=exc_type is None)

    async def aclose(self) -> None:
        """Close the stream: acknowledge what was consumed (the last message delivered too),
        tell the server it is a clean disconnect, and end it. Closing again does nothing."""
        await self._close(consumed=True)

    async def _open(self) -> None:
        if self._state == "closed":
            raise ClientClosedError("this channel connection is closed: connect again")
        if self._state != "new":
            return
        self._state = "open"
        self._items = self._ctx.transport.grpc_duplex(
            LISTEN,
            ListenRequest,
            ListenResponse,
            self._run,
            options=self._ctx.options,
            what="Listen",
            resumable=True,  # by the position consumed: safe in every mode that retries
            # A message, or a stream that lasted a heartbeat: a stream that opens and drops at
            # once, again and again, spends the retries; one that lives for hours does not.
            progress=lambda item: not isinstance(item, _Connected),
            login_hint=False,
        )
        self._ctx.transport.closing_with.add(self)
        try:
            first = await self._next_item()
        except BaseException:
            await self._close(consumed=False)
            raise
        if not isinstance(first, _Connected):  # (_run yields it first)
            raise ProtocolError("Listen: the stream did not start with connected")

    async def _close(self, *, consumed: bool) -> None:
        state, self._state = self._state, "closed"
        self._ctx.transport.closing_with.discard(self)
        items, self._items = self._items, None
        duplex, self._duplex = self._duplex, None
        if state == "ended" and self._cut:
            # Cancelled while it waited (Ctrl-C, a timeout around the loop): the stream is gone
            # with the wait, but leaving is the holder's own doing, so the server hears of a
            # clean disconnect all the same.
            self._cut = False
            await to_the_end(self._disconnect)
            return
        if state != "open" or items is None:
            return
        if consumed and self._delivered is not None:
            self._consume(self._delivered)
        self._delivered = None
        await to_the_end(lambda: self._goodbye(items, duplex))

    async def _goodbye(
        self,
        items: AsyncIterator[ChannelMessage | _Connected | _Alive],
        duplex: GrpcDuplex | None,
    ) -> None:
        try:
            if duplex is not None and await self._settle_acks():
                last = []
                done = self.position
                if done is not None and done.epoch == self.epoch and done.offset > self._acked:
                    last.append(ListenRequest(ack=ListenAck(offset=done.offset)))
                last.append(ListenRequest(close=ListenClose()))
                if not await duplex.finish(*last, within=CLOSE_TIMEOUT):
                    log.debug("Listen %r: the server did not end the stream", self.client_id)
        finally:
            self._stop_acks()
            await items.aclose()  # type: ignore[attr-defined]  # an async generator

    async def _disconnect(self) -> None:
        done = self.position
        acked = done._wire if done is not None else None
        request = DisconnectChannelRequest(token=self._token.reveal(), acked=acked)
        with anyio.move_on_after(CLOSE_TIMEOUT):
            try:
                await self._ctx.transport.grpc_unary(
                    ChannelServiceStub,
                    lambda stub: stub.disconnect_channel(request),
                    idempotent=False,
                    options=self._ctx.options,
                    what="DisconnectChannel",
                    login_hint=False,
                )
            except AiosdkError as exc:
                log.debug("Listen %r: DisconnectChannel failed: %s", self.client_id, exc)

    # -- iteration ---------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChannelMessage:
        """The next message (the one before it is consumed): waits for one to come."""
        if self._state == "new":
            await self._open()
        while True:
            if self._state != "open":
                raise StopAsyncIteration
            item = await self._next_item()
            if isinstance(item, ChannelMessage):
                return item

    async def _next_item(self) -> ChannelMessage | _Connected | _Alive:
        items = self._items
        assert items is not None
        try:
            return await items.__anext__()
        except StopAsyncIteration:
            self._ended()
            raise
        except StatusError as exc:
            self._ended()
            better = refined(exc, "holder")
            if better is exc:
                raise
            raise better from exc.__cause__
        except BaseException as exc:
            self._ended()
            self._cut = isinstance(exc, asyncio.CancelledError)
            raise

    def _ended(self) -> None:
        if self._state == "open":
            self._state = "ended"
            self._ctx.transport.closing_with.discard(self)
            self._duplex = None

    # -- one stream ----------------------------------------------------------------------------

    async def _run(self, duplex: GrpcDuplex) -> AsyncIterator[ChannelMessage | _Connected | _Alive]:
        """One Listen stream: start (resuming after what was consumed), then its messages."""
        self._duplex = duplex
        self._delivered = None  # it comes again: it was never acknowledged
        resume = self.position
        if resume is None and self.epoch is not None:
            # Nothing consumed yet, but connected before: the channel's history must go on
            # from that epoch (offset 0: before its first message), or continuity was lost.
            resume = ChannelPosition(self.epoch, 0)
        start = ListenStart(
            token=self._token.reveal(),
            after=resume._wire if resume is not None else None,
            window=self._window,
        )
        await duplex.send(ListenRequest(start=start))
        timeout = self._ctx.options.timeout
        first = await self._receive(duplex, CONNECT_TIMEOUT if timeout is None else timeout)
        if first is None or first.connected is None:
            raise ProtocolError("Listen: the server did not answer the start with connected")
        connected = first.connected
        if self.client_id is not None and connected.client_id != self.client_id:
            raise ProtocolError("Listen: reconnecting answered another channel")
        self.client_id = connected.client_id
        self.epoch = connected.epoch
        self.expires_at = connected.expires_at
        if connected.heartbeat_seconds > 0:
            self._heartbeat = connected.heartbeat_seconds
        self._acked = resume.offset if resume is not None else 0
        try:
            yield _Connected(connected)
            batch_size = max(1, (self._window or _DEFAULT_WINDOW) // 4)
            alive = False
            loop = asyncio.get_running_loop()
            while True:
                response = await self._receive(duplex, self._heartbeat * HEARTBEATS_MISSED)
                if response is None:
                    raise ProtocolError("Listen: the server ended the stream without a reason")
                batch = response.messages
                if batch is None:  # a heartbeat (or what this client does not know)
                    if not alive and response.heartbeat is not None:
                        alive = True
                        yield _ALIVE
                    continue
                if batch.epoch and batch.epoch != self.epoch:
                    raise ContinuityLostError(
                        f"continuity lost: the channel's epoch changed from {self.epoch!r}"
                        f" to {batch.epoch!r}",
                        grpc_status="OUT_OF_RANGE",
                    )
                for wire in batch.messages:
                    done = self.position
                    if done is not None and done.epoch == self.epoch and wire.offset <= done.offset:
                        continue  # had it already (consumed before a reconnection)
                    message = channel_message(wire, self.epoch, "Listen")
                    self._delivered = message
                    yield message
                    self._delivered = None
                    self._consume(message)  # the caller asked for the next one
                    if message.position.offset - self._acked >= batch_size:
                        await self._flush(duplex)
                    elif self._ack_timer is None:
                        self._ack_timer = loop.call_later(ACK_DELAY, self._ack_due, duplex)
        finally:
            self._stop_acks()

    def _consume(self, message: ChannelMessage) -> None:
        self.position = message.position

    def _ack_due(self, duplex: GrpcDuplex) -> None:
        """The timer: acknowledge what was consumed, alongside the receive that waits."""
        loop = asyncio.get_running_loop()
        if self._ack_task is None or self._ack_task.done():
            self._ack_timer = None
            self._ack_task = loop.create_task(self._flush(duplex))
            self._ack_task.add_done_callback(_ack_sent)
        else:  # the last one is still on its way: this one after it
            self._ack_timer = loop.call_later(ACK_DELAY, self._ack_due, duplex)

    async def _settle_acks(self) -> bool:
        """Before the goodbye: the timer off, and its acknowledgement sent if it is on its way
        (not cut short halfway through a message); whether the stream can still take one."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        task, self._ack_task = self._ack_task, None
        if task is None or task.done():
            return True
        await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)  # (waiting does not cancel it)
        if task.done():
            return True
        task.cancel()  # stuck: the stream cannot take the goodbye either
        return False

    def _stop_acks(self) -> None:
        """The stream is over: no acknowledgement goes out on it any more."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        task, self._ack_task = self._ack_task, None
        if task is not None and not task.done():
            task.cancel()

    async def _flush(self, duplex: GrpcDuplex) -> None:
        async with self._sending:  # read the position here: acknowledgements never go back
            done = self.position
            if done is None or done.epoch != self.epoch or done.offset <= self._acked:
                return
            await duplex.send(ListenRequest(ack=ListenAck(offset=done.offset)))
            self._acked = done.offset
        if self._ack_timer is not None and self.position is done:  # none consumed meanwhile
            self._ack_timer.cancel()
            self._ack_timer = None

    async def _receive(self, duplex: GrpcDuplex, seconds: float) -> ListenResponse | None:
        """The next answer (``None``: the stream ended); a dropped connection after
        ``seconds`` of silence."""
        with anyio.move_on_after(seconds):
            response: ListenResponse | None = await duplex.recv()
            return response
        raise SdkTimeoutError(f"Listen: heard nothing from the server for {seconds:g} s")


def _ack_sent(task: asyncio.Task[None]) -> None:
    """A timer's acknowledgement ended: a failure to send it shows on the stream's receive too
    (the stream broke), so it is only logged."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("Listen: an acknowledgement was not sent: %s: %s", type(exc).__name__, exc)
