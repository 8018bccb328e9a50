"""Schema migrations on SQLite and PostgreSQL: from the previous main's database, the models'
agreement with the revisions, downgrades, one migrator at a time, and ``aiosdk db``.

``data/previous_main.*.sql`` are databases made by the last main without migrations (commit
85a104b: its own server, started once), dumped as SQL; ``data/make_previous_main.py`` remakes
them.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from aiosdk.server import Server, ServerConfig
from aiosdk.server.auth import hash_token
from aiosdk.server.storage import create_engine, default_database_url
from aiosdk.server.storage.migrations import (
    BASELINE,
    SchemaError,
    database_revision,
    downgrade_database,
    schema_differences,
    upgrade_database,
)

from .conftest import POSTGRES_URL_ENV, fresh_postgres_database

pytestmark = pytest.mark.anyio

DATA = Path(__file__).parent / "data"
PREVIOUS_ADMIN_TOKEN = "aio_previous-main-admin-token"  # see data/make_previous_main.py
HEAD = "0006"
GUARD_SECONDS = 60  # a hang guard, not a timing assertion


@dataclass
class Database:
    """A fresh, empty database: SQLite in ``data_dir``, or a PostgreSQL database at ``url``."""

    backend: str
    data_dir: Path
    url: str

    @property
    def database_url(self) -> str | None:
        """What ServerConfig.database_url gets (``None``: SQLite in the data directory)."""
        return None if self.backend == "sqlite" else self.url

    def cli_flags(self) -> list[str]:
        """How ``aiosdk db`` names this database."""
        return (
            ["--data", str(self.data_dir)] if self.backend == "sqlite" else ["--database", self.url]
        )

    @asynccontextmanager
    async def engine(self) -> AsyncIterator[AsyncEngine]:
        engine = await anyio.to_thread.run_sync(create_engine, self.url)
        try:
            yield engine
        finally:
            await engine.dispose()

    async def execute(self, *statements: str) -> None:
        async with self.engine() as engine, engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))

    async def load_previous_main(self) -> None:
        """Make this the database the previous main made (its dump, replayed)."""
        dump = await anyio.Path(DATA / f"previous_main.{self.backend}.sql").read_text()
        if self.backend == "sqlite":
            await anyio.to_thread.run_sync(_sqlite_script, self.data_dir / "aiosdk.db", dump)
            return
        # pg_dump's psql meta-commands (\restrict ...) are not SQL.
        script = "\n".join(line for line in dump.splitlines() if not line.startswith("\\"))
        dsn = make_url(self.url).set(drivername="postgresql").render_as_string(False)
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(script)
        finally:
            await connection.close()


def _sqlite_script(path: Path, script: str) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.executescript(script)
    finally:
        connection.close()


DatabaseFactory = Callable[[], AbstractAsyncContextManager[Database]]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseFactory:
    """Makes fresh, empty databases of one backend (dropped after)."""
    backend: str = request.param
    base_url = os.environ.get(POSTGRES_URL_ENV)
    if backend == "postgresql" and not base_url:
        pytest.skip(f"PostgreSQL cases are off: {POSTGRES_URL_ENV} is not set or empty")

    @asynccontextmanager
    async def make() -> AsyncIterator[Database]:
        data_dir = tmp_path / uuid.uuid4().hex[:8]
        await anyio.Path(data_dir).mkdir()
        if backend == "sqlite":
            yield Database(backend, data_dir, default_database_url(data_dir))
            return
        assert base_url is not None
        async with fresh_postgres_database(base_url) as url:
            yield Database(backend, data_dir, url)

    return make


async def insert_previous_main_token(database: Database, secret: str) -> str:
    """A token as the previous main's POST /tokens stored it (its columns, no scope); its id."""
    token_id = uuid.uuid4().hex
    await database.execute(
        "INSERT INTO tokens (id, label, secret_hash, owner, is_admin, created_at)"
        f" VALUES ('{token_id}', 'ci', '{hash_token(secret)}', 'admin', false,"
        " '2026-01-01 00:00:00')"
    )
    return token_id


