"""``aiosdk serve`` (run the reference server) and ``aiosdk admin-token`` (mint one)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ._common import fail, number, positive_seconds, server_extra_missing, storage_arguments

if TYPE_CHECKING:
    from ..server import Server, ServerConfig
    from ..server.catalog.state import Validator
    from ._common import Subparsers

__all__ = ["ADMIN_TOKEN_ENV", "register", "server_config"]

ADMIN_TOKEN_ENV = "AIOSDK_ADMIN_TOKEN"
KEYRING_ENV = "AIOSDK_KEYRING"  # the same name as aiosdk.server.keyring.KEYRING_ENV


def register(commands: Subparsers) -> None:
    """Add ``serve`` and ``admin-token`` to ``commands``."""
    serve = commands.add_parser(
        "serve",
        help="run the reference server (HTTP and gRPC)",
        description="Run the aiosdk reference server, HTTP and gRPC, until SIGINT or SIGTERM."
        " The database schema is upgraded on start.",
    )
    storage_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--http-port", type=int, default=8000, help="HTTP port; 0 picks a free one")
    serve.add_argument("--grpc-port", type=int, default=50051, help="gRPC port; 0 picks a free one")
    serve.add_argument(
        "--admin-token",
        metavar="TOKEN",
        default=os.environ.get(ADMIN_TOKEN_ENV),
        help=f"an admin bearer token to accept (or ${ADMIN_TOKEN_ENV}), stored (hashed) if new;"
        " without one, the first start generates one and shows it once",
    )
    serve.add_argument(
        "--keyring",
        type=Path,
        metavar="FILE",
        help=f"the server's secret keys (a file of `aiosdk keyring generate`, mode 0600), for"
        f" several server processes that must trust each other; or ${KEYRING_ENV} holding the"
        " same JSON (default: DATA/keyring.json, generated on the first start)",
    )
    serve.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="certificate chain: serve HTTPS and gRPC/TLS"
    )
    serve.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    serve.add_argument(
        "--spec-validator",
        action="append",
        default=[],
        metavar="SPEC=MODULE:FUNCTION",
        help="validate the metadata of nodes with the spec SPEC with FUNCTION(metadata,"
        " structure_family, specs), which raises ValueError to refuse a node (repeatable)",
    )
    serve.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="MODULE:FACTORY",
        help="serve the application FACTORY() returns (its fields are what application tickets"
        " name; repeatable); the built-in `stats` is always served",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level (default: info)",
    )
    accounts = serve.add_argument_group("accounts", "sessions and anonymous access")
    accounts.add_argument(
        "--access-token-ttl",
        type=positive_seconds,
        metavar="SECONDS",
        help="lifetime of a login session's access token; a refresh hands out the next one"
        " (default: 900)",
    )
    accounts.add_argument(
        "--session-ttl",
        type=positive_seconds,
        metavar="SECONDS",
        help="longest life of a login session, refreshes included (default: 2592000, 30 days)",
    )
    accounts.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="let requests without credentials read public assets (default: refused)",
    )
    tickets = serve.add_argument_group("tickets", "gRPC sessions and what they export")
    tickets.add_argument(
        "--ticket-session-ttl",
        type=positive_seconds,
        metavar="SECONDS",
        help="how long a ticket session lives without a refresh when its client names no ttl"
        " (default: 300)",
    )
    tickets.add_argument(
        "--max-ticket-session-ttl",
        type=positive_seconds,
        metavar="SECONDS",
        help="the longest ttl a ticket session may ask for, at most a day (default: 86400)",
    )
    channels = serve.add_argument_group("channels", "gRPC channels and their clients' presence")
    channels.add_argument(
        "--channel-queue-size",
        type=_positive_count,
        metavar="N",
        help="pending messages a channel holds at most; a send to a full one is refused"
        " (default: 1000)",
    )
    channels.add_argument(
        "--channel-grace",
        type=positive_seconds,
        metavar="SECONDS",
        help="how long a channel's client may stay silent (a dropped connection) before it counts"
        " as disconnected (default: 10)",
    )
    limits = serve.add_argument_group(
        "limits", "what one client may take; the sizes are advertised in GET /api/v1/"
    )
    for flag, metavar, help_text in _LIMIT_FLAGS:
        limits.add_argument(flag, metavar=metavar, type=number, help=help_text)
    serve.set_defaults(run=_serve)

    admin_token = commands.add_parser(
        "admin-token",
        help="mint a new admin token (or rotate them)",
        description="Mint a new admin token for a server's data and print it, once: how to get "
        "one when the token a first start showed is lost. With --revoke-others, every other "
        "admin token stops working (a rotation). Works whether the server runs or not; a running "
        "server on SQLite may accept a revoked admin token for up to a minute (its cache), one "
        "on PostgreSQL stops at once.",
    )
    storage_arguments(admin_token)
    admin_token.add_argument(
        "--revoke-others", action="store_true", help="revoke every other admin token"
    )
    admin_token.set_defaults(run=_admin_token)


# The flags of aiosdk.server.Limits: (flag, metavar, help). Limits checks the values; the
# defaults are written out here so that `aiosdk --help` does not import the server.
_LIMIT_FLAGS = [
    ("--max-body-bytes", "N", "largest HTTP request body; more is a 413 (default: 16777216)"),
    (
        "--max-data-body-bytes",
        "N",
        "largest body of an array, table or sparse upload; more is a 413 (default: 536870912)",
    ),
    (
        "--max-header-bytes",
        "N",
        "most bytes of an HTTP request line and header fields; more is a 431 (default: 65536)",
    ),
    (
        "--max-grpc-message-bytes",
        "N",
        "largest gRPC request message; more is RESOURCE_EXHAUSTED (default: 4194304)",
    ),
    (
        "--max-connections",
        "N",
        "open connections on each of the HTTP and gRPC ports; more are refused"
        " (default: a quarter of the file descriptor limit, at most 1024)",
    ),
    (
        "--header-timeout",
        "SECONDS",
        "time to send an HTTP request head, or a first gRPC call, before the connection is"
        " closed (default: 10)",
    ),
    (
        "--idle-timeout",
        "SECONDS",
        "time an HTTP connection may idle between requests, or stall in a request body"
        " (default: 5)",
    ),
    (
        "--grpc-idle-timeout",
        "SECONDS",
        "time a gRPC connection may stay without calls (default: 300)",
    ),
]
_LIMIT_FIELDS = {
    "max_body_bytes": "max_request_body_bytes",
    "max_data_body_bytes": "max_data_body_bytes",
    "max_header_bytes": "max_header_bytes",
    "max_grpc_message_bytes": "max_grpc_message_bytes",
    "max_connections": "max_connections",
    "header_timeout": "header_timeout_seconds",
    "idle_timeout": "http_idle_timeout_seconds",
    "grpc_idle_timeout": "grpc_idle_timeout_seconds",
}
_ACCOUNT_FIELDS = ("access_token_ttl", "session_ttl")
_TICKET_FIELDS = {"ticket_session_ttl": "session_ttl", "max_ticket_session_ttl": "max_session_ttl"}
_CHANNEL_FIELDS = {"channel_queue_size": "max_queue", "channel_grace": "grace"}


def _positive_count(text: str) -> int:
    """A whole number of at least 1 (argparse's type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The server configuration ``aiosdk serve``'s arguments describe; raises
    :class:`ValueError` for a value the server does not accept (and :class:`ImportError`
    without the server extra)."""
    from ..server import Limits, ServerConfig
    from ..server.config import AccountSettings, ChannelSettings, TicketSettings
    from ..server.tickets.apps import load_application

    given = {field: getattr(args, dest) for dest, field in _LIMIT_FIELDS.items()}
    accounts = {field: getattr(args, field) for field in _ACCOUNT_FIELDS}
    tickets = {field: getattr(args, dest) for dest, field in _TICKET_FIELDS.items()}
    channels = {field: getattr(args, dest) for dest, field in _CHANNEL_FIELDS.items()}
    return ServerConfig(
        data_dir=args.data,
        database_url=args.database,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        admin_token=args.admin_token or None,
        log_level=args.log_level,
        limits=Limits(**{field: value for field, value in given.items() if value is not None}),
        accounts=AccountSettings(
            **{field: value for field, value in accounts.items() if value is not None},
            allow_anonymous=args.allow_anonymous,
        ),
        keyring_file=args.keyring,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        spec_validators=dict(_validator(option) for option in args.spec_validator),
        tickets=TicketSettings(
            **{field: value for field, value in tickets.items() if value is not None}
        ),
        applications=[load_application(spec) for spec in args.app],
        channels=ChannelSettings(
            **{field: value for field, value in channels.items() if value is not None}
        ),
    )


def _validator(option: str) -> tuple[str, Validator]:
    """``SPEC=MODULE:FUNCTION`` as the spec's name and the function, imported."""
    spec, _, target = option.partition("=")
    module_name, _, attribute = target.partition(":")
    if not (spec and module_name and attribute):
        raise ValueError(f"--spec-validator {option!r}: expected SPEC=MODULE:FUNCTION")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--spec-validator {option!r}: {exc}") from None
    if not callable(function):
        raise ValueError(f"--spec-validator {option!r}: {target} is not callable")  # noqa: TRY004
    return spec, function


def _serve(args: argparse.Namespace) -> int:
    try:
        # The server's dependencies are an optional extra.
        from ..server.keyring import KeyringError

        config = server_config(args)
    except ImportError as exc:
        return server_extra_missing("serve", exc)
    except ValueError as exc:
        return fail("serve", exc)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        _run(_serve_until_signalled(config))
    except (KeyringError, OSError) as exc:
        return fail("serve", f"cannot start: {exc}", 1)
    return 0


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (the server extra brings it, except on
    Windows), else on asyncio's own loop. Measured serving array blocks, uvloop's transports
    cost the server about a quarter of the CPU per byte: asyncio's copy what a large write
    leaves unsent into a buffer of their own."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _serve_until_signalled(config: ServerConfig) -> None:
    from ..server import Server

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Server(config) as server:
            print(_started(server, config), flush=True)
            await stop.wait()
            print("Shutting down", flush=True)
    finally:
        for signum in signals:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)


