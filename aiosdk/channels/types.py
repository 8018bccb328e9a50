"""What channels hand out (positions, messages, presence events), the checks the client makes
before any request, and the one table that refines the errors of channel calls."""

from __future__ import annotations

import operator
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from .._core.errors import (
    AuthenticationError,
    BadRequestError,
    ChannelFullError,
    ConfigurationError,
    ContinuityLostError,
    InvalidChannelIdError,
    InvalidTokenError,
    MessageTooLargeError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    StatusError,
    TokenTimedOutError,
)
from ..proto import ChannelMessage as WireMessage
from ..proto import ChannelPosition as WirePosition
from ..proto import PresenceEvent as WirePresenceEvent
from ..proto import PresenceKind

__all__ = [
    "MAX_CLIENT_ID_BYTES",
    "MAX_DURATION_MINUTES",
    "MAX_MESSAGE_BYTES",
    "ChannelMessage",
    "ChannelPosition",
    "PresenceEvent",
]

MAX_CLIENT_ID_BYTES = 64
"""The longest client id, in bytes of UTF-8."""
MAX_MESSAGE_BYTES = 32 * 1024
"""The largest message, in bytes (of UTF-8, for text)."""
MAX_DURATION_MINUTES = 1440
"""The longest a channel token lives (a day); the least is a minute."""
MAX_TOKEN_CHARS = 4096  # far above what the server signs; longer is no token of it
_UINT32 = 2**32 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Kind = Literal["owner", "send", "holder"]
"""Who makes a call: the application (``"send"``: a send or a broadcast), or the token holder."""


@dataclass(frozen=True)
class ChannelPosition:
    """Where a message is in its channel: its ``offset`` (1, 2, 3... in the order sent) in the
    channel's ``epoch`` (which changes when the channel's history is lost: cleared, or the
    channel created anew). Connect ``after=`` a position to resume after it."""

    epoch: str
    offset: int

    def __post_init__(self) -> None:
        if not isinstance(self.epoch, str):
            raise ConfigurationError(f"a position's epoch is a str, not {type(self.epoch)}")
        offset = _whole(self.offset, "a position's offset")
        if offset < 0:
            raise ConfigurationError(f"a position's offset is 0 or more, not {offset}")
        object.__setattr__(self, "offset", offset)

    @property
    def _wire(self) -> WirePosition:
        return WirePosition(epoch=self.epoch, offset=self.offset)


@dataclass(frozen=True)
class ChannelMessage:
    """A message of a channel: ``data`` as sent (a ``str`` for text, else ``bytes``), its
    ``position``, and when the server stored it (``sent_at``, UTC)."""

    data: str | bytes
    position: ChannelPosition
    sent_at: datetime


@dataclass(frozen=True)
class PresenceEvent:
    """A client of the application's channels connected or disconnected.

    Attributes:
        id: the event's number (ascending): ``presence(after=id)`` resumes after it.
        client_id: the channel's client id.
        kind: ``"connected"`` or ``"disconnected"``.
        at: when it happened (UTC, the server's clock).
        clean: for a disconnect, whether the holder said so (closed its connection, or called
            ``disconnect_channel_event``); ``False`` when the connection dropped or timed out
            (reported after the server's grace period). ``False`` for a connect.
    """

    id: int
    client_id: str
    kind: Literal["connected", "disconnected"]
    at: datetime
    clean: bool


# -- checks before any request ---------------------------------------------------------------


def check_client_id(client_id: object) -> str:
    """``client_id`` if the server would take it: 1 to 64 bytes of UTF-8, no control
    character; else :class:`~aiosdk.InvalidChannelIdError`."""
    if not isinstance(client_id, str):
        raise InvalidChannelIdError(f"a client id is a str, not {type(client_id).__name__}")
    try:
        size = len(client_id.encode())
    except UnicodeEncodeError:
        raise InvalidChannelIdError("a client id is text: this one is not UTF-8") from None
    if not 0 < size <= MAX_CLIENT_ID_BYTES:
        raise InvalidChannelIdError(
            f"a client id is 1 to {MAX_CLIENT_ID_BYTES} bytes of UTF-8, not {size}"
        )
    for char in client_id:
        if unicodedata.category(char) == "Cc":
            raise InvalidChannelIdError(
                f"a client id has no control characters: {client_id!r} has {char!r}"
            )
    return client_id


def encode_message(message: object) -> tuple[bytes, bool]:
    """A message's bytes, and whether it is text; a
    :class:`~aiosdk.MessageTooLargeError` over 32 KiB."""
    if isinstance(message, str):
        try:
            data, text = message.encode(), True
        except UnicodeEncodeError:
            raise ConfigurationError(
                "a text message is UTF-8: this one has lone surrogates (send bytes instead)"
            ) from None
    elif isinstance(message, bytes | bytearray | memoryview):
        data, text = bytes(message), False
    else:
        raise ConfigurationError(f"a message is a str or bytes, not {type(message).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(
            f"a message is {MAX_MESSAGE_BYTES} bytes at most (32 KiB), not {len(data)}",
            status_code=413,
        )
    return data, text


