"""Migration 0006 (object store) on SQLite and PostgreSQL: a database of 0005, with data,
upgrades and serves objects; 0006 downgrades to 0005 and upgrades again."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import inspect

from aiosdk.server import Server, ServerConfig
from aiosdk.server.storage.migrations import (
    downgrade_database,
    schema_differences,
    upgrade_database,
)

from .test_migrations import DatabaseFactory, new_database

__all__ = ["new_database"]  # (the fixture, imported)

pytestmark = pytest.mark.anyio

TABLES = {"buckets", "objects"}


async def test_a_0005_database_upgrades_and_serves_objects(new_database: DatabaseFactory) -> None:
    async with new_database() as database:
        async with database.engine() as engine:
            assert await upgrade_database(engine, "0005") == (None, "0005")
        await database.execute(
            "INSERT INTO ticket_sessions (id, owner, ttl, created_at, expires_at)"
            " VALUES ('s1', 'admin', 60, '2026-06-01 00:00:00', '2026-06-01 00:01:00')"
        )
        async with database.engine() as engine:
            assert await upgrade_database(engine) == ("0005", "0006")
            assert await schema_differences(engine) == []
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert tables >= TABLES | {"ticket_sessions", "channels"}
        config = ServerConfig(data_dir=database.data_dir, database_url=database.database_url)
        async with (
            Server(config) as server,
            httpx.AsyncClient(
                base_url=f"{server.http_url}/api/v1",
                headers={"Authorization": f"Bearer {server.admin_token}"},
            ) as http,
        ):
            made = await http.post("/buckets/admin", json={"name": "b"})
            assert made.status_code == 201, made.text
            put = await http.put("/buckets/admin/b/objects/k", content=b"bytes")
            assert put.status_code == 201, put.text
            assert (await http.get("/buckets/admin/b/objects/k")).content == b"bytes"
        async with database.engine() as engine:
            assert await downgrade_database(engine, "0005") == ("0006", "0005")
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert not tables & TABLES
            assert "ticket_sessions" in tables
            assert await upgrade_database(engine) == ("0005", "0006")
            assert await schema_differences(engine) == []
