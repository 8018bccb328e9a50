"""This process's channel streams and their wake-ups.

A :class:`ChannelHub` knows the open Listen stream of each channel held in this process and the
Presence streams of each owner. What a committed change means for them reaches them in two ways:

- in this process, once the change commits: a sent message is *handed* to the channel's stream
  (:meth:`ChannelHub.sent`; the sender leased it to that stream in its transaction, see
  :meth:`ChannelHub.lease_for`), so the stream sends it without reading the database; any other
  change (a clear, a new token, a takeover) *wakes* the stream (:meth:`ChannelHub.wake`), which
  then looks at its channel's row;
- in the other processes of a PostgreSQL database, through the
  :class:`~aiosdk.server.notify.Notifier`: the ids of the channels concerned, packed many to a
  notification and tagged with this process's origin (its own notifications come back through
  ``LISTEN``: skipped). Those streams wake and read.

It also writes the streams' acknowledgements, all of this process's at once
(:meth:`ChannelHub.ack`): one transaction removes what every stream acknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import anyio
from sqlalchemy import and_, delete, or_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..logs import logger
from ..notify import MISSED, Notifier
from ..storage.models import new_id
from ..unit_of_work import UnitOfWork
from .models import ChannelMessage

__all__ = ["CHANNELS_CHANGED", "PRESENCE_CHANGED", "ChannelHub", "Handed", "Subscriber"]

CHANNELS_CHANGED = "channels_changed"
"""Notification channel: ``<origin> <channel id> <channel id> ...``."""
PRESENCE_CHANGED = "channel_presence"
"""Notification channel: an owner's name (a presence event of theirs committed)."""

_PAYLOAD_BYTES = 7000  # PostgreSQL takes up to 8000 bytes per notification
_ACK_BATCH = 500  # acknowledgements per DELETE statement


@dataclass(frozen=True)
class Handed:
    """A message handed to a stream after its send committed."""

    offset: int
    data: bytes
    text: bool
    sent_at: datetime


class Subscriber(Protocol):
    """What the hub needs of a Listen stream."""

    stream_id: str
    channel_id: str

    def can_lease(self, epoch: str) -> bool:
        """Whether a message of ``epoch`` sent now may be leased to the stream (it is caught up
        and has room for it)."""
        ...

    def handoff(self, epoch: str, messages: Sequence[Handed]) -> None:
        """Messages leased to the stream, committed."""
        ...

    def more(self) -> None:
        """A message was stored unleased: read the channel's messages again."""
        ...

    def wake(self) -> None:
        """Something changed: look at the channel's row (and its messages) again."""
        ...


