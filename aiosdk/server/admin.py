"""Operator tasks run beside (or instead of) the server, on its data: ``aiosdk admin-token``."""

from __future__ import annotations

from pathlib import Path

import anyio

from .auth import mint_admin_token
from .authenticator import Authenticator
from .notify import Notifier
from .storage import create_engine, create_tables, default_database_url, session_factory
from .unit_of_work import UnitOfWork

__all__ = ["mint_admin_token_in"]


async def mint_admin_token_in(
    data_dir: Path, database_url: str | None, revoke_others: bool
) -> tuple[str, int]:
    """Mint an admin token in the server data at ``data_dir`` (or ``database_url``); returns
    its plaintext and how many other admin tokens were revoked. Servers on the same PostgreSQL
    database are told of the revocations at once."""
    if database_url is None:
        database = data_dir / "aiosdk.db"
        if not await anyio.Path(database).exists():
            raise SystemExit(
                f"aiosdk admin-token: no server data at {database}; start the server once with"
                f" --data {data_dir}, or name its database with --database"
            )
        database_url = default_database_url(data_dir)
    engine = await anyio.to_thread.run_sync(create_engine, database_url)
    try:
        await create_tables(engine)
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
    finally:
        await engine.dispose()
    return secret, len(revoked)
