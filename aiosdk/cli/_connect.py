"""What the commands that talk to a server share: the connection flags, the catalog path and
``KEY=VALUE`` argument types, and :func:`command`, which runs a command's work with a connected
:class:`~aiosdk.AsyncClient` and turns every error into one line on stderr.

A command connects as a client does: ``--url`` (else ``$AIOSDK_URL``), ``--profile`` (else
``$AIOSDK_PROFILE``), and the token of ``$AIOSDK_TOKEN``, of the profile, or of the login that
``aiosdk login`` remembered. A token is never an argument. Exit status: 1 for what the server
refused (not found, permission, a bad query, a conflict), 2 for a bad command line (or a
missing optional dependency), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._common import fail

if TYPE_CHECKING:
    from .. import AsyncClient
    from ..catalog import AsyncContainer, AsyncNode

__all__ = [
    "UsageError",
    "Work",
    "WrongNode",
    "bounded",
    "catalog_path",
    "command",
    "connection_arguments",
    "container_at",
    "json_or_string",
    "nested",
    "node_at",
    "pair",
    "path_argument",
    "raw_pair",
]

Work = Callable[["AsyncClient", argparse.Namespace], Awaitable[int]]
"""A command's work: run with the connected client and the parsed arguments; the exit status."""


class UsageError(Exception):
    """A mistake on the command line found after parsing: status 2."""


class WrongNode(Exception):
    """The path names a node of another kind than the command needs (not a container, not
    data): status 1."""


# --- arguments ---------------------------------------------------------------------------


def connection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--profile``: the server to talk to."""
    where = parser.add_argument_group("server")
    where.add_argument(
        "--url", help="the server, e.g. http://127.0.0.1:8000 (default: $AIOSDK_URL)"
    )
    where.add_argument(
        "--profile", help="a profile of profiles.toml to connect with (default: $AIOSDK_PROFILE)"
    )


def path_argument(
    parser: argparse.ArgumentParser,
    *,
    optional: bool = False,
    name: str = "path",
    help: str = "a catalog path: alice/experiments",
) -> None:
    """The positional catalog path (``optional``: it defaults to the root)."""
    if optional:
        parser.add_argument(
            name,
            nargs="?",
            default="",
            type=catalog_path,
            metavar=name.upper(),
            help="a catalog path such as alice/experiments (default: the root)",
        )
    else:
        parser.add_argument(name, type=catalog_path, metavar=name.upper(), help=help)


def catalog_path(text: str) -> str:
    """A path as typed, with the slashes around it (``/alice/x/``) dropped."""
    return text.strip("/")


def bounded(low: int, high: int | None) -> Callable[[str], int]:
    """An ``argparse`` type: a whole number from ``low`` to ``high`` (``None``: no bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"{low}-{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({span})")
        return value

    return parse


def raw_pair(text: str) -> tuple[str, str]:
    """An ``argparse`` type: ``KEY=VALUE``, VALUE taken as is."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def pair(text: str) -> tuple[str, Any]:
    """An ``argparse`` type: ``KEY=VALUE`` with VALUE read as JSON when it is JSON, else taken
    as a string."""
    key, value = raw_pair(text)
    return key, json_or_string(value)


def json_or_string(text: str) -> Any:
    """``text`` read as JSON (``42``, ``true``, ``"42"``, ``[1]``), or else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def nested(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``[("a.b", 1), ("c", 2)]`` as ``{"a": {"b": 1}, "c": 2}``; a key given twice, or both a
    key and one below it, is a :class:`UsageError`."""
    out: dict[str, Any] = {}
    given: list[tuple[str, ...]] = []
    for key, value in pairs:
        parts = tuple(key.split("."))
        if not all(parts):
            raise UsageError(f"{key!r} is not a metadata key (an empty part between dots)")
        for other in given:
            shorter = min(len(parts), len(other))
            if parts[:shorter] == other[:shorter]:
                raise UsageError(f"{key!r} and {'.'.join(other)!r} set the same key")
        given.append(parts)
        place = out
        for part in parts[:-1]:
            place = place.setdefault(part, {})
        place[parts[-1]] = value
    return out


# --- running a command -------------------------------------------------------------------


def command(
    name: str, work: Work, prepare: Callable[[argparse.Namespace], None] | None = None
) -> Callable[[argparse.Namespace], int]:
    """The ``run`` of a command: ``prepare`` checks the arguments and does blocking work such
    as reading files (before the event loop starts), then ``work`` runs with a connected
    client; errors become one line."""

    def run(args: argparse.Namespace) -> int:
        if not (
            args.url
            or args.profile
            or os.environ.get("AIOSDK_URL")
            or os.environ.get("AIOSDK_PROFILE")
        ):
            return fail(name, "no server URL: give --url or --profile, or set AIOSDK_URL")
        import aiosdk

        try:
            if prepare is not None:
                prepare(args)
            # Made before the loop: it reads profiles.toml, a blocking read.
            client = aiosdk.AsyncClient(args.url, profile=args.profile)
        except (UsageError, aiosdk.ConfigurationError, aiosdk.MissingDependencyError) as exc:
            return fail(name, exc)
        try:
            return asyncio.run(_connected(name, client, args, work))
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return fail(name, "interrupted", 130)
        except BrokenPipeError:
            # The reader (| head) went away: say nothing more, and let Python's final flush of
            # stdout not fail either.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1

    return run


async def _connected(name: str, client: AsyncClient, args: argparse.Namespace, work: Work) -> int:
    import aiosdk

    try:
        async with client:
            return await work(client, args)
    except (UsageError, aiosdk.ConfigurationError, aiosdk.MissingDependencyError) as exc:
        return fail(name, exc)
    except WrongNode as exc:
        return fail(name, exc, 1)
    except aiosdk.AuthenticationError as exc:
        return fail(name, f"{exc.message} (log in with `aiosdk login URL`, or set AIOSDK_TOKEN)", 1)
    except aiosdk.ConflictError as exc:
        return fail(name, f"{exc.message} (changed since it was read: run the command again)", 1)
    except aiosdk.ServerError as exc:
        return fail(name, exc, 1)  # with the request id, for the server's logs
    except aiosdk.StatusError as exc:
        return fail(name, exc.message, 1)
    except aiosdk.AiosdkError as exc:
        return fail(name, exc, 1)


async def node_at(client: AsyncClient, path: str) -> AsyncNode:
    """The node at ``path`` (``""``: the catalog's root)."""
    root = client.catalog
    return await root.get(path) if path else root


async def container_at(client: AsyncClient, path: str) -> AsyncContainer:
    """The container at ``path``; :class:`WrongNode` if the node there is not one."""
    from ..catalog import AsyncContainer

    node = await node_at(client, path)
    if not isinstance(node, AsyncContainer):
        raise WrongNode(f"{path} is not a container (it is {node.structure_family})")
    return node
