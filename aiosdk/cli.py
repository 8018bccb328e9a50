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

if TYPE_CHECKING:
    from .server import ServerConfig

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
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the reference server (HTTP and gRPC)",
        description="Run the aiosdk reference server, HTTP and gRPC, until SIGINT or SIGTERM.",
    )
    serve.add_argument(
        "--data",
        type=Path,
        default=Path("aiosdk-data"),
        help="data directory, created if missing (default: ./aiosdk-data)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--http-port", type=int, default=8000, help="HTTP port; 0 picks a free one")
    serve.add_argument("--grpc-port", type=int, default=50051, help="gRPC port; 0 picks a free one")
    serve.add_argument(
        "--database",
        metavar="URL",
        help="SQLAlchemy async URL (default: sqlite+aiosqlite:///DATA/aiosdk.db)",
    )
    serve.add_argument(
        "--admin-token",
        metavar="TOKEN",
        default=os.environ.get(ADMIN_TOKEN_ENV),
        help=f"admin bearer token (or ${ADMIN_TOKEN_ENV}); generated on first start if absent",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level (default: info)",
    )
    serve.set_defaults(run=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    try:
        from .server import ServerConfig  # the server's dependencies are an optional extra
    except ImportError as exc:
        print(
            f"aiosdk serve needs the server extra: pip install 'aiosdk[server]' ({exc})",
            file=sys.stderr,
        )
        return 2

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServerConfig(
        data_dir=args.data,
        database_url=args.database,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        admin_token=args.admin_token or None,
        log_level=args.log_level,
    )
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
            if server.admin_token_generated:
                print(f"Admin token (shown once): {server.admin_token}")
            print(f"HTTP: {server.http_url}/api/v1/")
            print(f"gRPC: {server.grpc_host}:{server.grpc_port}", flush=True)
            await stop.wait()
            print("Shutting down", flush=True)
    finally:
        for signum in signals:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)


if __name__ == "__main__":
    sys.exit(main())
