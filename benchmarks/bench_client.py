"""How much aiosdk adds over raw HTTP clients, against the reference server in its own process.

Usage: python benchmarks/bench_client.py [--quick] [--server-command CMD] [--profile WHO]

Starts ``aiosdk serve`` as a separate process (free ports, a temporary data directory, a known
admin token), pins server and client to different cores where possible, and prints a table:

(a) sequential ``await client.server_info()`` (``GET /api/v1/``) against the same GET with a raw
    ``httpx.AsyncClient`` (same limits, keep-alive, auth header, transport class): per-call latency
    medians, ratio aiosdk/httpx (goal <= 1.10), and client CPU per call;
(b) the blocking facade: ``aiosdk.Client.server_info()`` against
    ``await AsyncClient.server_info()``, the added latency per call in microseconds (goal <= 50),
    with the bare hand-offs (a no-op coroutine, a no-op plain function) and, for scale, what
    running the async call in a task of its own costs without any thread (the facade runs each
    call in a fresh task);
(c) small requests at concurrency 200: client CPU time per request of aiosdk, raw httpx (its
    default transport) and raw aiohttp, ratio aiosdk/aiohttp (goal <= 1.5).

In (a) and (b) the clients take turns in blocks of calls within each run, so that load elsewhere
on the machine hits them alike. Every figure is the median of several runs, shown with the min
and max. Progress goes to stderr, the table to stdout. ``--profile aiosdk`` (or ``httpx``)
prints a cProfile of sequential calls instead of the table.
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
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
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
    plan_pinning,
    server_header,
)

Call = Callable[[], Awaitable[object]]
Timed = tuple[list[int], float]  # nanoseconds of each call, client CPU seconds of them all
BlockRunner = Callable[[int], Awaitable[Timed]]

GOAL_SEQUENTIAL_RATIO = 1.10
GOAL_SYNC_ADDED_US = 50.0
GOAL_CPU_RATIO = 1.0


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    calls: int  # sequential calls per client per run, sections (a) and (b)
    block: int  # clients take turns every `block` calls
    warmup: int  # calls per client before measuring
    runs: int  # runs of (a), (b) and of aiosdk/aiohttp in (c)
    requests: int  # requests per run in (c)
    concurrency: int
    slow_runs: int  # runs in (c) of raw httpx, and of any client whose run takes > SLOW_RUN_SECONDS


FULL = Plan(calls=2000, block=10, warmup=200, runs=5, requests=2000, concurrency=200, slow_runs=2)
QUICK = Plan(calls=200, block=10, warmup=50, runs=2, requests=400, concurrency=200, slow_runs=1)
# httpx's default transport needs ~20 s per 2,000 requests at concurrency 200: such a client gets
# `slow_runs` runs only, so that a full run stays within a few minutes.
SLOW_RUN_SECONDS = 8.0


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- clients -----------------------------------------------------------------------------------


def sdk_limits(client: aiosdk.AsyncClient) -> httpx.Limits:
    """The pool limits ``client`` uses (private attributes: this is a benchmark)."""
    return client._ctx.transport.limits


def sdk_transport_class(client: aiosdk.AsyncClient) -> type[httpx.AsyncBaseTransport]:
    """The class of the HTTP transport under ``client`` (after its first request)."""
    pool = client._ctx.transport._pool
    return type(pool.transport) if pool is not None else httpx.AsyncHTTPTransport


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
    """A plain ``aiohttp.ClientSession`` with as many connections as aiosdk's pool."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limits.max_connections or 0),
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=aiohttp.ClientTimeout(total=30.0),
    )


def httpx_call(client: httpx.AsyncClient) -> Call:
    """``GET /api/v1/``, checked and decoded: the least a caller of raw httpx would do."""

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
        await client.server_info()  # opens the pool, so that repr() names the transport
        yield client


# -- measuring ---------------------------------------------------------------------------------


async def timed_async(call: Call, n: int) -> Timed:
    """``n`` sequential awaited calls: the nanoseconds of each, and the CPU seconds of all."""
    out: list[int] = []
    clock = time.perf_counter_ns
    cpu = time.process_time()
    for _ in range(n):
        started = clock()
        await call()
        out.append(clock() - started)
    return out, time.process_time() - cpu


def timed_sync(call: Callable[[], object], n: int) -> Timed:
    """``n`` sequential blocking calls (CPU includes the facade's loop thread)."""
    out: list[int] = []
    clock = time.perf_counter_ns
    cpu = time.process_time()
    for _ in range(n):
        started = clock()
        call()
        out.append(clock() - started)
    return out, time.process_time() - cpu


