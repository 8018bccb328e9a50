"""Developer tool: ``python -m aiosdk.server.storage.migrations revision "what changed"``.

Autogenerates the next revision (``versions/NNNN_what_changed.py``) from the difference between
the models and a scratch SQLite database upgraded to the current head. Review it before use.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from pathlib import Path

from alembic import command

from ..db import create_engine, default_database_url
from . import alembic_config, upgrade_database


def main(argv: list[str] | None = None) -> int:
    """Run the developer tool; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m aiosdk.server.storage.migrations")
    actions = parser.add_subparsers(dest="action", required=True)
    revision = actions.add_parser("revision", help="autogenerate the next revision")
    revision.add_argument("message", help="what the revision changes, a few words")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        asyncio.run(_revision(Path(scratch), args.message))
    return 0


async def _revision(scratch: Path, message: str) -> None:
    engine = create_engine(default_database_url(scratch))
    try:
        await upgrade_database(engine)
        config = alembic_config()
        numbers = [
            int(match.group(1))
            for path in (Path(__file__).parent / "versions").glob("*.py")
            if (match := re.match(r"(\d{4})_", path.name))
        ]
        rev_id = f"{max(numbers, default=0) + 1:04d}"
        slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")
        config.set_main_option("file_template", f"%%(rev)s_{slug}")
        async with engine.connect() as connection:

            def generate(sync_connection: object) -> None:
                config.attributes["connection"] = sync_connection
                command.revision(config, message, autogenerate=True, rev_id=rev_id)

            await connection.run_sync(generate)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
