"""How much aiosdk adds over raw HTTP clients, against the reference server in its own process.

Usage: python benchmarks/bench_client.py [--quick] [--server-command CMD] [--profile WHO]

Starts ``aiosdk serve`` as a separate process (free ports, a temporary data directory, a known
admin token), pins server and client to different cores where possible, and prints a plain-text
table:

(a) sequential ``await client.server_info()`` (``GET /api/v1/``) against the same GET with a raw
    ``httpx.AsyncClient`` (same limits, keep-alive, auth header, transport class): per-call latency
    medians, ratio aiosdk/httpx (goal <= 1.10);
(b) the blocking facade: ``aiosdk.Client.server_info()`` against
    ``await AsyncClient.server_info()``, the added latency per call in microseconds (goal <= 100);
(c) small requests at concurrency 200: client CPU time per request of aiosdk, raw httpx (its
    default transport) and raw aiohttp, ratio aiosdk/aiohttp (goal <= 1.5).

Every figure is the median of several runs, shown with the min and max. Progress goes to stderr,
the table to stdout. ``--profile aiosdk`` (or ``httpx``) prints a cProfile of sequential calls
instead of the table.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import shlex
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import httpx

import aiosdk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    Pinning,
    ServerProcess,
    Summary,
    Table,
    default_server_command,
    machine_line,
    plan_pinning,
)

Call = Callable[[], Awaitable[object]]

GOAL_SEQUENTIAL_RATIO = 1.10
GOAL_SYNC_ADDED_US = 100.0
GOAL_CPU_RATIO = 1.5


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    calls: int  # sequential calls per run, sections (a) and (b)
    warmup: int  # calls before measuring
    runs: int  # runs of (a), (b) and of aiosdk/aiohttp in (c)
    requests: int  # requests per run in (c)
    concurrency: int
    httpx_runs: int  # runs of raw httpx in (c): its default transport is slow at high concurrency


FULL = Plan(calls=2000, warmup=200, runs=5, requests=2000, concurrency=200, httpx_runs=2)
QUICK = Plan(calls=300, warmup=50, runs=2, requests=400, concurrency=200, httpx_runs=1)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- clients -----------------------------------------------------------------------------------


def sdk_limits(client: aiosdk.AsyncClient) -> httpx.Limits:
    """The pool limits ``client`` uses (private attributes: this is a benchmark)."""
    return client._ctx.transport.limits


def sdk_transport_class(client: aiosdk.AsyncClient) -> type[httpx.AsyncBaseTransport]:
    """The class of the HTTP transport under ``client`` (after its first request)."""
    http = client._ctx.transport._http
    return type(http._transport) if http is not None else httpx.AsyncHTTPTransport


def raw_httpx(
    server: ServerProcess,
    limits: httpx.Limits,
    transport_class: type[httpx.AsyncBaseTransport] = httpx.AsyncHTTPTransport,
) -> httpx.AsyncClient:
    """A plain ``httpx.AsyncClient`` with the settings aiosdk uses (limits, auth, timeout)."""
    return httpx.AsyncClient(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": f"Bearer {server.token}"},
        limits=limits,
        timeout=30.0,
        transport=transport_class(limits=limits),  # type: ignore[call-arg]
    )


def raw_aiohttp(server: ServerProcess, limits: httpx.Limits) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limits.max_connections or 0)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=aiohttp.ClientTimeout(total=30.0),
    )


def httpx_call(client: httpx.AsyncClient) -> Call:
    async def call() -> object:
        response = await client.get("/")
        response.raise_for_status()
        return response.json()

    return call


def aiohttp_call(session: aiohttp.ClientSession, url: str) -> Call:
    async def call() -> object:
        async with session.get(url) as response:
            response.raise_for_status()
            return await response.json()

    return call


@asynccontextmanager
async def sdk_client(server: ServerProcess) -> AsyncIterator[aiosdk.AsyncClient]:
    async with aiosdk.AsyncClient(server.url, token=server.token) as client:
        yield client


# -- measuring ---------------------------------------------------------------------------------


async def latencies(call: Call, n: int) -> list[int]:
    """Nanoseconds of each of ``n`` sequential calls."""
    out: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        started = clock()
        await call()
        out.append(clock() - started)
    return out


def sync_latencies(call: Callable[[], object], n: int) -> list[int]:
    out: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        started = clock()
        call()
        out.append(clock() - started)
    return out


def median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1e3


async def burst(call: Call, requests: int, concurrency: int) -> tuple[float, float]:
    """``requests`` calls by ``concurrency`` workers: (client CPU seconds, wall seconds)."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - cpu, time.perf_counter() - wall