def _started(server: Server, config: ServerConfig) -> str:
    """What the operator needs to know once the server serves: where, and the admin token."""
    lines = [
        f"aiosdk {__version__} serving; clients connect to the URL and find gRPC from it",
        f"URL: {server.http_url}",
        f"API: {server.http_url}/api/v1/ (its OpenAPI document: openapi.json)",
        f"gRPC: {server.grpc_host}:{server.grpc_port} ({'TLS' if config.tls else 'plaintext'})",
    ]
    admin = server.admin_tokens
    mint = f"aiosdk admin-token --data {config.data_dir}" + (
        " --database URL" if config.database_url else ""
    )
    if server.admin_token_generated:
        lines.append(f"Admin token (shown once; only its hash is kept): {server.admin_token}")
    elif config.admin_token is None:
        lines.append(
            f"Admin token: {admin.others} made by earlier starts, each shown once then (only"
            f" hashes are kept); lost? Mint another: {mint}"
        )
    else:
        stored = "stored now" if admin.created else "already stored"
        lines.append(f"Admin token: the one given by --admin-token/${ADMIN_TOKEN_ENV} ({stored})")
        if admin.others:
            lines.append(f"  {admin.others} other admin token(s) work too")
    if admin.others:
        lines.append(f"  to revoke all but a new one: {mint} --revoke-others")
    return "\n".join(lines)


def _admin_token(args: argparse.Namespace) -> int:
    try:
        from ..server.admin import mint_admin_token_in
    except ImportError as exc:
        return server_extra_missing("admin-token", exc)
    secret, revoked = asyncio.run(mint_admin_token_in(args.data, args.database, args.revoke_others))
    print(f"Admin token (shown once; only its hash is kept): {secret}")
    if args.revoke_others:
        print(f"Revoked {revoked} other admin token(s).")
    return 0