def token_text(token: object) -> str | None:
    """``token`` if it may be a channel token (else ``None``: it cannot be one); never shown in
    a message (it is a secret). A :class:`~aiosdk.ConfigurationError` if it is no ``str``."""
    if not isinstance(token, str):
        raise ConfigurationError(f"a channel token is a str, not {type(token).__name__}")
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        return None
    return token


def check_token(token: object) -> str:
    """``token`` (see :func:`token_text`); one that cannot be a channel token is an
    :class:`~aiosdk.InvalidTokenError`, raised before any request."""
    checked = token_text(token)
    if checked is None:
        raise InvalidTokenError("this is no channel token (it is malformed)", status_code=401)
    return checked


def check_duration(minutes: object) -> int | None:
    if minutes is None:
        return None
    value = _whole(minutes, "duration_minutes")
    if not 1 <= value <= MAX_DURATION_MINUTES:
        raise ConfigurationError(
            f"duration_minutes is 1 to {MAX_DURATION_MINUTES} (a day), not {value}"
        )
    return value


def check_window(window: object) -> int:
    """The window to ask for (0: the server's default)."""
    if window is None:
        return 0
    value = _whole(window, "window")
    if not 1 <= value <= _UINT32:
        raise ConfigurationError(f"window is a positive number of messages, not {value}")
    return value


def check_after(after: object) -> ChannelPosition | None:
    if after is not None and not isinstance(after, ChannelPosition):
        raise ConfigurationError(f"after is a ChannelPosition, not {type(after).__name__}")
    return after


def check_event_id(after: object) -> int | None:
    if after is None:
        return None
    value = _whole(after, "after")
    if value < 0:
        raise ConfigurationError(f"after is an event id (0 or more), not {value}")
    return value


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ConfigurationError(f"{what} is an int, not {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigurationError(f"{what} is an int, not {type(value).__name__}") from None


# -- from the wire ---------------------------------------------------------------------------


def message_data(wire: WireMessage, what: str) -> str | bytes:
    if not wire.text:
        return bytes(wire.data)
    try:
        return bytes(wire.data).decode()
    except UnicodeDecodeError:
        raise ProtocolError(f"{what}: a text message that is not UTF-8") from None


def channel_message(wire: WireMessage, epoch: str, what: str) -> ChannelMessage:
    return ChannelMessage(
        message_data(wire, what),
        ChannelPosition(epoch, wire.offset),
        wire.sent_at if wire.sent_at is not None else _EPOCH,
    )


def position(wire: WirePosition | None, what: str) -> ChannelPosition:
    if wire is None:
        raise ProtocolError(f"{what}: the answer has no position")
    return ChannelPosition(wire.epoch, wire.offset)


_KINDS: Mapping[PresenceKind, Literal["connected", "disconnected"]] = {
    PresenceKind.CONNECTED: "connected",
    PresenceKind.DISCONNECTED: "disconnected",
}


def presence_event(wire: WirePresenceEvent) -> PresenceEvent:
    kind = _KINDS.get(wire.kind)
    if kind is None:
        raise ProtocolError(f"Presence: unknown event kind {wire.kind!r}")
    at = wire.at if wire.at is not None else _EPOCH
    return PresenceEvent(wire.id, wire.client_id, kind, at, wire.clean)


# -- errors ----------------------------------------------------------------------------------

# (who calls, the gRPC status) -> (the class the status table gave, the finer one it means).
REFINED: Mapping[tuple[Kind, str], tuple[type[StatusError], type[StatusError]]] = {
    ("holder", "UNAUTHENTICATED"): (AuthenticationError, InvalidTokenError),
    ("holder", "NOT_FOUND"): (NotFoundError, TokenTimedOutError),
    ("holder", "OUT_OF_RANGE"): (BadRequestError, ContinuityLostError),
    ("send", "RESOURCE_EXHAUSTED"): (RateLimitError, ChannelFullError),
}
"""The one table of channel errors finer than the status alone says: a token holder's
refusals name the token's problem, a send's ``RESOURCE_EXHAUSTED`` a full queue. (A send to a
client id without a live channel stays a plain :class:`~aiosdk.NotFoundError`.)"""


def refined(error: StatusError, kind: Kind) -> StatusError:
    """``error`` as the finer class :data:`REFINED` names for it, or itself."""
    entry = REFINED.get((kind, error.grpc_status or ""))
    if entry is None or type(error) is not entry[0]:
        return error
    better = entry[1](
        error.message,
        status_code=error.status_code,
        request_id=error.request_id,
        body=error.body,
        grpc_status=error.grpc_status,
        retry_after=error.retry_after,
    )
    better.__cause__ = error.__cause__
    better.__traceback__ = error.__traceback__
    return better
