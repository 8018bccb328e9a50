"""Compare HTTP clients against a local uvicorn server: raw aiohttp, httpx, httpx+AsyncioTransport.

Usage: python benchmarks/bench_http.py [--quick]

The server runs in its own process pinned to one core and the client to another.
For each client it measures (a) small GETs at concurrency 200: client CPU time per
request and requests/s, and (b) a streamed large body: GB/s.  Rounds interleave the
clients; ratios compare each client with raw aiohttp in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

SMALL_BODY = b'{"id": 42, "name": "widget", "tags": ["a", "b", "c"], "ok": true}'
STREAM_CHUNK = 1024 * 1024
CONCURRENCY = 200
MAX_CONNECTIONS = 100

Scope = dict[str, Any]
Message = dict[str, Any]


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """A raw ASGI app: GET /small returns a short JSON body, GET /stream?size=N streams N bytes."""
    if scope["path"].endswith("/small"):
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(SMALL_BODY)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": SMALL_BODY})
        return
    size = int(scope["query_string"].decode().partition("=")[2])
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % size)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    chunk = b"x" * STREAM_CHUNK
    while size > 0:
        part = chunk if size >= STREAM_CHUNK else chunk[:size]
        size -= len(part)
        await send({"type": "http.response.body", "body": part, "more_body": size > 0})


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, cpu: int | None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return proc
    proc.kill()
    raise RuntimeError("server did not start")


# -- clients -------------------------------------------------------------------------


class Client:
    name = ""
    streams = True

    def __init__(self, base: str) -> None:
        self.base = base

    async def __aenter__(self) -> Client:
        raise NotImplementedError

    async def __aexit__(self, *exc: object) -> None:
        raise NotImplementedError

    async def get_small(self, url: str) -> None:
        raise NotImplementedError

    async def read_stream(self, url: str) -> int:
        raise NotImplementedError


class AiohttpClient(Client):
    name = "raw aiohttp"

    async def __aenter__(self) -> Client:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def get_small(self, url: str) -> None:
        async with self._session.get(url) as resp:
            await resp.read()

    async def read_stream(self, url: str) -> int:
        total = 0
        async with self._session.get(url) as resp:
            async for chunk in resp.content.iter_any():
                total += len(chunk)
        return total


class HttpxClient(Client):
    name = "httpx default"

    def transport(self) -> Any:
        return None

    async def __aenter__(self) -> Client:
        import httpx

        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
        )
        transport = self.transport()
        self._client = httpx.AsyncClient(
            limits=limits, transport=transport, timeout=httpx.Timeout(120)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def get_small(self, url: str) -> None:
        (await self._client.get(url)).raise_for_status()

    async def read_stream(self, url: str) -> int:
        total = 0
        async with self._client.stream("GET", url) as resp:
            async for chunk in resp.aiter_raw():
                total += len(chunk)
        return total


class FastClient(HttpxClient):
    name = "httpx+AsyncioTransport"

    def transport(self) -> Any:
        import httpx

        from aiosdk._core.http11 import AsyncioTransport

        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
        )
        return AsyncioTransport(limits=limits)


class SdkClient(Client):
    """aiosdk's own request path (on AsyncioTransport): request building, retries, errors."""

    name = "aiosdk request path"
    streams = False  # the SDK's bulk-read API comes with the data issues

    async def __aenter__(self) -> Client:
        import aiosdk

        self._sdk = aiosdk.AsyncClient(self.base, token="bench", pool_threads=MAX_CONNECTIONS)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sdk.aclose()

    async def get_small(self, url: str) -> None:
        await self._sdk._ctx.request("GET", "/small")  # GET {base}/api/v1/small


# -- measurements ----------------------------------------------------------------------


@dataclass
class Results:
    cpu_us: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    gbps: list[float] = field(default_factory=list)


async def small_gets(client: Client, base: str, requests: int) -> tuple[float, float]:
    url = base + "/small"
    await asyncio.gather(*(client.get_small(url) for _ in range(CONCURRENCY)))  # warm-up
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.get_small(url)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / requests * 1e6, requests / wall


async def stream_read(client: Client, base: str, size: int) -> float:
    url = f"{base}/stream?size={size}"
    await client.read_stream(f"{base}/stream?size={STREAM_CHUNK}")  # warm-up
    wall = time.perf_counter()
    received = await client.read_stream(url)
    wall = time.perf_counter() - wall
    if received != size:
        raise RuntimeError(f"{client.name}: received {received} of {size} bytes")
    return size / wall / 1e9


async def measure(
    client: Client, base: str, requests: int, size: int, result: Results, small: bool
) -> None:
    async with client:
        if small:
            cpu_us, rps = await small_gets(client, base, requests)
            result.cpu_us.append(cpu_us)
            result.rps.append(rps)
        if client.streams:
            result.gbps.append(await stream_read(client, base, size))


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def ratio(values: list[float], reference: list[float]) -> str:
    # Round by round: the same round's aiohttp figure is the reference.
    ratios = [value / ref for value, ref in zip(values, reference, strict=False)]
    return f"{statistics.median(ratios):.2f}x" if ratios else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs and less data")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rounds, slow_rounds = (2, 1) if args.quick else (7, 3)
    requests = 400 if args.quick else 2000
    size = (32 if args.quick else 256) * 1024 * 1024

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[1], cpus[0]) if len(cpus) >= 2 else (None, None)
    port = free_port()
    server = start_server(port, server_cpu)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    base = f"http://127.0.0.1:{port}"
    clients: list[type[Client]] = [AiohttpClient, HttpxClient, FastClient, SdkClient]
    results = {cls.name: Results() for cls in clients}
    try:
        for index in range(rounds):
            for cls in clients:
                small = cls is not HttpxClient or index < slow_rounds
                asyncio.run(measure(cls(base), base, requests, size, results[cls.name], small))
            print(f"round {index + 1}/{rounds} done", file=sys.stderr)
    finally:
        server.terminate()
        server.wait()

    print(
        f"\nserver: uvicorn+httptools+uvloop on cpu {server_cpu}; client: asyncio on cpu"
        f" {client_cpu}; Python {sys.version.split()[0]}"
    )
    print(
        f"(a) {requests} GETs of {len(SMALL_BODY)} B at concurrency {CONCURRENCY}, "
        f"{MAX_CONNECTIONS} connections; (b) {size // 2**20} MiB streamed read."
    )
    print(
        f"Median (min-max) of {rounds} rounds; httpx default ran (a) in {slow_rounds} rounds "
        f"only (it is slow); ratios vs raw aiohttp of the same round.\n"
    )
    reference = results[AiohttpClient.name]
    header = (
        f"{'client':<24} {'CPU us/req':>22} {'CPU ratio':>9} {'req/s':>24} "
        f"{'read GB/s':>20} {'GB/s ratio':>10}"
    )
    print(header)
    print("-" * len(header))
    for cls in clients:
        res = results[cls.name]
        print(
            f"{cls.name:<24} {spread(res.cpu_us, '.0f'):>22} "
            f"{ratio(res.cpu_us, reference.cpu_us):>9} {spread(res.rps, '.0f'):>24} "
            f"{spread(res.gbps, '.2f'):>20} {ratio(res.gbps, reference.gbps):>10}"
        )


if __name__ == "__main__":
    main()
