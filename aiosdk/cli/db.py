"""``aiosdk db upgrade`` and ``aiosdk db current``: the database schema, by hand.

``aiosdk serve`` upgrades the schema on start; these are for deployments that migrate as a
separate step (before starting new server versions), and to see where a database stands.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import fail, server_extra_missing

if TYPE_CHECKING:
    from ._common import Subparsers

__all__ = ["register"]


def register(commands: Subparsers) -> None:
    """Add ``db`` (``db upgrade``, ``db current``) to ``commands``."""
    db = commands.add_parser(
        "db",
        help="the database schema: upgrade it, or show its revision",
        description="Manage the server's database schema (Alembic migrations shipped with the"
        " package). `aiosdk serve` upgrades on start; these commands do it by hand.",
    )
    actions = db.add_subparsers(title="actions", required=True, metavar="ACTION")
    upgrade = actions.add_parser(
        "upgrade",
        help="upgrade the schema to the newest revision",
        description="Upgrade the database to the newest schema revision. A database made before"
        " migrations existed is recognised and upgraded without losing data. Safe while servers"
        " run on PostgreSQL (one migrates at a time).",
    )
    _database_arguments(upgrade)
    upgrade.set_defaults(run=_upgrade)
    current = actions.add_parser(
        "current",
        help="show the schema revision of the database",
        description="Show the database's schema revision and whether it is the newest.",
    )
    _database_arguments(current)
    current.set_defaults(run=_current)


def _database_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--data",
        type=Path,
        default=Path("aiosdk-data"),
        help="data directory of a server on SQLite (default: ./aiosdk-data)",
    )
    where.add_argument("--database", metavar="URL", help="SQLAlchemy async URL of the database")


def _upgrade(args: argparse.Namespace) -> int:
    try:
        from sqlalchemy.exc import SQLAlchemyError

        from ..server.admin import upgrade_database_in
        from ..server.storage.migrations import SchemaError
    except ImportError as exc:
        return server_extra_missing("db upgrade", exc)
    try:
        before, after = asyncio.run(upgrade_database_in(args.data, args.database))
    except (OSError, ValueError, SchemaError, SQLAlchemyError) as exc:
        return fail("db upgrade", _reason(exc), 1)
    if before == after:
        print(f"The database is up to date: revision {after} (head).")
    else:
        print(f"Upgraded the database from {before or 'an empty schema'} to {after} (head).")
    return 0


def _current(args: argparse.Namespace) -> int:
    try:
        from sqlalchemy.exc import SQLAlchemyError

        from ..server.admin import database_revision_in
        from ..server.storage.migrations import SchemaError
    except ImportError as exc:
        return server_extra_missing("db current", exc)
    try:
        state = asyncio.run(database_revision_in(args.data, args.database))
    except (OSError, ValueError, SchemaError, SQLAlchemyError) as exc:
        return fail("db current", _reason(exc), 1)
    print(state.describe())
    return 0


def _reason(exc: Exception) -> str:
    """What went wrong, in a line: a database error's own message, not the statement."""
    orig = getattr(exc, "orig", None)
    return f"{type(exc).__name__}: {orig if orig is not None else exc}"
