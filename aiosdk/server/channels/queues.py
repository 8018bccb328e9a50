"""Channels and their queues, in a request's unit of work: creating a channel (or replacing its
token), sending, reading, popping and clearing messages.

Offsets are per channel, 1, 2, 3, ... in commit order: a send increments its channel's
``last_offset`` in an UPDATE that also locks the channel's row (PostgreSQL), so concurrent
sends to one channel take their turns, and a broadcast does it for all its channels in one
statement. They never go back (a clear keeps counting, under a new epoch), so a late
acknowledgement can never remove a newer message.

The handlers call :meth:`~aiosdk.server.unit_of_work.UnitOfWork.begin_write` before these;
refusals are :class:`grpclib.GRPCError`\\ s with the reason.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from grpclib import GRPCError, Status
from sqlalchemy import delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..keyring import Keyring
from ..storage.models import utcnow
from . import presence, tokens
from .hub import ChannelHub, Handed
from .models import Channel, ChannelMessage
from .tokens import ChannelClaims

__all__ = [
    "MAX_BROADCAST",
    "Created",
    "Sent",
    "clear",
    "create_channel",
    "has_pending",
    "holder_channel",
    "new_epoch",
    "pending",
    "pop",
    "send",
]

MAX_BROADCAST = 10_000
"""Client ids in one broadcast, at most."""

GONE = "the channel token expired or was replaced, or its channel is gone"


def new_epoch() -> str:
    """A fresh random epoch."""
    return secrets.token_hex(8)


def is_live(channel: Channel, now: datetime | None = None) -> bool:
    return channel.expires_at > (now or utcnow())


async def holder_channel(db: AsyncSession, claims: ChannelClaims, *, lock: bool = False) -> Channel:
    """The live channel of a token's ``claims``: ``NOT_FOUND`` when the token expired or was
    replaced, or its channel is gone."""
    if claims.expires_at <= utcnow():
        raise GRPCError(Status.NOT_FOUND, "the channel token expired")
    query = select(Channel).where(Channel.id == claims.channel_id)
    if lock:
        query = query.with_for_update()
    channel = await db.scalar(query)
    if channel is None or channel.token_hash != claims.token_hash or not is_live(channel):
        raise GRPCError(Status.NOT_FOUND, GONE)
    return channel


@dataclass(frozen=True)
class Created:
    """A CreateChannel's outcome."""

    channel: Channel
    token: str
    replaced: bool
    """Whether a live channel's token was replaced (its queue and epoch kept)."""


async def create_channel(
    db: AsyncSession, keyring: Keyring, owner: str, client_id: str, minutes: int
) -> Created:
    """A new token for ``owner``'s ``client_id``: the live channel's, replacing its token, or a
    new channel's (an expired one goes, with its messages)."""
    now = utcnow()
    expires_at = (now + timedelta(minutes=minutes)).replace(microsecond=0)
    channel = await db.scalar(
        select(Channel)
        .where(Channel.owner == owner, Channel.client_id == client_id)
        .with_for_update()
    )
    replaced = channel is not None and is_live(channel, now)
    if channel is not None and not replaced:
        if channel.connected:
            await presence.disconnect(db, channel, clean=False)
        gone = channel.id
        await db.execute(
            delete(ChannelMessage)
            .where(ChannelMessage.channel_id == gone)
            .execution_options(synchronize_session=False)
        )
        await db.execute(
            delete(Channel).where(Channel.id == gone).execution_options(synchronize_session=False)
        )
        db.expunge(channel)
        channel = None
    token_id = tokens.new_token_id()
    if channel is None:
        channel = Channel(
            owner=owner,
            client_id=client_id,
            token_hash=tokens.token_hash(token_id),
            epoch=new_epoch(),
            last_offset=0,
            expires_at=expires_at,
            connected=False,
            created_at=now,
        )
        db.add(channel)
    else:
        channel.token_hash = tokens.token_hash(token_id)
        channel.expires_at = expires_at
    await db.flush()
    claims = ChannelClaims(channel.id, token_id, client_id, expires_at)
    return Created(channel, tokens.encode(keyring, claims), replaced)


@dataclass(frozen=True)
class Sent:
    """Where a sent message went."""

    channel_id: str
    epoch: str
    offset: int


