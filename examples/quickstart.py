"""Quickstart: start the embedded reference server, then talk to it over HTTP and gRPC.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import asyncio

import aiosdk


async def main() -> None:
    # Starts the reference server in this process (its own thread, free loopback ports, a
    # temporary data directory and an admin token) and connects to it.
    async with aiosdk.embedded() as client:
        info = await client.server_info()  # HTTP: GET /api/v1/
        print(f"connected to {info.name} {info.version} at {client.url} as {info.principal}")
        print(f"gRPC endpoint: {info.grpc_host}:{info.grpc_port}")

        token = await client.tokens.create("quickstart")  # POST, with an Idempotency-Key
        print(f"created token {token.id!r} labelled {token.label!r}: secret {token.secret}")
        async for listed in client.tokens.list(page_size=10):
            print(f"  token {listed.id} {listed.label!r}")

        # Server-streaming gRPC: a status update every 0.2 s, three of them.
        async for status in client.watch_status(interval=0.2, max_updates=3):
            print(
                f"status #{status.sequence}: up {status.uptime_seconds:.2f} s, "
                f"{status.requests_served} requests served, load {status.load_average:.2f}"
            )

        try:
            await client.tokens.get("no-such-token")
        except aiosdk.NotFoundError as exc:
            print(f"errors are typed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    asyncio.run(main())
