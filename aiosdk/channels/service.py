"""Channels: messages from an application to its clients (gRPC ``ChannelService``).

An application (a user, by its credentials) creates a channel for a client id of its own and
gets a token (:meth:`AsyncChannels.create_channel`), which it hands to the client; it sends
messages to that client id, stored by the server until the token's holder takes them, and
learns when its clients connect and disconnect (:meth:`AsyncChannels.presence`). The holder
needs no login: the token is its credential (``async with AsyncClient(url) as c,
c.channels.connect(token)`` works without any). The token is a secret: it is never shown in a
repr, a log or an error.

Sends carry an idempotency key, so a retried send is stored once (``"forceful"`` retries them
safely); a send either is stored or raises, never dropped silently. gRPC needs asyncio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from .._core.context import ClientContext
from .._core.errors import (
    ConfigurationError,
    InvalidTokenError,
    ProtocolError,
    StatusError,
    TokenTimedOutError,
)
from ..proto import (
    BroadcastRequest,
    ChannelServiceStub,
    CreateChannelRequest,
    DisconnectChannelRequest,
    PopMessageRequest,
    PresenceRequest,
    SendMessageRequest,
    TokenRequest,
)
from ..proto import PresenceEvent as WirePresenceEvent
from .connection import AsyncChannelConnection
from .types import (
    ChannelPosition,
    Kind,
    PresenceEvent,
    check_client_id,
    check_duration,
    check_event_id,
    check_token,
    encode_message,
    message_data,
    position,
    presence_event,
    refined,
    token_text,
)

__all__ = ["AsyncChannels"]

T = TypeVar("T")


class AsyncChannels:
    """The channels of the client's user (``client.channels``), and the token holder's calls.

    The application: ``token = await channels.create_channel("device-17")``,
    ``await channels.send_message("device-17", "hello")``, ``await channels.broadcast([...],
    data)``, ``async for event in channels.presence()``. The holder of a token (no login
    needed): ``async with channels.connect(token) as ch: async for message in ch``, or the
    calls that take the token (``pop_first_message(token)``...).
    """

    def __init__(self, ctx: ClientContext) -> None:
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"<{type(self).__name__} url={self._ctx.transport.url!r}>"

    async def _call(
        self,
        what: str,
        invoke: Callable[[ChannelServiceStub], Awaitable[T]],
        *,
        idempotent: bool,
        kind: Kind,
    ) -> T:
        """One call of ``ChannelService`` through the request path, its errors refined."""
        try:
            return await self._ctx.transport.grpc_unary(
                ChannelServiceStub,
                invoke,
                idempotent=idempotent,
                options=self._ctx.options,
                what=what,
                login_hint=kind != "holder",
            )
        except StatusError as exc:
            better = refined(exc, kind)
            if better is exc:
                raise
            raise better from exc.__cause__

    # -- the application's calls ---------------------------------------------------------------

    async def create_channel(self, client_id: str, duration_minutes: int | None = None) -> str:
        """Create the channel of ``client_id`` (1 to 64 bytes of UTF-8, no control
        characters; the user's own name space) and return its token, valid for
        ``duration_minutes`` (1 to 1440; ``None``: 120).

        For a client id whose channel lives, the token is replaced (the old one stops working
        at once, and its open connection ends) while the channel keeps its pending messages;
        otherwise the channel starts empty. A read-only API token may not create channels
        (:class:`~aiosdk.PermissionDeniedError`).
        """
        request = CreateChannelRequest(
            client_id=check_client_id(client_id), duration_minutes=check_duration(duration_minutes)
        )
        answer = await self._call(
            "CreateChannel",
            lambda stub: stub.create_channel(request),
            idempotent=False,
            kind="owner",
        )
        if not answer.token:
            raise ProtocolError("CreateChannel: the answer has no token")
        return answer.token

    async def send_message(self, client_id: str, message: str | bytes) -> ChannelPosition:
        """Send ``message`` (a ``str`` or ``bytes``, 32 KiB at most) to the channel of
        ``client_id``; its position. Stored until the token's holder takes it.

        Raises :class:`~aiosdk.NotFoundError` when the client id has no live channel,
        :class:`~aiosdk.ChannelFullError` when its queue is full, and, before any request,
        :class:`~aiosdk.MessageTooLargeError` and :class:`~aiosdk.InvalidChannelIdError`.
        """
        data, text = encode_message(message)
        request = SendMessageRequest(client_id=check_client_id(client_id), data=data, text=text)
        answer = await self._call(
            "SendMessage", lambda stub: stub.send_message(request), idempotent=False, kind="send"
        )
        return position(answer.position, "SendMessage")

    async def broadcast(
        self, client_ids: Iterable[str], message: str | bytes
    ) -> list[ChannelPosition]:
        """Send ``message`` to the channel of every client id of ``client_ids`` in one go,
        stored for all of them or for none (as :meth:`send_message` raises); their positions,
        in the same order. No client ids: nothing is sent."""
        if isinstance(client_ids, str | bytes) or not isinstance(client_ids, Iterable):
            raise ConfigurationError(
                f"broadcast takes client ids (a list of str), not a {type(client_ids).__name__}"
            )
        ids = [check_client_id(client_id) for client_id in client_ids]
        data, text = encode_message(message)
        if not ids:
            return []
        request = BroadcastRequest(client_ids=ids, data=data, text=text)
        answer = await self._call(
            "Broadcast", lambda stub: stub.broadcast(request), idempotent=False, kind="send"
        )
        if len(answer.positions) != len(ids):
            raise ProtocolError(
                f"Broadcast: {len(answer.positions)} positions for {len(ids)} client ids"
            )
        return [position(p, "Broadcast") for p in answer.positions]

    async def presence(self, *, after: int | None = None) -> AsyncIterator[PresenceEvent]:
        """The user's clients connecting and disconnecting, as the server reports them, until
        the caller stops iterating: the events after the event id ``after`` that the server
        still keeps, or (``None``) those from now on.

        A clean disconnect comes at once; a dropped connection after the server's grace period.
        Reconnections (as the retry mode allows) resume after the last event received.
        """
        start = check_event_id(after)

        def open_stream(
            stub: ChannelServiceStub, last: WirePresenceEvent | None
        ) -> AsyncIterator[WirePresenceEvent]:
            return stub.presence(PresenceRequest(after=last.id if last is not None else start))

        stream = self._ctx.transport.grpc_stream(
            ChannelServiceStub,
            open_stream,
            idempotent=True,
            options=self._ctx.options,
            what="Presence",
            resumable=True,  # after the last event id: safe in every mode that retries
        )
        try:
            async for wire in stream:
                yield presence_event(wire)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator

    # -- the token holder's calls ----------------------------------------------------------------

    def connect(
        self, token: str, *, after: ChannelPosition | None = None, window: int | None = None
    ) -> AsyncChannelConnection:
        """The live messages of the channel of ``token``:
        ``async with channels.connect(token) as ch: async for message in ch: ...``.

        ``after``: resume after this position (a :attr:`~AsyncChannelConnection.position`
        of an earlier connection), the messages up to it counting as consumed; ``None``: from
        the oldest pending message. ``window``: how many messages the server sends ahead of
        what was acknowledged (``None``: the server's default). Needs no login.
        """
        return AsyncChannelConnection(self._ctx, token, after=after, window=window)

    async def client_id_from_token(self, token: str) -> str | None:
        """The client id ``token`` was created for (expired or replaced, too); ``None`` if it
        is malformed, or not signed by this server."""
        text = token_text(token)
        if text is None:
            return None
        try:
            info = await self._call(
                "InspectToken",
                lambda stub: stub.inspect_token(TokenRequest(token=text)),
                idempotent=True,
                kind="holder",
            )
        except InvalidTokenError:
            return None
        return info.client_id

    async def validate_token_and_extract_client_id(self, token: str) -> str:
        """The client id of ``token`` if it is good: :class:`~aiosdk.InvalidTokenError` if it
        is malformed or forged, :class:`~aiosdk.TokenTimedOutError` if it expired or was
        replaced."""
        request = TokenRequest(token=check_token(token))
        info = await self._call(
            "InspectToken",
            lambda stub: stub.inspect_token(request),
            idempotent=True,
            kind="holder",
        )
        if not info.live:
            raise TokenTimedOutError(
                f"the channel token of {info.client_id!r} expired or was replaced",
                status_code=404,
            )
        return info.client_id

    async def get_channel_messages(self, token: str) -> list[str | bytes]:
        """The pending messages of the channel of ``token``, oldest first (they stay
        pending)."""
        request = TokenRequest(token=check_token(token))
        answer = await self._call(
            "GetMessages", lambda stub: stub.get_messages(request), idempotent=True, kind="holder"
        )
        return [message_data(wire, "GetMessages") for wire in answer.messages]

    async def has_channel_messages(self, token: str) -> bool:
        """Whether the channel of ``token`` has pending messages."""
        request = TokenRequest(token=check_token(token))
        answer = await self._call(
            "HasMessages", lambda stub: stub.has_messages(request), idempotent=True, kind="holder"
        )
        return answer.has_messages

    async def pop_first_message(self, token: str) -> str | bytes | None:
        """Take the oldest pending message of the channel of ``token`` (not one in flight to a
        live connection): removed and returned atomically (two callers never get the same);
        ``None`` if there is none."""
        return await self._pop(token, connect=False)

    async def connect_and_pop_first_message(self, token: str) -> str | bytes | None:
        """:meth:`connect_channel` and :meth:`pop_first_message` in one atomic step."""
        return await self._pop(token, connect=True)

    async def _pop(self, token: str, *, connect: bool) -> str | bytes | None:
        request = PopMessageRequest(token=check_token(token), connect=connect)
        answer = await self._call(
            "PopMessage", lambda stub: stub.pop_message(request), idempotent=False, kind="holder"
        )
        return None if answer.message is None else message_data(answer.message, "PopMessage")

    async def clear_channel_messages(self, token: str) -> None:
        """Remove every pending message of the channel of ``token``. Its history is lost: the
        channel gets a new epoch (a connection resuming from before raises
        :class:`~aiosdk.ContinuityLostError`)."""
        request = TokenRequest(token=check_token(token))
        await self._call(
            "ClearMessages",
            lambda stub: stub.clear_messages(request),
            idempotent=False,
            kind="holder",
        )

    async def connect_channel(self, token: str) -> None:
        """Mark the channel of ``token`` connected (the application gets a ``"connected"``
        event if it was not), or refresh its timeout: call it again within the server's grace
        period, or it counts as disconnected."""
        request = TokenRequest(token=check_token(token))
        await self._call(
            "ConnectChannel",
            lambda stub: stub.connect_channel(request),
            idempotent=False,
            kind="holder",
        )

    async def disconnect_channel_event(self, token: str) -> None:
        """Mark the channel of ``token`` disconnected (a clean ``"disconnected"`` event for the
        application, if it was connected)."""
        request = DisconnectChannelRequest(token=check_token(token))
        await self._call(
            "DisconnectChannel",
            lambda stub: stub.disconnect_channel(request),
            idempotent=False,
            kind="holder",
        )