def async_runner(call: Call) -> BlockRunner:
    return lambda n: timed_async(call, n)


def sync_runner(call: Callable[[], object]) -> BlockRunner:
    # Blocks this loop's thread on purpose: the facade runs the call on its own loop thread.
    async def run(n: int) -> Timed:
        return timed_sync(call, n)

    return run


def alternate(names: list[str], turn: int) -> list[str]:
    """Alternate the order between turns so that no client always goes first."""
    return names if turn % 2 == 0 else names[::-1]


@dataclass
class PerCall:
    """Per-run figures of one client: median latency and CPU per call, in microseconds."""

    latency_us: Summary = field(default_factory=Summary)
    cpu_us: Summary = field(default_factory=Summary)


async def interleaved_run(
    runners: dict[str, BlockRunner], calls: int, block: int
) -> dict[str, tuple[float, float]]:
    """One run: each client makes ``calls`` calls, taking turns every ``block`` calls.

    Returns, per client, the median latency and the CPU time per call, both in microseconds.
    """
    samples: dict[str, list[int]] = {name: [] for name in runners}
    cpu: dict[str, float] = dict.fromkeys(runners, 0.0)
    gc.collect()
    for turn in range(max(1, calls // block)):
        for name in alternate(list(runners), turn):
            latencies, seconds = await runners[name](block)
            samples[name].extend(latencies)
            cpu[name] += seconds
    return {
        name: (statistics.median(samples[name]) / 1e3, cpu[name] / len(samples[name]) * 1e6)
        for name in runners
    }


async def interleaved_runs(
    runners: dict[str, BlockRunner], plan: Plan, section: str
) -> dict[str, PerCall]:
    for runner in runners.values():
        await runner(plan.warmup)
    results = {name: PerCall() for name in runners}
    for run in range(plan.runs):
        for name, (latency, cpu) in (
            await interleaved_run(runners, plan.calls, plan.block)
        ).items():
            results[name].latency_us.add(latency)
            results[name].cpu_us.add(cpu)
        progress(f"{section} run {run + 1}/{plan.runs} done")
    return results


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


# -- (a) sequential latency --------------------------------------------------------------------


@dataclass
class SequentialResult:
    sdk_repr: str
    transport: str
    clients: dict[str, PerCall]


async def bench_sequential(server: ServerProcess, plan: Plan) -> SequentialResult:
    async with AsyncExitStack() as stack:
        sdk = await stack.enter_async_context(sdk_client(server))
        limits, transport_class = sdk_limits(sdk), sdk_transport_class(sdk)
        same = await stack.enter_async_context(raw_httpx(server, limits, transport_class))
        runners = {"aiosdk": async_runner(sdk.server_info), "httpx": async_runner(httpx_call(same))}
        if transport_class is not httpx.AsyncHTTPTransport:
            default = await stack.enter_async_context(raw_httpx(server, limits))
            runners["httpx-default"] = async_runner(httpx_call(default))
        clients = await interleaved_runs(runners, plan, "(a)")
        return SequentialResult(repr(sdk), transport_class.__name__, clients)


def report_sequential(table: Table, result: SequentialResult, plan: Plan) -> None:
    table.title(
        f"(a) sequential GET /api/v1/, {plan.calls} calls per client per run, clients taking "
        f"turns every {plan.block} calls"
    )
    labels = {
        "aiosdk": "aiosdk  await client.server_info()",
        "httpx": f"httpx   AsyncClient.get() [{result.transport}]",
        "httpx-default": "httpx   AsyncClient.get() [AsyncHTTPTransport]",
    }
    clients = result.clients
    table.header("us, median latency per call")
    for name, figures in clients.items():
        table.row(labels[name], figures.latency_us)
    sdk, raw = clients["aiosdk"], clients["httpx"]
    table.ratio(
        "ratio of medians aiosdk / httpx",
        sdk.latency_us.median / raw.latency_us.median,
        GOAL_SEQUENTIAL_RATIO,
    )
    table.header("us, client CPU per call")
    for name, figures in clients.items():
        table.row(labels[name], figures.cpu_us)
    table.text(
        f"aiosdk adds {sdk.latency_us.median - raw.latency_us.median:.1f} us latency and "
        f"{sdk.cpu_us.median - raw.cpu_us.median:.1f} us client CPU per call over raw httpx"
    )


# -- (b) the blocking facade -------------------------------------------------------------------


@dataclass
class SyncResult:
    client_repr: str
    clients: dict[str, PerCall]
    added_us: Summary
    task_us: Summary


async def _noop() -> None:
    return None


def _nothing() -> None:
    return None


def portal_runner() -> BlockRunner | None:
    """The facade's bare hand-off (a no-op coroutine), if its private portal is importable."""
    try:
        from aiosdk._core import portal
    except ImportError:
        return None
    return sync_runner(lambda: portal.call(_noop()))


def plain_function_runner() -> BlockRunner | None:
    """The hand-off of a plain function (sync members of async classes), if there is one."""
    try:
        from aiosdk._core.portal import finished_sync
    except ImportError:
        return None
    return sync_runner(lambda: finished_sync(_nothing).result())


def per_run_difference(a: Summary, b: Summary) -> Summary:
    return Summary([x - y for x, y in zip(a.values, b.values, strict=True)])


async def bench_sync(server: ServerProcess, plan: Plan) -> SyncResult:
    async with sdk_client(server) as sdk:
        with aiosdk.Client(server.url, token=server.token) as client:
            runners = {
                "async": async_runner(sdk.server_info),
                "sync": sync_runner(client.server_info),
            }
            if (portal := portal_runner()) is not None:
                runners["portal"] = portal
            clients = await interleaved_runs(runners, plan, "(b)")
            # What the figures above are made of, measured apart so as not to change them.
            extras = {
                "async": async_runner(sdk.server_info),
                "task": async_runner(lambda: asyncio.ensure_future(sdk.server_info())),
            }
            if (plain := plain_function_runner()) is not None:
                extras["portal-sync"] = plain
            parts = await interleaved_runs(extras, plan, "(b) parts")
            clients |= {name: figures for name, figures in parts.items() if name != "async"}
            return SyncResult(
                repr(client),
                clients,
                per_run_difference(clients["sync"].latency_us, clients["async"].latency_us),
                per_run_difference(parts["task"].latency_us, parts["async"].latency_us),
            )


def report_sync(table: Table, result: SyncResult, plan: Plan) -> None:
    table.title(
        f"(b) blocking facade, {plan.calls} sequential calls per run, taking turns every "
        f"{plan.block} calls"
    )
    table.header("us, median latency per call")
    clients = result.clients
    table.row("await AsyncClient.server_info()", clients["async"].latency_us)
    table.row("Client.server_info()  (blocking facade)", clients["sync"].latency_us)
    table.row("added by the facade (sync - async, per run)", result.added_us)
    if "portal" in clients:
        table.row("  bare portal round trip (no-op coroutine)", clients["portal"].latency_us)
    if "portal-sync" in clients:
        table.row("  bare hand-off of a plain function (no-op)", clients["portal-sync"].latency_us)
    table.row("  (info) async call in its own task (- async)", result.task_us)
    table.ratio(
        "added latency per call (median)", result.added_us.median, GOAL_SYNC_ADDED_US, "us", 1
    )
    table.header("us, client CPU per call (both threads)")
    table.row("await AsyncClient.server_info()", clients["async"].cpu_us)
    table.row("Client.server_info()  (blocking facade)", clients["sync"].cpu_us)


# -- (c) CPU per request at concurrency 200 ----------------------------------------------------


@dataclass
class ConcurrencyResult:
    sdk_repr: str
    transport: str
    cpu_us: dict[str, Summary] = field(default_factory=dict)
    rps: dict[str, Summary] = field(default_factory=dict)


async def bench_concurrency(server: ServerProcess, plan: Plan) -> ConcurrencyResult:
    async with AsyncExitStack() as stack:
        sdk = await stack.enter_async_context(sdk_client(server))
        limits, transport_class = sdk_limits(sdk), sdk_transport_class(sdk)
        http = await stack.enter_async_context(raw_httpx(server, limits))
        session = await stack.enter_async_context(raw_aiohttp(server, limits))
        calls: dict[str, Call] = {
            "aiosdk": sdk.server_info,
            "aiohttp": aiohttp_call(session, f"{server.url}/api/v1/"),
            "httpx": httpx_call(http),
        }
        if transport_class is not httpx.AsyncHTTPTransport:
            same = await stack.enter_async_context(raw_httpx(server, limits, transport_class))
            calls["httpx-sdk-transport"] = httpx_call(same)
        result = ConcurrencyResult(repr(sdk), transport_class.__name__)
        await concurrency_runs(calls, plan, result)
        return result


async def concurrency_runs(calls: dict[str, Call], plan: Plan, result: ConcurrencyResult) -> None:
    """Warm every client up, then alternate them run by run; slow clients run fewer times."""
    for name, call in calls.items():
        result.cpu_us[name], result.rps[name] = Summary(), Summary()
        await burst(call, plan.concurrency, plan.concurrency)  # opens the connections
    slow = {"httpx"}
    for run in range(plan.runs):
        names = [name for name in calls if run < plan.slow_runs or name not in slow]
        for name in alternate(names, run):
            cpu, wall = await burst(calls[name], plan.requests, plan.concurrency)
            result.cpu_us[name].add(cpu / plan.requests * 1e6)
            result.rps[name].add(plan.requests / wall)
            progress(f"(c) run {run + 1}/{plan.runs} {name}: {wall:.1f} s wall")
            if wall > SLOW_RUN_SECONDS:
                slow.add(name)


def report_concurrency(table: Table, result: ConcurrencyResult, plan: Plan) -> None:
    table.title(
        f"(c) {plan.requests} small requests at concurrency {plan.concurrency}, "
        f"client CPU time per request (time.process_time)"
    )
    table.header("us CPU per request")
    cpu, rps = result.cpu_us, result.rps
    labels = {
        "aiosdk": "aiosdk  server_info()",
        "httpx-sdk-transport": f"httpx   AsyncClient.get() [{result.transport}]",
        "httpx": "httpx   AsyncClient.get() [AsyncHTTPTransport]",
        "aiohttp": "aiohttp ClientSession.get()",
    }
    labels = {name: label for name, label in labels.items() if name in cpu}
    for name, label in labels.items():
        table.row(label, cpu[name], note=few_runs_note(cpu[name], plan))
    table.ratio(
        "ratio of medians aiosdk / aiohttp",
        cpu["aiosdk"].median / cpu["aiohttp"].median,
        GOAL_CPU_RATIO,
    )
    transports = {"httpx-sdk-transport": result.transport, "httpx": "AsyncHTTPTransport"}
    for name, transport in transports.items():
        if name in cpu:
            label = f"(info) httpx [{transport}] / aiohttp"
            table.text(
                f"{label:<{table.label_width}} {cpu[name].median / cpu['aiohttp'].median:>9.2f} x"
            )
    table.text(
        f"* fewer runs: a client whose run takes over {SLOW_RUN_SECONDS:g} s runs "
        f"{plan.slow_runs} time(s) only"
    )
    table.text(
        f"  (httpx's default transport needs ~20 s of CPU per {FULL.requests} requests at "
        f"c={plan.concurrency})"
    )
    table.header("requests/s, wall")
    for name, label in labels.items():
        table.row(label, rps[name], digits=0, note=few_runs_note(rps[name], plan))


def few_runs_note(summary: Summary, plan: Plan) -> str:
    return "* fewer runs" if summary.runs < plan.runs else ""


# -- main --------------------------------------------------------------------------------------


async def run_all(server: ServerProcess, pinning: Pinning, plan: Plan, quick: bool) -> Table:
    table = Table()
    server_header(
        table,
        "aiosdk client benchmark",
        server,
        pinning,
        runs=plan.runs,
        quick=quick,
        versions=f", aiosdk {aiosdk.__version__}",
        figures_note=" unless noted",
    )
    progress("(a) sequential latency, aiosdk vs raw httpx")
    sequential = await bench_sequential(server, plan)
    progress("(b) blocking facade")
    sync = await bench_sync(server, plan)
    progress(f"(c) concurrency {plan.concurrency}")
    concurrency = await bench_concurrency(server, plan)
    table.text(f"aiosdk: {sequential.sdk_repr}")
    table.text(f"        {sync.client_repr}")
    report_sequential(table, sequential, plan)
    report_sync(table, sync, plan)
    report_concurrency(table, concurrency, plan)
    return table


async def profile(server: ServerProcess, who: str, plan: Plan) -> None:
    """cProfile ``plan.calls`` sequential calls of ``who`` and print the top functions."""
    async with AsyncExitStack() as stack:
        sdk = await stack.enter_async_context(sdk_client(server))
        http = await stack.enter_async_context(
            raw_httpx(server, sdk_limits(sdk), sdk_transport_class(sdk))
        )
        call = sdk.server_info if who == "aiosdk" else httpx_call(http)
        await timed_async(call, plan.warmup)
        profiler = cProfile.Profile()
        profiler.enable()
        await timed_async(call, plan.calls)
        profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (< 30 s)")
    parser.add_argument(
        "--server-command",
        help="the server command, before its options (default: aiosdk serve)",
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
            asyncio.run(profile(server, args.profile, plan))
            return 0
        table = asyncio.run(run_all(server, pinning, plan, args.quick))
    table.text("")
    table.text(f"total time {time.perf_counter() - started:.0f} s")
    print(table.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
