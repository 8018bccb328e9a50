"""Tables of channels: a channel per (owner, client id), its pending messages, and the owners'
presence events.

A channel row carries its current token (the SHA-256 of the token's id: a replaced token no
longer matches), its epoch and last offset, its presence (``connected``, ``last_seen``) and the
Listen stream that holds it (``stream_id``). A message leased to that stream (``lease``) is
skipped by pops while the stream lives (its channel's ``last_seen`` is fresh).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..storage.models import Base, new_id, utcnow

__all__ = ["Channel", "ChannelEvent", "ChannelMessage", "EVENT_CONNECTED", "EVENT_DISCONNECTED"]

EVENT_CONNECTED = "connected"
EVENT_DISCONNECTED = "disconnected"

_EVENT_ID = BigInteger().with_variant(Integer, "sqlite")  # (SQLite autoincrements INTEGER keys)


class Channel(Base):
    """A channel: its owner's client id, token, epoch, offsets and presence."""

    __tablename__ = "channels"
    __table_args__ = (
        UniqueConstraint("owner", "client_id", name="uq_channels_owner_client"),
        Index("ix_channels_expires_at", "expires_at"),
        Index("ix_channels_last_seen", "last_seen"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(100))
    client_id: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64))
    """The SHA-256 (hex) of the current token's id (the token itself is never stored)."""
    epoch: Mapped[str] = mapped_column(String(32))
    last_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    """The offset of the last message sent (0: none yet); never goes back, not even on clear."""
    expires_at: Mapped[datetime]
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[datetime | None]
    stream_id: Mapped[str | None] = mapped_column(String(32))
    """The Listen stream that holds the channel (the newest one), ``None`` when none."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChannelMessage(Base):
    """A pending message (not yet acknowledged, popped or cleared)."""

    __tablename__ = "channel_messages"

    channel_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    text: Mapped[bool] = mapped_column(Boolean, default=False)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease: Mapped[str | None] = mapped_column(String(32))
    """The Listen stream it was sent to (not yet acknowledged), ``None`` when none."""


class ChannelEvent(Base):
    """A presence event of one of ``owner``'s channels (ids ascend in commit order per owner
    as far as any reader can tell: a reader reads after its wake-up)."""

    __tablename__ = "channel_events"
    __table_args__ = (
        Index("ix_channel_events_owner_id", "owner", "id"),
        Index("ix_channel_events_at", "at"),
    )

    id: Mapped[int] = mapped_column(_EVENT_ID, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    client_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    clean: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column(default=utcnow)
