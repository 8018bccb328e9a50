"""Wake-ups across server processes: a change committed in one reaches the others' caches.

A :class:`Notifier` carries short messages on named channels. Publishing happens inside a
request's unit of work, so a message goes out only if the change it announces commits. This
process hears its own messages at once, after the commit and before the answer is sent; other
processes sharing a PostgreSQL database hear them through ``LISTEN``/``NOTIFY``, which PostgreSQL
delivers on commit. With SQLite (one process per database) notifications stay in the process.

A subscriber also learns when notifications may have been missed (the listening connection
dropped): it must then forget whatever it cached, because it cannot tell what changed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .logs import logger
from .unit_of_work import UnitOfWork

__all__ = ["Notifier"]


Listener = Callable[[str], None]
"""Called with each message's payload; with ``""`` when messages may have been lost."""

MISSED = ""
"""The payload a listener gets when notifications may have been missed."""

_RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)


class Notifier:
    """Channels of messages between the processes serving one database.

    ``listening`` is True while every message published anywhere reaches this process; a cache
    that relies on messages must not serve from memory while it is False.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._shared = engine.dialect.name == "postgresql"
        self._listeners: dict[str, list[Listener]] = {}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.listening = not self._shared

    def subscribe(self, channel: str, listener: Listener) -> None:
        """Call ``listener`` with the payload of every message on ``channel`` (subscribe
        before :meth:`start`)."""
        if self._task is not None:
            raise RuntimeError("subscribe before the notifier starts listening")
        self._listeners.setdefault(channel, []).append(listener)

    def publish(self, uow: UnitOfWork, channel: str, payload: str) -> None:
        """Send ``payload`` on ``channel`` when ``uow`` commits (never if it does not)."""
        if not payload:
            raise ValueError("a notification needs a payload")
        if self._shared:
            uow.before_commit(
                lambda: uow.session.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": _pg_channel(channel), "payload": payload},
                )
            )
        uow.after_commit(lambda: self._deliver(channel, payload))

    @property
    def shared(self) -> bool:
        """Whether messages reach other processes (PostgreSQL)."""
        return self._shared

    def publish_elsewhere(self, uow: UnitOfWork, channel: str, payloads: Sequence[str]) -> None:
        """Send every one of ``payloads`` on ``channel`` to the processes listening on the
        database when ``uow`` commits, in one statement (PostgreSQL only; nothing with SQLite).
        This process's listeners hear them too, later, through ``LISTEN``: a payload that
        names its origin lets them skip their own."""
        if not self._shared or not payloads:
            return
        if not all(payloads):
            raise ValueError("a notification needs a payload")
        statement = text("SELECT pg_notify(:channel, p) FROM unnest(:payloads) AS p").bindparams(
            bindparam("payloads", type_=postgresql.ARRAY(Text))
        )
        values = {"channel": _pg_channel(channel), "payloads": list(payloads)}
        uow.before_commit(lambda: uow.session.execute(statement, values))

    async def start(self) -> None:
        """Start listening for other processes' messages (PostgreSQL only)."""
        if self._shared and self._task is None:
            self._task = asyncio.create_task(self._listen_forever(), name="aiosdk-notify")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._connected.wait()), 5)

    async def aclose(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _deliver(self, channel: str, payload: str) -> None:
        for listener in self._listeners.get(channel, ()):
            listener(payload)

    def _missed(self) -> None:
        self.listening = False
        self._connected.clear()
        for listeners in self._listeners.values():
            for listener in listeners:
                listener(MISSED)

    async def _listen_forever(self) -> None:
        attempt = 0
        while True:
            try:
                async with self._engine.connect() as connection:
                    driver, lost = await self._listen(connection)
                    attempt = 0
                    await _until_lost(driver, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Listening for notifications failed: %s", exc)
            self._missed()
            await asyncio.sleep(_RECONNECT_DELAYS[min(attempt, len(_RECONNECT_DELAYS) - 1)])
            attempt += 1

    async def _listen(self, connection: AsyncConnection) -> tuple[Any, asyncio.Event]:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection  # asyncpg's connection, used directly from now on
        lost = asyncio.Event()

        def on_message(_conn: object, _pid: int, pg_channel: str, payload: str) -> None:
            self._deliver(pg_channel.removeprefix(_PG_PREFIX), payload)

        for channel in self._listeners:
            await driver.add_listener(_pg_channel(channel), on_message)
        driver.add_termination_listener(lambda _conn: lost.set())
        # Whatever was published while nobody listened is unknown: start from a clean slate.
        self._missed()
        self.listening = True
        self._connected.set()
        return driver, lost


async def _until_lost(driver: Any, lost: asyncio.Event) -> None:
    # A connection can also die without a word (no FIN): ask it something now and then. On the
    # driver's connection itself, outside any transaction: PostgreSQL holds notifications back
    # from a session that is inside one (SQLAlchemy's execute() would open one and keep it).
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(lost.wait(), _HEALTH_CHECK_INTERVAL)
            return
        await asyncio.wait_for(driver.execute("SELECT 1"), _HEALTH_CHECK_TIMEOUT)


_HEALTH_CHECK_INTERVAL = 10.0
_HEALTH_CHECK_TIMEOUT = 5.0
_PG_PREFIX = "aiosdk_"


def _pg_channel(channel: str) -> str:
    return _PG_PREFIX + channel
