"""Operator tasks run beside (or instead of) the server, on its data: ``aiosdk admin-token``,
``aiosdk db upgrade`` and ``aiosdk db current``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from .auth import mint_admin_token
from .authenticator import Authenticator
from .notify import Notifier
from .storage import create_engine, default_database_url, session_factory
from .storage.migrations import (
    SchemaRevision,
    database_revision,
    upgrade_database,
)
from .unit_of_work import UnitOfWork

__all__ = ["database_revision_in", "mint_admin_token_in", "upgrade_database_in"]


async def mint_admin_token_in(
    data_dir: Path, database_url: str | None, revoke_others: bool
) -> tuple[str, int]:
    """Mint an admin token in the server data at ``data_dir`` (or ``database_url``); returns
    its plaintext and how many other admin tokens were revoked. Servers on the same PostgreSQL
    database are told of the revocations at once. The schema is upgraded first."""
    async with _engine(data_dir, database_url, "admin-token") as engine:
        await upgrade_database(engine)
        sessions = session_factory(engine)
        authenticator = Authenticator(sessions, Notifier(engine))
        work = UnitOfWork(sessions)
        try:
            secret, revoked = await mint_admin_token(work, revoke_others=revoke_others)
            for token_id in revoked:
                authenticator.revoked(work, token_id)
            await work.commit()
        finally:
            await work.close()
    return secret, len(revoked)


async def upgrade_database_in(data_dir: Path, database_url: str | None) -> tuple[str | None, str]:
    """Upgrade the schema of the database at ``database_url`` (or the SQLite database in
    ``data_dir``, created with the directory if missing); its revision before and after."""
    if database_url is None:
        await anyio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    async with _engine(data_dir, database_url, None) as engine:
        return await upgrade_database(engine)


async def database_revision_in(data_dir: Path, database_url: str | None) -> SchemaRevision:
    """Where the schema of the database at ``database_url`` (or in ``data_dir``) stands."""
    async with _engine(data_dir, database_url, "db current") as engine:
        return await database_revision(engine)


@asynccontextmanager
async def _engine(
    data_dir: Path, database_url: str | None, must_exist_for: str | None
) -> AsyncIterator[AsyncEngine]:
    """An engine on the server's database; with ``must_exist_for`` (a command's name), a
    missing SQLite database is an error that names it rather than a new empty one."""
    if database_url is None:
        database = data_dir / "aiosdk.db"
        if must_exist_for is not None and not await anyio.Path(database).exists():
            raise SystemExit(
                f"aiosdk {must_exist_for}: no server data at {database}; start the server once"
                f" with --data {data_dir}, or name its database with --database"
            )
        database_url = default_database_url(data_dir)
    # Dialects may touch the file system (SQLite resolves its path): not in the loop.
    engine = await anyio.to_thread.run_sync(create_engine, database_url)
    try:
        yield engine
    finally:
        await engine.dispose()
