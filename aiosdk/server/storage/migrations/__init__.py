"""Schema migrations: Alembic, run from the server on an async engine (SQLite or PostgreSQL).

The revisions live in ``versions/`` beside this module and ship in the package; nothing reads an
``alembic.ini`` at run time (:func:`alembic_config` builds the configuration). The server upgrades
on start (:func:`upgrade_database`); ``aiosdk db upgrade`` does the same by hand.

* A database made before migrations existed (the tables there, no ``alembic_version``) is
  recognised and stamped with the revision its tables match (``0001``, the schema of the last
  release without migrations), then upgraded like any other.
* One migrator at a time: on PostgreSQL the upgrade holds a transaction-level advisory lock, so
  that servers starting together on one database wait for each other (the next finds nothing to
  do); on SQLite the upgrade runs in a ``BEGIN IMMEDIATE`` transaction, which takes the file's
  write lock at once. Either way the whole upgrade is one transaction: it applies entirely or
  not at all.
* Nothing blocks the event loop: the revision scripts are read in a worker thread (once per
  process), and the migrations run through ``run_sync`` on the async connection.

To write a new revision, change the models, then run
``python -m aiosdk.server.storage.migrations revision "what changed"``: it autogenerates
``versions/NNNN_what_changed.py`` against a scratch database at the current head. Read and edit
it (batch operations for SQLite are rendered), and extend tests/server/test_migrations.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ...logs import logger

__all__ = [
    "BASELINE",
    "MIGRATIONS_DIR",
    "SchemaError",
    "SchemaRevision",
    "alembic_config",
    "database_revision",
    "downgrade_database",
    "migration_options",
    "schema_differences",
    "upgrade_database",
]

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent
"""Where the revision scripts (``versions/``) and ``env.py`` are."""

BASELINE = "0001"
"""The revision of a database made before migrations existed: the tables of the last release
without them (``tokens`` and ``idempotency_keys``)."""

_ADVISORY_LOCK_ID = 0x6169_6F73_646B_6462  # "aiosdkdb": one PostgreSQL lock for migrations
_LEGACY_TABLES = frozenset({"tokens", "idempotency_keys"})

# Alembic's `context` and `op` are module-level proxies: one migration at a time per process.
# Acquired in a worker thread (never blocking the loop), released by whoever holds it.
_process_lock = threading.Lock()
_scripts_lock = threading.Lock()
_scripts: ScriptDirectory | None = None


class SchemaError(Exception):
    """The database holds tables that no revision describes: it is not an aiosdk database, or
    was changed by hand. Nothing was changed."""


@dataclass(frozen=True)
class SchemaRevision:
    """Where a database's schema stands."""

    current: str | None
    """Its revision; ``None`` when it has none (an empty database, or one made before
    migrations existed: see :attr:`unversioned`)."""
    head: str
    """The newest revision this version of the package knows."""
    unversioned: bool = False
    """The tables are there but no revision is recorded: made before migrations existed."""

    @property
    def up_to_date(self) -> bool:
        """Whether the database is at the newest revision."""
        return self.current == self.head

    def describe(self) -> str:
        """One line for the operator."""
        if self.unversioned:
            return (
                f"unversioned: made before migrations existed (revision {BASELINE});"
                f" `aiosdk db upgrade` upgrades it to {self.head} (head)"
            )
        if self.current is None:
            return f"empty: no schema yet; `aiosdk db upgrade` creates it ({self.head}, head)"
        if self.up_to_date:
            return f"{self.current} (head)"
        return f"{self.current} (behind head {self.head}: run `aiosdk db upgrade`)"


def alembic_config() -> Config:
    """The Alembic configuration of the server's migrations (no file needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def migration_options(connection: Connection) -> dict[str, Any]:
    """The options every migration context of the server gets (``env.py`` uses them too)."""
    from ... import schema

    return {
        "target_metadata": schema.Base.metadata,
        "render_as_batch": connection.dialect.name == "sqlite",
        "compare_type": True,
        "compare_server_default": False,
    }


async def upgrade_database(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade ``engine``'s database to ``revision`` (newest by default), stamping a database made
    before migrations first; returns its revision before (``None``: an empty database; the
    stamped one for a database made before migrations) and after."""
    return await _migrate(engine, lambda connection, script: _upgrade(connection, script, revision))


async def downgrade_database(engine: AsyncEngine, revision: str) -> tuple[str | None, str | None]:
    """Downgrade ``engine``'s database to ``revision`` (``"base"``: drop every table); returns
    its revision before and after. For tests and for undoing a failed deployment."""
    return await _migrate(
        engine, lambda connection, script: _downgrade(connection, script, revision)
    )


async def database_revision(engine: AsyncEngine) -> SchemaRevision:
    """Where ``engine``'s database stands (nothing is changed)."""
    script = await _load_scripts()
    async with engine.connect() as connection:
        return await connection.run_sync(_revision, script)


async def schema_differences(engine: AsyncEngine) -> list[Any]:
    """What Alembic's autogenerate finds between ``engine``'s database and the models (empty
    when the migrations and the models agree)."""
    from ... import schema

    async with engine.connect() as connection:
        return await connection.run_sync(_differences, schema.Base.metadata)


