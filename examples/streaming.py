"""Streaming: consume a server-streaming gRPC call with ``async for`` and stop whenever you like.

Run: python examples/streaming.py
"""

from __future__ import annotations

import asyncio

import anyio

import aiosdk


async def main() -> None:
    async with aiosdk.embedded() as client:
        # An open-ended stream: the server pushes every 0.1 s until we stop iterating.
        async for status in client.watch_status(interval=0.1):
            print(
                f"#{status.sequence}: {status.requests_served} requests, "
                f"{status.active_streams} open stream(s)"
            )
            if status.sequence == 5:
                break  # leaving the loop closes the stream on the server

        # A deadline on a whole stream: stop after one second, whatever arrived.
        with anyio.move_on_after(1.0):
            async for status in client.watch_status(interval=0.25):
                print(f"within the deadline: #{status.sequence}")

        # Requests are concurrent over one shared pool.
        infos = await asyncio.gather(*(client.server_info() for _ in range(20)))
        print(
            f"{len(infos)} concurrent calls over one pool; status now: "
            f"{(await client.get_status()).requests_served} requests served"
        )


if __name__ == "__main__":
    asyncio.run(main())
