"""Regenerate the ``previous_main.*.sql`` fixtures: databases made by the last main before
migrations (commit 85a104b), for tests/server/test_migrations.py. Run by hand, never by the suite:

    rm -rf /tmp/prevmain && mkdir /tmp/prevmain && git archive 85a104b | tar -x -C /tmp/prevmain
    PYTHONPATH=/tmp/prevmain .venv/bin/python tests/server/data/make_previous_main.py

It starts that commit's own server once on SQLite and once on PostgreSQL (127.0.0.1:5432, trust
auth) with a known admin token, stops it, and dumps each database as SQL: the SQLite one with
``sqlite3 .dump``, the PostgreSQL one with ``pg_dump --inserts`` (schema and rows).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import anyio
import asyncpg  # type: ignore[import-untyped]

import aiosdk.server
from aiosdk.server import Server, ServerConfig

ADMIN_TOKEN = "aio_previous-main-admin-token"  # the fixtures' admin token (test data only)
HERE = Path(__file__).parent
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
DATABASE = "aiosdk_previous_main"


async def main() -> None:
    assert "prevmain" in aiosdk.server.__file__, "run with PYTHONPATH=/tmp/prevmain"
    with tempfile.TemporaryDirectory() as data:
        async with Server(ServerConfig(data_dir=Path(data), admin_token=ADMIN_TOKEN)):
            pass
        dump = await anyio.run_process(["sqlite3", str(Path(data) / "aiosdk.db"), ".dump"])
        (HERE / "previous_main.sqlite.sql").write_bytes(dump.stdout)

    admin = await asyncpg.connect(f"{POSTGRES}/test")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DATABASE}"
        with tempfile.TemporaryDirectory() as data:
            config = ServerConfig(data_dir=Path(data), database_url=url, admin_token=ADMIN_TOKEN)
            async with Server(config):
                pass
        dump = await anyio.run_process(
            ["pg_dump", "--no-owner", "--no-privileges", "--inserts", f"{POSTGRES}/{DATABASE}"]
        )
        (HERE / "previous_main.postgresql.sql").write_bytes(dump.stdout)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
