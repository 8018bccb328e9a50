"""Channel tokens: ``"aio_ch_" + base64url(payload) + "." + signature``.

The payload is compact JSON naming the channel, the token's own random id, the client id and the
expiry; the signature is the server keyring's (purpose :data:`PURPOSE`), so a token verifies on
every server sharing the keyring and nowhere else. The database keeps only the SHA-256 of the
token's id (:func:`token_hash`): a replaced token's id no longer matches its channel's.

A token is a secret: nothing here puts one in a message, a log line or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..keyring import Keyring
from .validation import client_id_problem

__all__ = [
    "PREFIX",
    "PURPOSE",
    "ChannelClaims",
    "InvalidChannelToken",
    "decode",
    "encode",
    "new_token_id",
    "token_hash",
]

PREFIX = "aio_ch_"
PURPOSE = "channel-token"
MAX_TOKEN_CHARS = 1024
"""A longer string is no token of ours (refused unread)."""


class InvalidChannelToken(Exception):
    """The string is no channel token this server signed (malformed, or a bad signature)."""


@dataclass(frozen=True)
class ChannelClaims:
    """What a token says: its channel, its own id, the client id and the expiry."""

    channel_id: str
    token_id: str = field(repr=False)
    client_id: str
    expires_at: datetime

    @property
    def token_hash(self) -> str:
        """The SHA-256 of the token's id, as its channel keeps it."""
        return token_hash(self.token_id)


def token_hash(token_id: str) -> str:
    """The SHA-256 (hex) of a token id."""
    return hashlib.sha256(token_id.encode()).hexdigest()


def new_token_id() -> str:
    """A fresh random token id."""
    return secrets.token_urlsafe(16)


def encode(keyring: Keyring, claims: ChannelClaims) -> str:
    """The signed token of ``claims``."""
    payload = json.dumps(
        {
            "c": claims.channel_id,
            "t": claims.token_id,
            "i": claims.client_id,
            "e": int(claims.expires_at.timestamp()),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"{PREFIX}{body}.{keyring.sign(PURPOSE, payload)}"


def decode(keyring: Keyring, token: str) -> ChannelClaims:
    """The claims of ``token``; :class:`InvalidChannelToken` unless this server signed it."""
    if not token.startswith(PREFIX) or len(token) > MAX_TOKEN_CHARS:
        raise InvalidChannelToken("not a channel token")
    body, _, signature = token[len(PREFIX) :].partition(".")
    if not body or not signature:
        raise InvalidChannelToken("not a channel token")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise InvalidChannelToken("not a channel token") from None
    if not keyring.verify(PURPOSE, payload, signature):
        raise InvalidChannelToken("the channel token's signature does not verify")
    try:
        fields = json.loads(payload)
        claims = ChannelClaims(
            channel_id=_string(fields["c"]),
            token_id=_string(fields["t"]),
            client_id=_string(fields["i"]),
            expires_at=datetime.fromtimestamp(_integer(fields["e"]), timezone.utc),
        )
    except (ValueError, KeyError, TypeError, OverflowError, OSError):
        raise InvalidChannelToken("not a channel token") from None
    if client_id_problem(claims.client_id) is not None:
        raise InvalidChannelToken("not a channel token")
    return claims


def _string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("not a string")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value
