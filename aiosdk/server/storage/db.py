"""The database engine: creation, SQLite tuning, the schema (through migrations)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = ["create_engine", "default_database_url", "session_factory"]

_SQLITE_BUSY_TIMEOUT_MS = 10_000


def default_database_url(data_dir: Path) -> str:
    """The SQLite database inside ``data_dir``."""
    return URL.create("sqlite+aiosqlite", database=str(data_dir / "aiosdk.db")).render_as_string()


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite connections get WAL, a busy timeout and foreign keys."""
    engine = create_async_engine(make_url(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _create_private(engine.url.database)
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
    return engine


def _create_private(database: str | None) -> None:
    """Create a new SQLite file readable by its owner only (it holds password hashes and the
    hashes of tokens); SQLite gives its WAL and shared-memory files the same mode. An existing
    file is left as it is."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _configure_sqlite(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine`` whose objects stay usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
