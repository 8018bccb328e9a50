"""The channel service: channels of an application's (a user's) clients, their queues, the
clients' presence.

The wire contract is ``aiosdk/v1/channels.proto``; storage is :mod:`aiosdk.server.channels`.
The application's calls (CreateChannel, SendMessage, Broadcast, Presence) need its bearer
token; the token holder's calls need only the channel token, which they carry (see
:data:`~.auth.TOKEN_HOLDER_METHODS`). Every mutating unary call runs in one unit of work with
its idempotency record (:func:`~.work.mutating`): a retried send is stored once, a retried pop
answers the message the first attempt popped. Listen is :mod:`aiosdk.server.channels.listen`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpclib.const
from grpclib import GRPCError, Status

from ... import proto
from ..channels import presence, queues, tokens
from ..channels.hub import Handed
from ..channels.listen import listen
from ..channels.models import EVENT_CONNECTED, Channel, ChannelEvent, ChannelMessage
from ..channels.tokens import ChannelClaims
from ..channels.validation import client_id_problem, message_problem
from ..state import ServerState
from ..unit_of_work import UnitOfWork
from .auth import current_call
from .work import mutating

__all__ = ["ChannelService"]

LISTEN = "/aiosdk.v1.ChannelService/Listen"
PRESENCE_BATCH = 500
PRESENCE_POLL_SECONDS = 5.0
"""How often a Presence stream looks for events without a wake-up (a backstop)."""


class ChannelService(proto.ChannelServiceBase):
    """Channels (see the module's docstring).

    ``closing`` is set when the server stops: open Listen and Presence streams then end with
    ``UNAVAILABLE``.
    """

    def __init__(self, state: ServerState, closing: asyncio.Event) -> None:
        self.state = state
        self._closing = closing

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping = super().__mapping__()
        generated = mapping[LISTEN]
        # Listen reads acks while it sends: it gets the stream itself, not an iterator.
        mapping[LISTEN] = grpclib.const.Handler(
            lambda stream: listen(self.state, self._closing, stream),
            generated.cardinality,
            generated.request_type,
            generated.reply_type,
        )
        return mapping

    # --- the application's calls ---

    @mutating(proto.ChannelToken)
    async def create_channel(
        self, message: proto.CreateChannelRequest, work: UnitOfWork
    ) -> proto.ChannelToken:
        """A token for the caller's channel of ``client_id`` (its live channel's, replacing
        the token, or a new channel's)."""
        client_id = _client_id(message.client_id)
        settings = self.state.channels.settings
        minutes = message.duration_minutes
        if minutes is None:
            minutes = settings.default_duration_minutes
        elif not 1 <= minutes <= settings.max_duration_minutes:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"duration_minutes is 1 to {settings.max_duration_minutes}, not {minutes}",
            )
        await work.begin_write()
        created = await queues.create_channel(
            work.session, self.state.keyring, _owner(), client_id, minutes
        )
        channel = created.channel
        if created.replaced:  # the old token's stream, here or elsewhere, ends
            self.state.channels.hub.wake(work, [channel.id])
        return proto.ChannelToken(
            token=created.token,
            client_id=channel.client_id,
            expires_at=channel.expires_at,
            epoch=channel.epoch,
        )

    @mutating(proto.SendMessageResponse)
    async def send_message(
        self, message: proto.SendMessageRequest, work: UnitOfWork
    ) -> proto.SendMessageResponse:
        """Store ``data`` for the caller's client ``client_id``."""
        positions = await self._send(work, [_client_id(message.client_id)], message)
        return proto.SendMessageResponse(position=positions[0])

    @mutating(proto.BroadcastResponse)
    async def broadcast(
        self, message: proto.BroadcastRequest, work: UnitOfWork
    ) -> proto.BroadcastResponse:
        """Store ``data`` for each of the caller's ``client_ids``, in one transaction."""
        if not message.client_ids:
            raise GRPCError(Status.INVALID_ARGUMENT, "a broadcast needs at least one client id")
        if len(message.client_ids) > queues.MAX_BROADCAST:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"a broadcast goes to {queues.MAX_BROADCAST} client ids at most, not"
                f" {len(message.client_ids)}",
            )
        client_ids = [_client_id(client_id) for client_id in message.client_ids]
        positions = await self._send(work, client_ids, message)
        by_id = dict(zip(dict.fromkeys(client_ids), positions, strict=True))
        return proto.BroadcastResponse(positions=[by_id[client_id] for client_id in client_ids])

    async def presence(self, message: proto.PresenceRequest) -> AsyncIterator[proto.PresenceEvent]:
        """The caller's presence events after ``after`` (or from now on)."""
        owner = _owner()
        call = current_call.get()
        hub = self.state.channels.hub
        with hub.presence_waiter(owner) as woken:
            async with self.state.sessions() as db:
                after = message.after
                if after is None:
                    after = await presence.latest_event_id(db, owner)
            while True:
                woken.clear()  # before the read: a wake-up during it is kept for the wait
                async with self.state.sessions() as db:
                    events = await presence.events_after(db, owner, after, PRESENCE_BATCH)
                    found = [_event(event) for event in events]
                for event in found:
                    yield event
                    after = event.id
                if len(found) == PRESENCE_BATCH:
                    continue
                await _any_set([woken, self._closing], PRESENCE_POLL_SECONDS)
                if self._closing.is_set():
                    raise GRPCError(Status.UNAVAILABLE, "The server is shutting down")
                if not await call.still_valid():  # logged out, revoked, expired
                    raise GRPCError(Status.UNAUTHENTICATED, "Invalid, expired or revoked token")

    # --- the token holder's calls ---

    async def inspect_token(self, message: proto.TokenRequest) -> proto.TokenInfo:
        """The token's client id and expiry, and whether it is live."""
        claims = self._claims(message.token)
        async with self.state.sessions() as db:
            try:
                await queues.holder_channel(db, claims)
            except GRPCError:
                live = False
            else:
                live = True
        return proto.TokenInfo(client_id=claims.client_id, expires_at=claims.expires_at, live=live)

    async def get_messages(self, message: proto.TokenRequest) -> proto.ChannelMessages:
        """Every pending message, oldest first."""
        claims = self._claims(message.token)
        async with self.state.sessions() as db:
            channel = await queues.holder_channel(db, claims)
            rows = await queues.pending(db, channel.id)
            return proto.ChannelMessages(
                messages=[_message(row) for row in rows], epoch=channel.epoch
            )

    async def has_messages(self, message: proto.TokenRequest) -> proto.HasMessagesResponse:
        """Whether a message is pending."""
        claims = self._claims(message.token)
        async with self.state.sessions() as db:
            channel = await queues.holder_channel(db, claims)
            return proto.HasMessagesResponse(has_messages=await queues.has_pending(db, channel.id))

    @mutating(proto.PopMessageResponse, read_only_callers=True)
    async def pop_message(
        self, message: proto.PopMessageRequest, work: UnitOfWork
    ) -> proto.PopMessageResponse:
        """Remove and return the oldest pending message a live Listen stream does not hold;
        with ``connect``, also connect the channel."""
        claims = self._claims(message.token)
        await work.begin_write()
        db = work.session
        channel = await queues.holder_channel(db, claims, lock=True)
        if message.connect:
            await self._connect(work, channel)
        popped = await queues.pop(db, channel, self.state.channels.settings.grace)
        return proto.PopMessageResponse(
            message=None if popped is None else _handed(popped), epoch=channel.epoch
        )

    @mutating(proto.ClearMessagesResponse, read_only_callers=True)
    async def clear_messages(
        self, message: proto.TokenRequest, work: UnitOfWork
    ) -> proto.ClearMessagesResponse:
        """Remove every pending message; the channel gets a new epoch (its Listen stream ends
        with ``OUT_OF_RANGE``)."""
        claims = self._claims(message.token)
        await work.begin_write()
        channel = await queues.holder_channel(work.session, claims, lock=True)
        cleared = await queues.clear(work.session, channel)
        self.state.channels.hub.wake(work, [channel.id])
        return proto.ClearMessagesResponse(cleared=cleared, epoch=channel.epoch)

    @mutating(proto.ConnectChannelResponse, read_only_callers=True)
    async def connect_channel(
        self, message: proto.TokenRequest, work: UnitOfWork
    ) -> proto.ConnectChannelResponse:
        """Mark the channel connected (an event if it was not) and seen now."""
        claims = self._claims(message.token)
        await work.begin_write()
        channel = await queues.holder_channel(work.session, claims, lock=True)
        return proto.ConnectChannelResponse(connected=await self._connect(work, channel))

    @mutating(proto.DisconnectChannelResponse, read_only_callers=True)
    async def disconnect_channel(
        self, message: proto.DisconnectChannelRequest, work: UnitOfWork
    ) -> proto.DisconnectChannelResponse:
        """Mark the channel disconnected (a clean event if it was connected), first removing
        what the holder says it consumed (``acked``, in the channel's epoch)."""
        claims = self._claims(message.token)
        await work.begin_write()
        channel = await queues.holder_channel(work.session, claims, lock=True)
        acked = message.acked
        if acked is not None and acked.epoch == channel.epoch and acked.offset > 0:
            await queues.remove_through(work.session, channel, acked.offset)
        disconnected = await presence.disconnect(work.session, channel, clean=True)
        if disconnected:
            self.state.channels.hub.presence_changed(work, channel.owner)
        return proto.DisconnectChannelResponse(disconnected=disconnected)

    # --- helpers ---

    def _claims(self, token: str) -> ChannelClaims:
        try:
            return tokens.decode(self.state.keyring, token)
        except tokens.InvalidChannelToken as exc:
            raise GRPCError(Status.UNAUTHENTICATED, str(exc)) from None

    async def _connect(self, work: UnitOfWork, channel: Channel) -> bool:
        connected = await presence.connect(work.session, channel)
        if connected:
            self.state.channels.hub.presence_changed(work, channel.owner)
        return connected

    async def _send(
        self,
        work: UnitOfWork,
        client_ids: Sequence[str],
        message: proto.SendMessageRequest | proto.BroadcastRequest,
    ) -> list[proto.ChannelPosition]:
        data = bytes(message.data)
        problem = message_problem(data, message.text)
        if problem is not None:
            raise GRPCError(Status.INVALID_ARGUMENT, problem)
        await work.begin_write()
        hub = self.state.channels.hub
        positions, sent = await queues.send(
            work.session,
            hub,
            _owner(),
            client_ids,
            data,
            message.text,
            self.state.channels.settings.max_queue,
        )
        hub.sent(work, sent)
        return [proto.ChannelPosition(epoch=p.epoch, offset=p.offset) for p in positions]


def _owner() -> str:
    return current_call.get().principal.name


def _client_id(client_id: str) -> str:
    problem = client_id_problem(client_id)
    if problem is not None:
        raise GRPCError(Status.INVALID_ARGUMENT, problem)
    return client_id


def _message(row: ChannelMessage) -> proto.ChannelMessage:
    return proto.ChannelMessage(
        offset=row.offset, data=row.data, text=row.text, sent_at=row.sent_at
    )


def _handed(message: Handed) -> proto.ChannelMessage:
    return proto.ChannelMessage(
        offset=message.offset, data=message.data, text=message.text, sent_at=message.sent_at
    )


def _event(event: ChannelEvent) -> proto.PresenceEvent:
    kind = (
        proto.PresenceKind.CONNECTED
        if event.kind == EVENT_CONNECTED
        else proto.PresenceKind.DISCONNECTED
    )
    return proto.PresenceEvent(
        id=event.id, client_id=event.client_id, kind=kind, at=event.at, clean=event.clean
    )


async def _any_set(events: Sequence[asyncio.Event], most_seconds: float) -> None:
    """Return once one of ``events`` is set, or after ``most_seconds``."""
    if any(event.is_set() for event in events):
        return
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=most_seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