def alternate(names: list[str], run: int) -> list[str]:
    """Alternate the order between runs so that neither client always goes first."""
    return names if run % 2 == 0 else names[::-1]


# -- (a) sequential latency --------------------------------------------------------------------


@dataclass
class SequentialResult:
    sdk_repr: str
    transport: str
    latency: dict[str, Summary] = field(default_factory=dict)


async def bench_sequential(server: ServerProcess, plan: Plan) -> SequentialResult:
    async with sdk_client(server) as sdk:
        await sdk.server_info()
        limits, transport_class = sdk_limits(sdk), sdk_transport_class(sdk)
        async with (
            raw_httpx(server, limits, transport_class) as same,
            raw_httpx(server, limits) as default,
        ):
            calls: dict[str, Call] = {"aiosdk": sdk.server_info, "httpx": httpx_call(same)}
            if transport_class is not httpx.AsyncHTTPTransport:
                calls["httpx-default"] = httpx_call(default)
            result = SequentialResult(repr(sdk), transport_class.__name__)
            result.latency = {name: Summary() for name in calls}
            for call in calls.values():
                await latencies(call, plan.warmup)
            for run in range(plan.runs):
                for name in alternate(list(calls), run):
                    gc.collect()
                    result.latency[name].add(median_us(await latencies(calls[name], plan.calls)))
                progress(f"(a) run {run + 1}/{plan.runs} done")
            return result


def report_sequential(table: Table, result: SequentialResult, plan: Plan) -> None:
    table.title(
        f"(a) sequential GET /api/v1/: latency per call, median of {plan.calls} calls per run "
        f"(after {plan.warmup} warm-up)"
    )
    table.header("us")
    lat = result.latency
    table.row("aiosdk  await client.server_info()", lat["aiosdk"])
    table.row(f"httpx   AsyncClient.get() [{result.transport}]", lat["httpx"])
    if "httpx-default" in lat:
        table.row("httpx   AsyncClient.get() [AsyncHTTPTransport]", lat["httpx-default"])
    table.ratio(
        "ratio of medians aiosdk / httpx",
        lat["aiosdk"].median / lat["httpx"].median,
        GOAL_SEQUENTIAL_RATIO,
    )
    overhead = lat["aiosdk"].median - lat["httpx"].median
    table.text(f"aiosdk adds {overhead:.1f} us per call over raw httpx on the same transport")


# -- (b) the blocking facade -------------------------------------------------------------------


@dataclass
class SyncResult:
    client_repr: str
    async_us: Summary = field(default_factory=Summary)
    sync_us: Summary = field(default_factory=Summary)
    added_us: Summary = field(default_factory=Summary)
    portal_us: Summary | None = None


async def _noop() -> None:
    return None


def portal_round_trip(n: int) -> list[int] | None:
    """Nanoseconds of the facade's bare hand-off (a no-op coroutine), if importable."""
    try:
        from aiosdk._core import portal
    except ImportError:
        return None
    return sync_latencies(lambda: portal.call(_noop()), n)


