"""Migration 0005 (channels) on SQLite and PostgreSQL: a database of 0004, with data, upgrades
and serves channels; 0005 downgrades to 0004 and upgrades again."""

from __future__ import annotations

import httpx
import pytest
from grpclib.client import Channel
from sqlalchemy import inspect

from aiosdk import proto
from aiosdk.server import Server, ServerConfig
from aiosdk.server.storage.migrations import (
    downgrade_database,
    schema_differences,
    upgrade_database,
)

from .test_migrations import HEAD, DatabaseFactory, new_database

__all__ = ["new_database"]  # (the fixture, imported)

pytestmark = pytest.mark.anyio

TABLES = {"channels", "channel_messages", "channel_events"}


async def test_a_0004_database_upgrades_and_serves_channels(new_database: DatabaseFactory) -> None:
    async with new_database() as database:
        async with database.engine() as engine:
            assert await upgrade_database(engine, "0004") == (None, "0004")
        await database.execute(
            "INSERT INTO ticket_sessions (id, owner, ttl, created_at, expires_at)"
            " VALUES ('s1', 'admin', 60, '2026-06-01 00:00:00', '2026-06-01 00:01:00')"
        )
        async with database.engine() as engine:
            assert await upgrade_database(engine) == ("0004", HEAD)
            assert await schema_differences(engine) == []
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert tables >= TABLES | {"ticket_sessions"}
        config = ServerConfig(data_dir=database.data_dir, database_url=database.database_url)
        async with Server(config) as server:
            async with httpx.AsyncClient(
                base_url=f"{server.http_url}/api/v1",
                headers={"Authorization": f"Bearer {server.admin_token}"},
            ) as http:
                token = (await http.post("/tokens", json={"label": "t"})).json()["token"]
            grpc = Channel(server.grpc_host, server.grpc_port)
            try:
                stub = proto.ChannelServiceStub(grpc, metadata={"authorization": f"Bearer {token}"})
                made = await stub.create_channel(proto.CreateChannelRequest(client_id="c"))
                await stub.send_message(proto.SendMessageRequest(client_id="c", data=b"m"))
                got = await proto.ChannelServiceStub(grpc).get_messages(
                    proto.TokenRequest(token=made.token)
                )
                assert [m.data for m in got.messages] == [b"m"]
            finally:
                grpc.close()
        async with database.engine() as engine:
            assert await downgrade_database(engine, "0004") == (HEAD, "0004")
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert not tables & TABLES
            assert "ticket_sessions" in tables
            assert await upgrade_database(engine) == ("0004", HEAD)
            assert await schema_differences(engine) == []