class ChannelHub:
    """This process's Listen and Presence streams (see the module's docstring)."""

    def __init__(self, notifier: Notifier | None = None) -> None:
        self._notifier = notifier
        self.origin = new_id()[:12]
        self._streams: dict[str, Subscriber] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._acks: dict[str, int] = {}
        self._acking: asyncio.Task[None] | None = None
        if notifier is not None:
            notifier.subscribe(CHANNELS_CHANGED, self._on_channels)
            notifier.subscribe(PRESENCE_CHANGED, self._on_presence)

    @property
    def listening(self) -> bool:
        """Whether every change committed anywhere reaches this process's streams."""
        return self._notifier is None or self._notifier.listening

    # --- Listen streams ---

    def register(self, stream: Subscriber) -> None:
        """``stream`` holds its channel in this process now (the newest one does)."""
        self._streams[stream.channel_id] = stream

    def unregister(self, stream: Subscriber) -> None:
        if self._streams.get(stream.channel_id) is stream:
            del self._streams[stream.channel_id]

    def stream_ids(self) -> dict[str, str]:
        """Channel id -> the id of the stream that holds it here, for every open stream."""
        return {channel_id: stream.stream_id for channel_id, stream in self._streams.items()}

    def lease_for(self, channel_id: str, epoch: str) -> str | None:
        """The stream a message of ``channel_id`` sent now should be leased to (and handed to
        after the commit), ``None`` to store it unleased."""
        stream = self._streams.get(channel_id)
        if stream is not None and stream.can_lease(epoch):
            return stream.stream_id
        return None

    def sent(
        self,
        work: UnitOfWork,
        sent: Sequence[tuple[str, str, str | None, Handed]],
    ) -> None:
        """Messages ``(channel id, epoch, lease, message)`` stored by ``work``: once it commits,
        hand the leased ones to their streams, wake those of the others, tell the other
        processes."""
        self._publish(work, [channel_id for channel_id, _, _, _ in sent])

        def deliver() -> None:
            for channel_id, epoch, lease, message in sent:
                stream = self._streams.get(channel_id)
                if stream is None:
                    continue
                if lease is not None and lease == stream.stream_id:
                    stream.handoff(epoch, (message,))
                else:
                    stream.more()

        work.after_commit(deliver)

    def wake(self, work: UnitOfWork, channel_ids: Iterable[str]) -> None:
        """Wake the streams of ``channel_ids``, in every process, once ``work`` commits."""
        ids = list(channel_ids)
        self._publish(work, ids)
        work.after_commit(lambda: self._wake(ids))

    # --- Presence streams ---

    def presence_changed(self, work: UnitOfWork, owner: str) -> None:
        """Wake the Presence streams of ``owner``, in every process, once ``work`` commits."""
        if self._notifier is not None:
            self._notifier.publish(work, PRESENCE_CHANGED, owner)
        else:
            work.after_commit(lambda: self._on_presence(owner))

    @contextlib.contextmanager
    def presence_waiter(self, owner: str) -> Iterator[asyncio.Event]:
        """An event set by every presence change of ``owner`` while the block runs."""
        waiter = asyncio.Event()
        waiters = self._watchers.setdefault(owner, set())
        waiters.add(waiter)
        try:
            yield waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._watchers.pop(owner, None)

    # --- acknowledgements ---

    def ack(self, sessions: async_sessionmaker[AsyncSession], channel_id: str, offset: int) -> None:
        """Remove the messages of ``channel_id`` up to ``offset``, soon, with whatever else was
        acknowledged meanwhile."""
        if self._acks.get(channel_id, 0) >= offset:
            return
        self._acks[channel_id] = offset
        if self._acking is None or self._acking.done():
            self._acking = asyncio.create_task(self._write_acks(sessions), name="aiosdk-acks")

    async def aclose(self) -> None:
        """Write the acknowledgements still pending."""
        task = self._acking
        if task is not None:
            with contextlib.suppress(Exception):
                await task

    async def _write_acks(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        await asyncio.sleep(0)  # let the acks of this turn of the loop join
        while self._acks:
            acks, self._acks = self._acks, {}
            work = UnitOfWork(sessions)
            try:
                await work.begin_write()
                items = list(acks.items())
                for start in range(0, len(items), _ACK_BATCH):
                    chunk = items[start : start + _ACK_BATCH]
                    await work.session.execute(
                        delete(ChannelMessage).where(
                            or_(
                                *(
                                    and_(
                                        ChannelMessage.channel_id == channel_id,
                                        ChannelMessage.offset <= offset,
                                    )
                                    for channel_id, offset in chunk
                                )
                            )
                        )
                    )
                await work.commit()
            except Exception:
                logger.exception("Writing %d channel acknowledgements failed", len(acks))
            finally:
                with anyio.CancelScope(shield=True):
                    await work.close()

    # --- notifications ---

    def _publish(self, work: UnitOfWork, channel_ids: Sequence[str]) -> None:
        notifier = self._notifier
        if notifier is None or not notifier.shared or not channel_ids:
            return
        payloads: list[str] = []
        current = [self.origin]
        size = len(self.origin)
        for channel_id in dict.fromkeys(channel_ids):
            if size + 1 + len(channel_id) > _PAYLOAD_BYTES:
                payloads.append(" ".join(current))
                current, size = [self.origin], len(self.origin)
            current.append(channel_id)
            size += 1 + len(channel_id)
        payloads.append(" ".join(current))
        notifier.publish_elsewhere(work, CHANNELS_CHANGED, payloads)

    def _on_channels(self, payload: str) -> None:
        if payload == MISSED:  # wake-ups may have been lost: every stream looks
            for stream in list(self._streams.values()):
                stream.wake()
            return
        origin, *channel_ids = payload.split(" ")
        if origin != self.origin:
            self._wake(channel_ids)

    def _wake(self, channel_ids: Iterable[str]) -> None:
        for channel_id in channel_ids:
            stream = self._streams.get(channel_id)
            if stream is not None:
                stream.wake()

    def _on_presence(self, owner: str) -> None:
        if owner == MISSED:
            for waiters in self._watchers.values():
                for waiter in waiters:
                    waiter.set()
            return
        for waiter in self._watchers.get(owner, ()):
            waiter.set()