def bench_sync(server: ServerProcess, plan: Plan) -> SyncResult:
    loop = asyncio.new_event_loop()
    sdk = aiosdk.AsyncClient(server.url, token=server.token)
    try:
        loop.run_until_complete(sdk.__aenter__())
        with aiosdk.Client(server.url, token=server.token) as client:
            return _sync_runs(loop, sdk, client, plan)
    finally:
        loop.run_until_complete(sdk.aclose())
        loop.close()


def _sync_runs(
    loop: asyncio.AbstractEventLoop, sdk: aiosdk.AsyncClient, client: aiosdk.Client, plan: Plan
) -> SyncResult:
    loop.run_until_complete(latencies(sdk.server_info, plan.warmup))
    sync_latencies(client.server_info, plan.warmup)
    result = SyncResult(repr(client))
    portal = portal_round_trip(plan.warmup)
    if portal is not None:
        result.portal_us = Summary()
    for run in range(plan.runs):
        medians: dict[str, float] = {}
        for name in alternate(["async", "sync"], run):
            gc.collect()
            if name == "async":
                samples = loop.run_until_complete(latencies(sdk.server_info, plan.calls))
            else:
                samples = sync_latencies(client.server_info, plan.calls)
            medians[name] = median_us(samples)
        result.async_us.add(medians["async"])
        result.sync_us.add(medians["sync"])
        result.added_us.add(medians["sync"] - medians["async"])
        if result.portal_us is not None:
            result.portal_us.add(median_us(portal_round_trip(plan.calls) or [0]))
        progress(f"(b) run {run + 1}/{plan.runs} done")
    return result


def report_sync(table: Table, result: SyncResult, plan: Plan) -> None:
    table.title(
        f"(b) blocking facade: latency per call, median of {plan.calls} sequential calls per run"
    )
    table.header("us")
    table.row("await AsyncClient.server_info()", result.async_us)
    table.row("Client.server_info()  (blocking facade)", result.sync_us)
    table.row("added by the facade (sync - async, per run)", result.added_us)
    if result.portal_us is not None:
        table.row("  bare portal round trip (no-op coroutine)", result.portal_us)
    table.ratio("added latency per call (median)", result.added_us.median, GOAL_SYNC_ADDED_US, "us")


# -- (c) CPU per request at concurrency 200 ----------------------------------------------------


@dataclass
class ConcurrencyResult:
    sdk_repr: str
    cpu_us: dict[str, Summary] = field(default_factory=dict)
    rps: dict[str, Summary] = field(default_factory=dict)


async def bench_concurrency(server: ServerProcess, plan: Plan) -> ConcurrencyResult:
    async with sdk_client(server) as sdk:
        await sdk.server_info()
        limits = sdk_limits(sdk)
        async with raw_httpx(server, limits) as http, raw_aiohttp(server, limits) as session:
            calls: dict[str, Call] = {
                "aiosdk": sdk.server_info,
                "aiohttp": aiohttp_call(session, f"{server.url}/api/v1/"),
                "httpx": httpx_call(http),
            }
            result = ConcurrencyResult(repr(sdk))
            for name, call in calls.items():
                result.cpu_us[name], result.rps[name] = Summary(), Summary()
                await burst(call, plan.concurrency, plan.concurrency)  # opens the connections
            for run in range(plan.runs):
                names = ["aiosdk", "aiohttp"] + (["httpx"] if run < plan.httpx_runs else [])
                for name in alternate(names, run):
                    cpu, wall = await burst(calls[name], plan.requests, plan.concurrency)
                    result.cpu_us[name].add(cpu / plan.requests * 1e6)
                    result.rps[name].add(plan.requests / wall)
                    progress(f"(c) run {run + 1}/{plan.runs} {name}: {wall:.1f} s wall")
            return result


