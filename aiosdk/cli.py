"""The ``aiosdk`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
    from .server import Server, ServerConfig

__all__ = ["main"]

ADMIN_TOKEN_ENV = "AIOSDK_ADMIN_TOKEN"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aiosdk`` command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiosdk", description="aiosdk command line")
    parser.add_argument("--version", action="version", version=f"aiosdk {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the reference server (HTTP and gRPC)",
        description="Run the aiosdk reference server, HTTP and gRPC, until SIGINT or SIGTERM.",
    )
    _storage_arguments(serve)
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
        "--tls-cert", type=Path, metavar="PEM", help="certificate chain: serve HTTPS and gRPC/TLS"
    )
    serve.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level (default: info)",
    )
    limits = serve.add_argument_group(
        "limits", "what one client may take; the sizes are advertised in GET /api/v1/"
    )
    for flag, metavar, help_text in _LIMIT_FLAGS:
        limits.add_argument(flag, metavar=metavar, type=_number, help=help_text)
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
    _storage_arguments(admin_token)
    admin_token.add_argument(
        "--revoke-others", action="store_true", help="revoke every other admin token"
    )
    admin_token.set_defaults(run=_admin_token)
    return parser


def _storage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("aiosdk-data"),
        help="data directory, created if missing (default: ./aiosdk-data)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="SQLAlchemy async URL (default: sqlite+aiosqlite:///DATA/aiosdk.db)",
    )


# The flags of aiosdk.server.Limits: (flag, metavar, help). Limits checks the values; the
# defaults are written out here so that `aiosdk --help` does not import the server.
_LIMIT_FLAGS = [
    ("--max-body-bytes", "N", "largest HTTP request body; more is a 413 (default: 16777216)"),
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
    "max_header_bytes": "max_header_bytes",
    "max_grpc_message_bytes": "max_grpc_message_bytes",
    "max_connections": "max_connections",
    "header_timeout": "header_timeout_seconds",
    "idle_timeout": "http_idle_timeout_seconds",
    "grpc_idle_timeout": "grpc_idle_timeout_seconds",
}


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _serve(args: argparse.Namespace) -> int:
    try:
        from .server import Limits, ServerConfig  # the server's dependencies are an optional extra
    except ImportError as exc:
        print(
            f"aiosdk serve needs the server extra: pip install -e '.[server]' ({exc})",
            file=sys.stderr,
        )
        return 2

    given = {field: getattr(args, dest) for dest, field in _LIMIT_FIELDS.items()}
    try:
        limits = Limits(**{field: value for field, value in given.items() if value is not None})
    except ValueError as exc:
        print(f"aiosdk serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = ServerConfig(
            data_dir=args.data,
            database_url=args.database,
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            admin_token=args.admin_token or None,
            log_level=args.log_level,
            limits=limits,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except ValueError as exc:
        print(f"aiosdk serve: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_until_signalled(config))
    except OSError as exc:
        print(f"aiosdk serve: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signalled(config: ServerConfig) -> None:
    from .server import Server

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
        from .server.admin import mint_admin_token_in
    except ImportError as exc:
        print(f"aiosdk admin-token needs the server extra: pip install -e '.[server]' ({exc})")
        return 2
    secret, revoked = asyncio.run(mint_admin_token_in(args.data, args.database, args.revoke_others))
    print(f"Admin token (shown once; only its hash is kept): {secret}")
    if args.revoke_others:
        print(f"Revoked {revoked} other admin token(s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