def _differences(connection: Connection, metadata: MetaData) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": False}
    )
    return list(compare_metadata(context, metadata))


async def _load_scripts() -> ScriptDirectory:
    """The revision scripts, read once per process in a worker thread (file system access)."""
    if _scripts is not None:
        return _scripts
    return await anyio.to_thread.run_sync(_read_scripts)


def _read_scripts() -> ScriptDirectory:
    global _scripts
    with _scripts_lock:
        if _scripts is None:
            script = ScriptDirectory.from_config(alembic_config())
            script.get_heads()  # reads and imports every revision now, not in the event loop
            _scripts = script
        return _scripts


async def _migrate(engine: AsyncEngine, work: Callable[[Connection, ScriptDirectory], T]) -> T:
    script = await _load_scripts()
    await anyio.to_thread.run_sync(_process_lock.acquire)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_in_transaction, script, work)
    finally:
        _process_lock.release()


def _in_transaction(
    connection: Connection,
    script: ScriptDirectory,
    work: Callable[[Connection, ScriptDirectory], T],
) -> T:
    if connection.dialect.name == "sqlite":
        return _sqlite_transaction(connection, script, work)
    with connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
        return work(connection, script)


def _sqlite_transaction(
    connection: Connection,
    script: ScriptDirectory,
    work: Callable[[Connection, ScriptDirectory], T],
) -> T:
    """SQLite's way to change a schema: foreign keys off (outside any transaction; copying a
    table in batch mode drops the old one, which would otherwise run its ON DELETE actions),
    one transaction holding the write lock from its start, a foreign key check before commit."""
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
    try:
        with connection.begin():
            # The driver begins lazily (before the first write): take the write lock now, so
            # that a second migrator waits here and then finds the work done.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            result = work(connection, script)
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise SchemaError(
                    f"the migration would break {len(broken)} foreign key reference(s); rolled back"
                )
        return result
    finally:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


def _current(connection: Connection) -> str | None:
    heads = MigrationContext.configure(connection).get_current_heads()
    if len(heads) > 1:
        raise SchemaError(f"the database has several schema revisions: {', '.join(heads)}")
    return heads[0] if heads else None


def _unversioned_revision(connection: Connection) -> str | None:
    """The revision the tables of a database without one match: ``None`` for no tables."""
    inspector = inspect(connection)
    tables = set(inspector.get_table_names()) - {"alembic_version"}
    if not tables:
        return None
    if not tables >= _LEGACY_TABLES:
        raise SchemaError(
            "the database has tables but no aiosdk schema revision, and they are not those of an"
            f" earlier aiosdk ({', '.join(sorted(tables))}); use an empty database"
        )
    if "buckets" in tables:
        return "0006"  # made from the models (create_all) while 0006 was the newest
    if "channels" in tables:
        return "0005"  # made from the models (create_all) while 0005 was the newest
    if "ticket_sessions" in tables:
        return "0004"  # made from the models (create_all) while 0004 was the newest
    if "catalog_nodes" in tables:
        return "0003"  # made from the models (create_all) while 0003 was the newest
    columns = {column["name"] for column in inspector.get_columns("tokens")}
    if "session_id" in columns and "login_sessions" in tables:
        return "0002"  # made from the models (create_all) while 0002 was the newest
    return BASELINE


def _revision(connection: Connection, script: ScriptDirectory) -> SchemaRevision:
    head = _head(script)
    current = _current(connection)
    if current is None and _unversioned_revision(connection) is not None:
        return SchemaRevision(None, head, unversioned=True)
    return SchemaRevision(current, head)


def _head(script: ScriptDirectory) -> str:
    heads = script.get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the migrations have several heads: {', '.join(heads)}")
    return heads[0]


def _upgrade(
    connection: Connection, script: ScriptDirectory, revision: str
) -> tuple[str | None, str]:
    before = _current(connection)
    if before is None:
        before = _unversioned_revision(connection)
        if before is not None:
            logger.info("Stamping a database made before migrations existed as %s", before)
            MigrationContext.configure(connection).stamp(script, before)
    _run(connection, script, revision, lambda current: script._upgrade_revs(revision, current))
    after = _current(connection)
    assert after is not None
    return before, after


def _downgrade(
    connection: Connection, script: ScriptDirectory, revision: str
) -> tuple[str | None, str | None]:
    before = _current(connection)
    _run(connection, script, revision, lambda current: script._downgrade_revs(revision, current))
    return before, _current(connection)


def _run(
    connection: Connection,
    script: ScriptDirectory,
    destination: str,
    steps: Callable[[Any], Sequence[Any]],
) -> None:
    with EnvironmentContext(
        alembic_config(),
        script,
        fn=lambda current, _context: steps(current),
        destination_rev=destination,
    ) as environment:
        environment.configure(connection=connection, **migration_options(connection))
        with environment.begin_transaction():  # the caller's: this does not commit
            environment.run_migrations()