async def authenticates(server: Server, token: str) -> bool:
    async with httpx.AsyncClient(base_url=f"{server.http_url}/api/v1") as http:
        response = await http.get("/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


async def test_a_database_of_the_previous_main_upgrades_keeping_its_tokens(
    new_database: DatabaseFactory,
) -> None:
    async with new_database() as database:
        await database.load_previous_main()
        secret = f"aio_{uuid.uuid4().hex}"
        token_id = await insert_previous_main_token(database, secret)
        async with database.engine() as engine:
            found = await database_revision(engine)
        assert found.unversioned
        assert found.current is None

        config = ServerConfig(data_dir=database.data_dir, database_url=database.database_url)
        async with Server(config) as server:  # upgrades on start
            assert await authenticates(server, PREVIOUS_ADMIN_TOKEN)  # the previous main's own
            assert await authenticates(server, secret)  # the one inserted
            assert not await authenticates(server, f"aio_{uuid.uuid4().hex}")
            async with httpx.AsyncClient(base_url=f"{server.http_url}/api/v1") as http:
                listed = await http.get(
                    "/tokens", headers={"Authorization": f"Bearer {PREVIOUS_ADMIN_TOKEN}"}
                )
            assert token_id in {item["id"] for item in listed.json()["items"]}
            assert not server.admin_token_generated  # the previous admin token counts

        async with database.engine() as engine:
            assert (await database_revision(engine)).current == HEAD
            assert await schema_differences(engine) == []
            # Back to the previous main's schema: the tokens are still there.
            assert await downgrade_database(engine, BASELINE) == (HEAD, BASELINE)
            async with engine.connect() as connection:
                ids = set((await connection.execute(text("SELECT id FROM tokens"))).scalars())
                tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert token_id in ids
            assert len(ids) == 2
            assert tables == {"tokens", "idempotency_keys", "alembic_version"}
            assert await upgrade_database(engine) == (BASELINE, HEAD)
            assert await schema_differences(engine) == []


async def test_a_downgrade_revokes_what_the_older_schema_would_widen(
    new_database: DatabaseFactory,
) -> None:
    async with new_database() as database:
        config = ServerConfig(data_dir=database.data_dir, database_url=database.database_url)
        async with Server(config) as server:
            made = {}
            async with httpx.AsyncClient(
                base_url=f"{server.http_url}/api/v1",
                headers={"Authorization": f"Bearer {server.admin_token}"},
            ) as http:
                for label, scope in (("full", None), ("reader", "read")):
                    response = await http.post("/tokens", json={"label": label, "scope": scope})
                    assert response.status_code == 201, response.text
                    made[label] = response.json()["id"]
        async with database.engine() as engine:
            assert await downgrade_database(engine, BASELINE) == (HEAD, BASELINE)
            async with engine.connect() as connection:
                revoked = dict(
                    (await connection.execute(text("SELECT id, revoked_at FROM tokens"))).all()
                )
        assert revoked[made["reader"]] is not None  # it would have become a full token
        assert revoked[made["full"]] is None


def _describe(connection: Connection) -> dict[str, Any]:
    """Every table as the database reflects it (for comparing two databases)."""
    inspector = inspect(connection)
    tables = sorted(set(inspector.get_table_names()) - {"alembic_version"})
    return {
        table: {
            "columns": [
                (c["name"], repr(c["type"]), c["nullable"], c.get("default"))
                for c in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (str(u["name"]), tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "foreign_keys": inspector.get_foreign_keys(table),
        }
        for table in tables
    }


async def test_revision_0001_is_the_previous_main_schema(new_database: DatabaseFactory) -> None:
    async with new_database() as previous, new_database() as migrated:
        await previous.load_previous_main()
        async with previous.engine() as engine, engine.connect() as connection:
            expected = await connection.run_sync(_describe)
        async with migrated.engine() as engine:
            assert await upgrade_database(engine, BASELINE) == (None, BASELINE)
            async with engine.connect() as connection:
                actual = await connection.run_sync(_describe)
    assert set(expected) == {"tokens", "idempotency_keys"}
    assert actual == expected


async def test_the_migrations_and_the_models_agree(new_database: DatabaseFactory) -> None:
    async with new_database() as database, database.engine() as engine:
        assert await upgrade_database(engine) == (None, HEAD)
        assert await schema_differences(engine) == []
        assert await upgrade_database(engine) == (HEAD, HEAD)  # nothing left to do


async def test_downgrade_to_base_and_upgrade_again(new_database: DatabaseFactory) -> None:
    async with new_database() as database, database.engine() as engine:
        await upgrade_database(engine)
        assert await downgrade_database(engine, "base") == (HEAD, None)
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables <= {"alembic_version"}
        revision = await database_revision(engine)
        assert (revision.current, revision.unversioned) == (None, False)
        assert await upgrade_database(engine) == (None, HEAD)
        assert await schema_differences(engine) == []


async def test_foreign_tables_are_left_alone(new_database: DatabaseFactory) -> None:
    async with new_database() as database:
        await database.execute("CREATE TABLE other_app (id INTEGER PRIMARY KEY)")
        async with database.engine() as engine:
            with pytest.raises(SchemaError, match="other_app"):
                await upgrade_database(engine)
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables == {"other_app"}  # rolled back whole


async def aiosdk(*argv: str) -> tuple[int, str]:
    """Run the command line; its exit status and output (stdout and stderr)."""
    process = await anyio.run_process([sys.executable, "-m", "aiosdk.cli", *argv], check=False)
    return process.returncode or 0, (process.stdout + process.stderr).decode()


async def test_db_upgrade_and_db_current(new_database: DatabaseFactory) -> None:
    async with new_database() as database:
        flags = database.cli_flags()
        await database.load_previous_main()
        code, output = await aiosdk("db", "current", *flags)
        assert code == 0, output
        assert output.startswith("unversioned: made before migrations existed (revision 0001)")
        code, output = await aiosdk("db", "upgrade", *flags)
        assert code == 0, output
        assert output.strip() == f"Upgraded the database from {BASELINE} to {HEAD} (head)."
        code, output = await aiosdk("db", "current", *flags)
        assert (code, output.strip()) == (0, f"{HEAD} (head)")
        code, output = await aiosdk("db", "upgrade", *flags)
        assert (code, output.strip()) == (0, f"The database is up to date: revision {HEAD} (head).")

    async with new_database() as database:
        code, output = await aiosdk("db", "current", *database.cli_flags())
        if database.backend == "sqlite":  # no database file: said, not created
            assert code == 1
            assert "no server data" in output
            assert not await anyio.Path(database.data_dir / "aiosdk.db").exists()
        else:
            assert (code, output.split(":")[0]) == (0, "empty")
        await database.execute("CREATE TABLE other_app (id INTEGER PRIMARY KEY)")
        code, output = await aiosdk("db", "upgrade", *database.cli_flags())
        assert code == 1
        assert "not those of an earlier aiosdk" in output
        assert "Traceback" not in output


# Imports everything, then waits for the go file: the upgrades start within a moment.
AT_THE_SIGNAL = (
    "import os, sys, time\n"
    "from aiosdk.cli import main\n"
    "import aiosdk.server.admin, aiosdk.server.storage.migrations as m\n"
    "m._read_scripts()\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    time.sleep(0.001)\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


async def test_concurrent_upgrades_migrate_once(
    new_database: DatabaseFactory, tmp_path: Path
) -> None:
    """Servers (or deployments) starting together on one database: one migrates, the others
    wait for it and find nothing to do."""
    async with new_database() as database:
        await database.load_previous_main()
        go = tmp_path / f"go-{uuid.uuid4().hex}"
        command = [sys.executable, "-c", AT_THE_SIGNAL, str(go), "db", "upgrade"]
        processes = [await anyio.open_process([*command, *database.cli_flags()]) for _ in range(4)]
        outputs: list[tuple[int, str]] = []
        try:
            await anyio.sleep(1)  # let them import (a head start, not an assertion)
            await anyio.Path(go).touch()
            with anyio.fail_after(GUARD_SECONDS):
                for process in processes:
                    assert process.stdout is not None
                    assert process.stderr is not None
                    code = await process.wait()
                    out = await process.stdout.receive() if code == 0 else b""
                    err = b""
                    async for chunk in process.stderr:
                        err += chunk
                    outputs.append((code, (out + err).decode()))
        finally:
            for process in processes:
                await process.aclose()
        assert [code for code, _ in outputs] == [0, 0, 0, 0], outputs
        upgraded = [output for _, output in outputs if output.startswith("Upgraded")]
        assert len(upgraded) == 1, outputs
        async with database.engine() as engine:
            assert await schema_differences(engine) == []


@pytest.mark.postgres
async def test_a_postgresql_upgrade_waits_for_the_migration_lock(tmp_path: Path) -> None:
    """The advisory lock, seen from PostgreSQL: while someone holds it, the upgrade waits."""
    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        pytest.skip(f"PostgreSQL cases are off: {POSTGRES_URL_ENV} is not set or empty")
    from aiosdk.server.storage import migrations

    async with fresh_postgres_database(base_url) as url:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(False)
        holder = await asyncpg.connect(dsn)
        engine = await anyio.to_thread.run_sync(create_engine, url)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", migrations._ADVISORY_LOCK_ID)
            result: list[tuple[str | None, str]] = []
            with anyio.fail_after(GUARD_SECONDS):
                async with anyio.create_task_group() as group:

                    async def upgrade() -> None:
                        result.append(await upgrade_database(engine))

                    group.start_soon(upgrade)
                    waiting = 0
                    while not waiting:  # the upgrade's connection queues for the lock
                        waiting = await holder.fetchval(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                            " AND NOT granted"
                        )
                        await anyio.sleep(0.02)
                    assert not result
                    await holder.execute(
                        "SELECT pg_advisory_unlock($1)", migrations._ADVISORY_LOCK_ID
                    )
            assert result == [(None, HEAD)]
        finally:
            await engine.dispose()
            await holder.close()


async def test_a_database_made_from_the_models_is_stamped_not_migrated(
    new_database: DatabaseFactory,
) -> None:
    """Tables of the newest schema without a revision (development trees made before their
    migration existed): recognised as the newest revision, nothing applied twice."""
    async with new_database() as database, database.engine() as engine:
        await upgrade_database(engine)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE alembic_version"))
        assert (await database_revision(engine)).unversioned
        assert await upgrade_database(engine) == (HEAD, HEAD)
        assert await schema_differences(engine) == []


async def test_0003_gives_every_existing_namespace_a_root_node(
    new_database: DatabaseFactory,
) -> None:
    """Namespaces made before the catalog (users and organizations of 0002) get their root
    node, as new ones do; the server then serves them."""
    async with new_database() as database:
        async with database.engine() as engine:
            await upgrade_database(engine, "0002")
        await database.execute(
            "INSERT INTO namespaces (name, kind, created_at)"
            " VALUES ('olduser', 'user', '2026-06-01 00:00:00'),"
            " ('oldorg', 'organization', '2026-06-01 00:00:00')",
            "INSERT INTO users (id, username, created_at)"
            " VALUES ('u1', 'olduser', '2026-06-01 00:00:00')",
            "INSERT INTO organizations (id, name, created_at)"
            " VALUES ('o1', 'oldorg', '2026-06-01 00:00:00')",
            "INSERT INTO memberships (organization_id, user_id, role, created_at)"
            " VALUES ('o1', 'u1', 'owner', '2026-06-01 00:00:00')",
        )
        async with database.engine() as engine:
            assert await upgrade_database(engine) == ("0002", HEAD)
            async with engine.connect() as connection:
                rows = (
                    await connection.execute(
                        text(
                            "SELECT path, key, namespace, depth, parent_id, structure_family,"
                            " revision FROM catalog_nodes ORDER BY path"
                        )
                    )
                ).all()
            assert [tuple(row) for row in rows] == [
                ("oldorg", "oldorg", "oldorg", 1, None, "container", 1),
                ("olduser", "olduser", "olduser", 1, None, "container", 1),
            ]
            assert await schema_differences(engine) == []
        config = ServerConfig(data_dir=database.data_dir, database_url=database.database_url)
        async with Server(config) as server:
            headers = {"Authorization": f"Bearer {server.admin_token}"}
            async with httpx.AsyncClient(
                base_url=f"{server.http_url}/api/v1", headers=headers
            ) as http:
                token = await http.post("/tokens", json={"label": "t", "owner": "olduser"})
                assert token.status_code == 201, token.text
                mine = {"Authorization": f"Bearer {token.json()['token']}"}
                made = await http.post("/catalog/children/oldorg", json={"key": "x"}, headers=mine)
                assert made.status_code == 201, made.text
                root = await http.get("/catalog/nodes/olduser", headers=mine)
                assert root.status_code == 200, root.text
                assert root.json()["metadata"] == {}
                roots = await http.get("/catalog/children", headers=mine)
                assert [item["path"] for item in roots.json()["items"]] == ["oldorg", "olduser"]
        async with database.engine() as engine:
            assert await downgrade_database(engine, "0002") == (HEAD, "0002")
            assert await upgrade_database(engine) == ("0002", HEAD)
