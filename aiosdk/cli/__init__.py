"""The ``aiosdk`` command line.

Each command lives in a module of this package that exposes ``register(commands)``: it adds its
sub-parser(s) to ``commands`` (the ``argparse`` sub-parsers action) and sets ``run`` on them, a
function of the parsed arguments returning the exit status. A new command is one more module
named in :data:`COMMANDS`. Modules import the server (an optional extra) only when they run, so
that ``aiosdk --help`` works without it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__
from . import accounts, catalog, channels, data, db, keyring, serve

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = (serve, db, keyring, accounts, catalog, data, channels)
"""The modules whose ``register(commands)`` make up the command line, in ``--help`` order."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aiosdk`` command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, every command registered."""
    parser = argparse.ArgumentParser(prog="aiosdk", description="aiosdk command line")
    parser.add_argument("--version", action="version", version=f"aiosdk {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
