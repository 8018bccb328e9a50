"""Alembic's entry point for its own commands (``alembic revision --autogenerate`` and the like,
via ``python -m aiosdk.server.storage.migrations``); the server itself runs migrations without
this file (see :mod:`aiosdk.server.storage.migrations`).

Takes a connection from ``config.attributes["connection"]`` when given, else the async URL in
``sqlalchemy.url``, or renders SQL in offline mode.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from aiosdk.server import schema
from aiosdk.server.storage.db import create_engine
from aiosdk.server.storage.migrations import migration_options

config = context.config


def run_on(connection: Connection) -> None:
    """Run the command's migrations on ``connection``."""
    context.configure(connection=connection, **migration_options(connection))
    with context.begin_transaction():
        context.run_migrations()


async def run_online(url: str) -> None:
    """Run on a new async engine for ``url``."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_on)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=schema.Base.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif (shared := config.attributes.get("connection")) is not None:
    run_on(shared)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url (an async URL) or pass a connection")
    asyncio.run(run_online(url))