async def send(
    db: AsyncSession,
    hub: ChannelHub,
    owner: str,
    client_ids: Sequence[str],
    data: bytes,
    text: bool,
    max_queue: int,
) -> tuple[list[Sent], list[tuple[str, str, str | None, Handed]]]:
    """Store ``data`` for each of ``owner``'s ``client_ids`` (each once), all or none:
    ``NOT_FOUND`` for a client id without a live channel, ``RESOURCE_EXHAUSTED`` for a full
    queue. Returns one position per distinct client id, in their order, and what to tell
    :meth:`~.hub.ChannelHub.sent` (each message leased to a stream of this process that can
    take it at once)."""
    now = utcnow()
    wanted = list(dict.fromkeys(client_ids))
    rows = (
        await db.execute(
            update(Channel)
            .where(
                Channel.owner == owner,
                Channel.client_id.in_(wanted),
                Channel.expires_at > now,
            )
            .values(last_offset=Channel.last_offset + 1)
            .returning(Channel.id, Channel.client_id, Channel.epoch, Channel.last_offset)
            .execution_options(synchronize_session=False)
        )
    ).all()
    found = {
        client_id: (channel_id, epoch, offset) for channel_id, client_id, epoch, offset in rows
    }
    missing = [client_id for client_id in wanted if client_id not in found]
    if missing:
        raise GRPCError(
            Status.NOT_FOUND,
            f"no live channel for client id {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
        )
    channel_ids = [channel_id for channel_id, _, _ in found.values()]
    counts = dict(
        (
            await db.execute(
                select(ChannelMessage.channel_id, func.count())
                .where(ChannelMessage.channel_id.in_(channel_ids))
                .group_by(ChannelMessage.channel_id)
            )
        ).all()
    )
    for client_id in wanted:
        if counts.get(found[client_id][0], 0) >= max_queue:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"the channel's queue is full ({max_queue} messages): client id {client_id!r}",
            )
    positions: list[Sent] = []
    handed: list[tuple[str, str, str | None, Handed]] = []
    values = []
    for client_id in wanted:
        channel_id, epoch, offset = found[client_id]
        lease = hub.lease_for(channel_id, epoch)
        values.append(
            {
                "channel_id": channel_id,
                "offset": offset,
                "data": data,
                "text": text,
                "sent_at": now,
                "lease": lease,
            }
        )
        positions.append(Sent(channel_id, epoch, offset))
        handed.append((channel_id, epoch, lease, Handed(offset, data, text, now)))
    await db.execute(insert(ChannelMessage), values)
    return positions, handed


async def pending(db: AsyncSession, channel_id: str) -> Sequence[ChannelMessage]:
    """The channel's pending messages, oldest first."""
    rows = await db.scalars(
        select(ChannelMessage)
        .where(ChannelMessage.channel_id == channel_id)
        .order_by(ChannelMessage.offset)
    )
    return rows.all()


async def has_pending(db: AsyncSession, channel_id: str) -> bool:
    """Whether the channel has a pending message."""
    query = select(exists().where(ChannelMessage.channel_id == channel_id))
    return bool(await db.scalar(query))


def live_stream(channel: Channel, grace: float, now: datetime | None = None) -> str | None:
    """The Listen stream holding ``channel`` while it lives (its process keeps ``last_seen``
    fresh), else ``None``."""
    now = now or utcnow()
    if channel.stream_id is None or channel.last_seen is None:
        return None
    if channel.last_seen < now - timedelta(seconds=grace):
        return None
    return channel.stream_id


async def pop(db: AsyncSession, channel: Channel, grace: float) -> Handed | None:
    """Remove and return the oldest pending message not leased to the channel's live Listen
    stream (``None``: none); two pops never get the same message (PostgreSQL: the row is
    locked, the other pop skips it; SQLite: one writer at a time)."""
    query = select(ChannelMessage).where(ChannelMessage.channel_id == channel.id)
    stream = live_stream(channel, grace)
    if stream is not None:
        query = query.where(or_(ChannelMessage.lease.is_(None), ChannelMessage.lease != stream))
    message = await db.scalar(
        query.order_by(ChannelMessage.offset).limit(1).with_for_update(skip_locked=True)
    )
    if message is None:
        return None
    popped = Handed(message.offset, message.data, message.text, message.sent_at)
    await db.execute(
        delete(ChannelMessage)
        .where(ChannelMessage.channel_id == channel.id, ChannelMessage.offset == message.offset)
        .execution_options(synchronize_session=False)
    )
    db.expunge(message)
    return popped


async def remove_through(db: AsyncSession, channel: Channel, offset: int) -> None:
    """Remove the messages of ``channel`` up to ``offset``: the holder consumed them."""
    await db.execute(
        delete(ChannelMessage)
        .where(ChannelMessage.channel_id == channel.id, ChannelMessage.offset <= offset)
        .execution_options(synchronize_session=False)
    )


async def clear(db: AsyncSession, channel: Channel) -> int:
    """Remove every pending message of ``channel`` and give it a new epoch; how many went."""
    removed = await db.execute(
        delete(ChannelMessage)
        .where(ChannelMessage.channel_id == channel.id)
        .execution_options(synchronize_session=False)
    )
    channel.epoch = new_epoch()
    await db.flush()
    return int(getattr(removed, "rowcount", 0) or 0)
