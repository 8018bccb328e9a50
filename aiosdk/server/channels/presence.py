"""Presence: whether a channel's holder is connected, the events that say when that changed,
and the sweep that disconnects the silent ones.

A channel is *connected* from a ConnectChannel or the start of a Listen stream, and its
``last_seen`` is refreshed by them (a Listen stream's by its process, every open channel in one
UPDATE: :func:`refresh`). A DisconnectChannel, or a Listen stream closed with ``close``,
disconnects at once (a clean event); otherwise the sweep disconnects a channel once its
``last_seen`` is older than the grace period (an unclean one), unless it was refreshed
meanwhile. Every change is a row of :class:`~.models.ChannelEvent`, numbered per owner in commit
order (on PostgreSQL the inserts of one owner's events are serialized by an advisory lock, so a
reader never sees a number before a smaller one that commits later).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..storage.models import utcnow
from .models import EVENT_CONNECTED, EVENT_DISCONNECTED, Channel, ChannelEvent, ChannelMessage

__all__ = [
    "Sweep",
    "connect",
    "disconnect",
    "events_after",
    "latest_event_id",
    "refresh",
    "sweep",
    "sweep_due",
]


async def record_events(
    db: AsyncSession, events: Sequence[tuple[str, str, str, bool]], at: datetime
) -> None:
    """Store the events ``(owner, client id, kind, clean)``."""
    if not events:
        return
    if db.bind is not None and db.bind.dialect.name == "postgresql":
        for owner in sorted({owner for owner, _, _, _ in events}):
            await db.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"aiosdk-channel-events:{owner}"},
            )
    await db.execute(
        insert(ChannelEvent),
        [
            {"owner": owner, "client_id": client_id, "kind": kind, "clean": clean, "at": at}
            for owner, client_id, kind, clean in events
        ],
    )


async def connect(db: AsyncSession, channel: Channel, now: datetime | None = None) -> bool:
    """Mark ``channel`` connected and seen now; whether it was not connected (an event)."""
    now = now or utcnow()
    was = channel.connected
    channel.connected = True
    channel.last_seen = now
    if not was:
        await record_events(db, [(channel.owner, channel.client_id, EVENT_CONNECTED, False)], now)
    await db.flush()
    return not was


async def disconnect(db: AsyncSession, channel: Channel, *, clean: bool) -> bool:
    """Mark ``channel`` disconnected; whether it was connected (an event)."""
    if not channel.connected:
        return False
    now = utcnow()
    channel.connected = False
    await record_events(db, [(channel.owner, channel.client_id, EVENT_DISCONNECTED, clean)], now)
    await db.flush()
    return True


async def refresh(db: AsyncSession, channel_ids: Sequence[str]) -> list[str]:
    """Mark the channels of this process's open Listen streams seen now (one UPDATE), and
    connected again those a sweep disconnected meanwhile; the owners with new events."""
    if not channel_ids:
        return []
    now = utcnow()
    await db.execute(
        update(Channel)
        .where(Channel.id.in_(channel_ids), Channel.connected.is_(True))
        .values(last_seen=now)
        .execution_options(synchronize_session=False)
    )
    revived = (
        await db.execute(
            update(Channel)
            .where(Channel.id.in_(channel_ids), Channel.connected.is_(False))
            .values(last_seen=now, connected=True)
            .returning(Channel.owner, Channel.client_id)
            .execution_options(synchronize_session=False)
        )
    ).all()
    await record_events(
        db, [(owner, client_id, EVENT_CONNECTED, False) for owner, client_id in revived], now
    )
    return sorted({owner for owner, _ in revived})


@dataclass(frozen=True)
class Sweep:
    """What a sweep did."""

    disconnected: int
    expired: list[str]
    """The ids of the expired channels removed (their streams, if any, end)."""
    owners: list[str]
    """The owners with new events."""


def _silent(now: datetime, grace: float) -> object:
    cutoff = now - timedelta(seconds=grace)
    return and_(
        Channel.connected.is_(True),
        or_(Channel.last_seen.is_(None), Channel.last_seen < cutoff, Channel.expires_at <= now),
    )


async def sweep_due(db: AsyncSession, grace: float, retention: float) -> bool:
    """Whether :func:`sweep` has anything to do (a read: no write lock for nothing)."""
    now = utcnow()
    old = now - timedelta(seconds=retention)
    query = select(
        or_(
            exists().where(_silent(now, grace)),  # type: ignore[arg-type]
            exists().where(Channel.expires_at <= now),
            exists().where(ChannelEvent.at < old),
        )
    )
    return bool((await db.execute(query)).scalar())


async def sweep(db: AsyncSession, grace: float, retention: float) -> Sweep:
    """Disconnect the silent channels (unclean events), remove the expired channels with their
    messages, and the events older than ``retention`` seconds."""
    now = utcnow()
    silent = (
        await db.execute(
            update(Channel)
            .where(_silent(now, grace))  # type: ignore[arg-type]
            .values(connected=False)
            .returning(Channel.owner, Channel.client_id)
            .execution_options(synchronize_session=False)
        )
    ).all()
    await record_events(
        db, [(owner, client_id, EVENT_DISCONNECTED, False) for owner, client_id in silent], now
    )
    expired = list(
        (
            await db.execute(
                delete(Channel)
                .where(Channel.expires_at <= now)
                .returning(Channel.id)
                .execution_options(synchronize_session=False)
            )
        ).scalars()
    )
    if expired:  # (their messages too: on SQLite without the cascade as well)
        await db.execute(
            delete(ChannelMessage)
            .where(ChannelMessage.channel_id.in_(expired))
            .execution_options(synchronize_session=False)
        )
    await db.execute(
        delete(ChannelEvent)
        .where(ChannelEvent.at < now - timedelta(seconds=retention))
        .execution_options(synchronize_session=False)
    )
    return Sweep(
        disconnected=len(silent),
        expired=expired,
        owners=sorted({owner for owner, _ in silent}),
    )


async def latest_event_id(db: AsyncSession, owner: str) -> int:
    """The id of ``owner``'s newest event (0: none)."""
    latest = await db.scalar(select(func.max(ChannelEvent.id)).where(ChannelEvent.owner == owner))
    return int(latest or 0)


async def events_after(
    db: AsyncSession, owner: str, after: int, limit: int
) -> Sequence[ChannelEvent]:
    """``owner``'s events numbered above ``after``, oldest first, ``limit`` at most."""
    rows = await db.scalars(
        select(ChannelEvent)
        .where(ChannelEvent.owner == owner, ChannelEvent.id > after)
        .order_by(ChannelEvent.id)
        .limit(limit)
    )
    return rows.all()
