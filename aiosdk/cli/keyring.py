"""``aiosdk keyring rotate`` and ``aiosdk keyring generate``: the server's secret keys."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import fail, positive_seconds, server_extra_missing

if TYPE_CHECKING:
    from ._common import Subparsers

__all__ = ["register"]

_SEVEN_DAYS = 7 * 24 * 3600.0


def register(commands: Subparsers) -> None:
    """Add ``keyring`` (``keyring rotate``, ``keyring generate``) to ``commands``."""
    keyring = commands.add_parser(
        "keyring",
        help="the server's secret keys: rotate them, or generate a keyring file",
        description="The server keyring signs what the server hands out and later trusts, and"
        " seals idempotency records. It is kept in DATA/keyring.json (mode 0600), or given with"
        " `aiosdk serve --keyring FILE` or $AIOSDK_KEYRING. Keys are never printed.",
    )
    actions = keyring.add_subparsers(title="actions", required=True, metavar="ACTION")
    rotate = actions.add_parser(
        "rotate",
        help="make a new current key; older keys still verify until they retire",
        description="Add a new current key to a keyring file. What the older keys signed still"
        " verifies for --retire-after seconds, then they are dropped. Servers read the keyring"
        " when they start: restart them to sign with the new key.",
    )
    where = rotate.add_mutually_exclusive_group()
    where.add_argument(
        "--data",
        type=Path,
        default=Path("aiosdk-data"),
        help="the server's data directory: rotates DATA/keyring.json (default: ./aiosdk-data)",
    )
    where.add_argument("--keyring", type=Path, metavar="FILE", help="a keyring file to rotate")
    rotate.add_argument(
        "--retire-after",
        type=positive_seconds,
        default=_SEVEN_DAYS,
        metavar="SECONDS",
        help="how long the replaced key keeps verifying (default: 604800, 7 days)",
    )
    rotate.set_defaults(run=_rotate)
    generate = actions.add_parser(
        "generate",
        help="write a new keyring file (mode 0600) for `aiosdk serve --keyring FILE`",
        description="Write a new keyring file, readable by its owner only, for several server"
        " processes that must trust each other: give each `--keyring FILE` (or the file's"
        " content in $AIOSDK_KEYRING). Refuses to overwrite a file.",
    )
    generate.add_argument("file", type=Path, metavar="FILE", help="where to write it")
    generate.set_defaults(run=_generate)


def _rotate(args: argparse.Namespace) -> int:
    try:
        from ..server.keyring import KEYRING_FILE, KeyringError, rotate_keyring_file
    except ImportError as exc:
        return server_extra_missing("keyring rotate", exc)
    path: Path = args.keyring if args.keyring is not None else args.data / KEYRING_FILE
    try:
        keyring = rotate_keyring_file(path, retire_after=args.retire_after)
    except KeyringError as exc:
        return fail("keyring rotate", exc, 1)
    older = len(keyring.keys) - 1
    print(
        f"Rotated {path}: the current key is now {keyring.current.key_id};"
        f" {older} older key(s) still verify until they retire."
        " Restart the servers using it to sign with the new key."
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    try:
        from ..server.keyring import KeyringError, create_keyring_file
    except ImportError as exc:
        return server_extra_missing("keyring generate", exc)
    try:
        keyring = create_keyring_file(args.file)
    except KeyringError as exc:
        return fail("keyring generate", exc, 1)
    print(f"Wrote {args.file} (mode 0600): a keyring with key {keyring.current.key_id}.")
    return 0