def report_concurrency(table: Table, result: ConcurrencyResult, plan: Plan) -> None:
    table.title(
        f"(c) {plan.requests} small requests at concurrency {plan.concurrency}: "
        f"client CPU time per request (time.process_time)"
    )
    table.header("us CPU")
    cpu, rps = result.cpu_us, result.rps
    table.row("aiosdk  server_info()", cpu["aiosdk"])
    table.row("httpx   default transport (fewer runs, slow)", cpu["httpx"])
    table.row("aiohttp ClientSession", cpu["aiohttp"])
    table.ratio(
        "ratio of medians aiosdk / aiohttp",
        cpu["aiosdk"].median / cpu["aiohttp"].median,
        GOAL_CPU_RATIO,
    )
    table.text(
        f"(info) httpx / aiohttp: {cpu['httpx'].median / cpu['aiohttp'].median:.1f}x; "
        f"raw httpx ran {cpu['httpx'].runs} time(s) only: its default transport "
        f"takes seconds per batch at c={plan.concurrency}"
    )
    table.header("requests/s")
    for name in ("aiosdk", "httpx", "aiohttp"):
        table.row(f"{name} throughput (wall)", rps[name], digits=0)


# -- main --------------------------------------------------------------------------------------


def header(table: Table, server: ServerProcess, pinning: Pinning, plan: Plan, quick: bool) -> None:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "QUICK smoke run, not for quoting" if quick else "full run"
    table.title(f"aiosdk client benchmark ({mode}), {now}")
    table.text(machine_line() + f", aiosdk {aiosdk.__version__}")
    table.text(pinning.describe() + "; asyncio default event loop")
    command = shlex.join(server.argv).replace(server.token, "<token>")
    table.text(f"server: {command} (pid {server.pid})")
    table.text(f"        HTTP {server.url}, gRPC {server.grpc}")
    table.text(f"runs: {plan.runs} per figure unless noted; figures are median [min, max] of runs")


def run_all(server: ServerProcess, pinning: Pinning, plan: Plan, quick: bool) -> Table:
    table = Table()
    header(table, server, pinning, plan, quick)
    progress("(a) sequential latency")
    sequential = asyncio.run(bench_sequential(server, plan))
    progress("(b) blocking facade")
    sync = bench_sync(server, plan)
    progress("(c) concurrency")
    concurrency = asyncio.run(bench_concurrency(server, plan))
    table.text(f"aiosdk: {sequential.sdk_repr}")
    table.text(f"        {sync.client_repr}")
    report_sequential(table, sequential, plan)
    report_sync(table, sync, plan)
    report_concurrency(table, concurrency, plan)
    return table


def profile(server: ServerProcess, who: str, plan: Plan) -> None:
    """cProfile ``plan.calls`` sequential calls of ``who`` and print the top functions."""

    async def main() -> None:
        async with sdk_client(server) as sdk:
            await sdk.server_info()
            async with raw_httpx(server, sdk_limits(sdk), sdk_transport_class(sdk)) as http:
                call = sdk.server_info if who == "aiosdk" else httpx_call(http)
                await latencies(call, plan.warmup)
                profiler = cProfile.Profile()
                profiler.enable()
                await latencies(call, plan.calls)
                profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)

    asyncio.run(main())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (< 30 s)")
    parser.add_argument(
        "--server-command",
        help="the server command before its options (default: aiosdk serve)",
    )
    parser.add_argument(
        "--profile",
        choices=["aiosdk", "httpx"],
        help="print a cProfile of sequential calls instead of the table",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    pinning = plan_pinning()
    command = shlex.split(args.server_command) if args.server_command else default_server_command()
    started = time.perf_counter()
    pinning.pin_client()  # before any thread starts: every client thread inherits the core
    with ServerProcess(command, pinning) as server:
        progress(f"server up at {server.url} (pid {server.pid}); {pinning.describe()}")
        if args.profile:
            profile(server, args.profile, plan)
            return 0
        table = run_all(server, pinning, plan, args.quick)
    table.text("")
    table.text(f"total time {time.perf_counter() - started:.0f} s")
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
