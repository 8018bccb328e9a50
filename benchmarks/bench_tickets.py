"""Sessions and tickets: reading a server-side view by ticket vs reading everything, and what
the session adds to a unary gRPC call.

Usage: python benchmarks/bench_tickets.py [--quick] [--server-command CMD]

Starts ``aiosdk serve`` as a separate process (free ports, a temporary data directory), pins
server and client to different cores where possible, seeds a table of 100,000 rows (an int64
``t``, a float64 ``v`` uniform in [0, 1), and 8 more float64 columns: 8 MB) through the API
(untimed), and prints a table:

(a) the view by ticket: ``s.export(path)`` -> ``s.query(t, where=Key("v") > 0.9,
    columns=["t", "v"], sort="-t")`` -> ``await s.open(view).read(as_="arrow")`` (two gRPC
    calls, the view's metadata and its Arrow stream over HTTP), against the whole table read
    (``tbl.read(as_="arrow")``) then filtered, cut to the two columns and sorted on the client
    with pyarrow.compute; each run's results are checked equal. Time per run, and the bytes the
    server sent for each: the Arrow stream's length for the data (``GET /api/v1/table/full``,
    identity encoding, as the SDK reads) plus, by ticket, the protobuf replies' lengths and the
    metadata document's. Exports made in a run are released after it (untimed).
(b) the session's round trip: ``await s.applications()`` — one unary ``ListApplications`` call
    through the SDK's request path (retry policy, deadline, error mapping) — against the same
    call with a raw grpclib stub on its own channel to the same server; the clients take turns
    every few calls within each run. Goal: ratio of medians <= 1.2.

Every figure is the median of several runs, with min and max. Progress goes to stderr, the
table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import shlex
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from grpclib.client import Channel

import aiosdk
from aiosdk.catalog.queries import Key, encode_filters
from aiosdk.proto import (
    CloseSessionRequest,
    ExportRequest,
    ListApplicationsRequest,
    OpenSessionRequest,
    QueryRequest,
    SessionServiceStub,
    SortKey,
    TableView,
)

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

GOAL_UNARY_RATIO = 1.2
NAMESPACE = "bench"
THRESHOLD = 0.9
COLUMNS = ["t", "v"]
SEED = 20261202


@dataclass(frozen=True)
class Plan:
    rows: int
    runs: int  # runs of (a) and of (b)
    calls: int  # unary calls per client per run in (b)
    block: int  # (b)'s clients take turns every `block` calls
    warmup: int


FULL = Plan(rows=100_000, runs=7, calls=2000, block=10, warmup=200)
QUICK = Plan(rows=100_000, runs=2, calls=200, block=10, warmup=50)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(SEED)
    columns = {"t": rng.permutation(rows).astype(np.int64), "v": rng.random(rows)}
    columns |= {f"x{i}": rng.random(rows) for i in range(8)}
    return pa.table(columns)


def client_side(table: pa.Table) -> pa.Table:
    """What the view computes, on the client."""
    kept = table.filter(pc.greater(table["v"], THRESHOLD)).select(COLUMNS)
    return kept.sort_by([("t", "descending")])


@dataclass
class Figures:
    """Per-run seconds of one way of getting the result, and of its phases."""

    seconds: Summary = field(default_factory=Summary)
    phases: dict[str, Summary] = field(default_factory=dict)
    nbytes: int = 0
    rows: int = 0

    def phase(self, name: str, started: float) -> float:
        """Record the phase ``name`` that started at ``started``; now."""
        now = time.perf_counter()
        self.phases.setdefault(name, Summary()).add(now - started)
        return now

    def clear(self) -> None:
        for summary in (self.seconds, *self.phases.values()):
            summary.values.clear()


async def timed(call: Callable[[], Awaitable[pa.Table]], figures: Figures) -> pa.Table:
    gc.collect()
    started = time.perf_counter()
    result = await call()
    figures.seconds.add(time.perf_counter() - started)
    return result


async def seed(server: ServerProcess, plan: Plan) -> tuple[str, str, pa.Table]:
    """A user with the table at ``bench/data/events``: (their API token, the path, the table)."""
    table = make_table(plan.rows)
    password = secrets.token_urlsafe(16)
    async with aiosdk.AsyncClient(server.url, token=server.token) as admin:
        await admin.admin.create_user(NAMESPACE, password=password)
    async with aiosdk.AsyncClient(server.url) as client:
        await client.login(username=NAMESPACE, password=password)
        token = (await client.tokens.create("bench")).secret.reveal()
        grp = await client.catalog.create_container(f"{NAMESPACE}/data")
        await grp.write_dataframe(table, key="events")
    return token, f"{NAMESPACE}/data/events", table


async def body_length(http: httpx.AsyncClient, route: str) -> int:
    response = await http.get(route, headers={"Accept-Encoding": "identity"})
    response.raise_for_status()
    return len(response.content)


def raw_stub(server: ServerProcess, token: str) -> tuple[Channel, SessionServiceStub]:
    """A grpclib channel of its own to the server, and a SessionService stub with ``token``."""
    host, _, port = server.grpc.rpartition(":")
    channel = Channel(host.strip("[]"), int(port))
    return channel, SessionServiceStub(channel, metadata={"authorization": f"Bearer {token}"})


async def reply_bytes(server: ServerProcess, token: str, path: str) -> int:
    """The protobuf length of the Export and Query replies of (a)'s view, by raw calls."""
    channel, stub = raw_stub(server, token)
    try:
        session = await stub.open_session(OpenSessionRequest())
        sid = session.session_id
        exported = await stub.export(ExportRequest(session_id=sid, number=1, path=path))
        view = TableView(
            columns=COLUMNS,
            where_json=encode_filters([Key("v") > THRESHOLD]) or "",
            sort=[SortKey(column="t", descending=True)],
        )
        queried = await stub.query(
            QueryRequest(session_id=sid, source=exported.ticket, number=2, table=view)
        )
        await stub.close_session(CloseSessionRequest(session_id=sid))
        return len(bytes(exported)) + len(bytes(queried))
    finally:
        channel.close()


async def bench_views(
    server: ServerProcess, plan: Plan, token: str, path: str, table: pa.Table
) -> tuple[Figures, Figures]:
    expected = client_side(table)
    ticket, whole = Figures(), Figures()
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiosdk.AsyncClient(server.url, token=token) as client,
        httpx.AsyncClient(base_url=f"{server.url}/api/v1", headers=headers, timeout=60) as http,
        client.session() as s,
    ):
        tbl = await client.catalog.get(path)
        exports: list[aiosdk.tickets.ExportTicket] = []

        async def by_ticket() -> pa.Table:
            started = time.perf_counter()
            t = await s.export(path)
            started = ticket.phase("export (gRPC)", started)
            view = await s.query(t, where=Key("v") > THRESHOLD, columns=COLUMNS, sort="-t")
            started = ticket.phase("query (gRPC; computed on the server)", started)
            exports.extend((t, view))
            got: pa.Table = await s.open(view).read(as_="arrow")
            ticket.phase("open(view).read(as_='arrow') (HTTP)", started)
            return got

        async def everything() -> pa.Table:
            started = time.perf_counter()
            got = await tbl.read(as_="arrow")
            started = whole.phase("tbl.read(as_='arrow') (HTTP)", started)
            result = client_side(got)
            whole.phase("filter, select, sort (pyarrow.compute)", started)
            return result

        for run in range(-1, plan.runs):  # run -1: a warm-up, checked like every run
            order = [(by_ticket, ticket), (everything, whole)]
            for call, figures in order if run % 2 else order[::-1]:
                got = await timed(call, figures)
                if not got.equals(expected):
                    raise RuntimeError(f"{call.__name__}: the result differs from the expected")
            if run < 0:
                ticket.clear()
                whole.clear()
                view_path = s.info(exports[-1]).path
                whole.nbytes = await body_length(http, f"/table/full/{path}")
                metadata = await body_length(http, f"/catalog/nodes/{view_path}")
                data = await body_length(http, f"/table/full/{view_path}")
                ticket.nbytes = data + metadata + await reply_bytes(server, token, path)
                ticket.rows = whole.rows = expected.num_rows
            for export in exports:
                await s.release(export)
            exports.clear()
            if run >= 0:
                progress(
                    f"(a) run {run + 1}/{plan.runs}: by ticket {ticket.seconds.values[-1]:.3f} s,"
                    f" whole read {whole.seconds.values[-1]:.3f} s"
                )
    return ticket, whole


@dataclass
class PerCall:
    latency_us: Summary = field(default_factory=Summary)


async def timed_calls(call: Callable[[], Awaitable[object]], n: int) -> list[int]:
    out: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        started = clock()
        await call()
        out.append(clock() - started)
    return out


async def bench_unary(server: ServerProcess, plan: Plan, token: str) -> dict[str, PerCall]:
    channel, stub = raw_stub(server, token)
    try:
        async with aiosdk.AsyncClient(server.url, token=token) as client, client.session() as s:
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "aiosdk": s.applications,
                "grpclib": lambda: stub.list_applications(ListApplicationsRequest()),
            }
            for call in calls.values():
                await timed_calls(call, plan.warmup)
            results = {name: PerCall() for name in calls}
            for run in range(plan.runs):
                samples: dict[str, list[int]] = {name: [] for name in calls}
                gc.collect()
                for turn in range(plan.calls // plan.block):
                    names = list(calls) if turn % 2 == 0 else list(calls)[::-1]
                    for name in names:
                        samples[name] += await timed_calls(calls[name], plan.block)
                for name, values in samples.items():
                    results[name].latency_us.add(statistics.median(values) / 1e3)
                progress(f"(b) run {run + 1}/{plan.runs} done")
            return results
    finally:
        channel.close()


def report(
    table: Table, plan: Plan, views: tuple[Figures, Figures], unary: dict[str, PerCall]
) -> None:
    ticket, whole = views
    table.title(
        f"(a) v > {THRESHOLD}, columns {COLUMNS}, sorted by -t, of {plan.rows:,} rows x 10"
        f" columns: {ticket.rows:,} rows result"
    )
    table.header("ms per run")
    ms = lambda s: Summary([v * 1e3 for v in s.values])  # noqa: E731
    table.row("by ticket: export, query, read", ms(ticket.seconds))
    for name, summary in ticket.phases.items():
        table.row(f"  {name}", ms(summary))
    table.row("whole read, then filter/select/sort on client", ms(whole.seconds))
    for name, summary in whole.phases.items():
        table.row(f"  {name}", ms(summary))
    table.text(
        f"time ratio by ticket / whole read: {ticket.seconds.median / whole.seconds.median:.2f}x"
    )
    table.text(
        f"bytes sent by the server: by ticket {ticket.nbytes:,} B (view's Arrow stream and its"
        f" metadata, the Export/Query replies), whole read {whole.nbytes:,} B;"
        f" ratio {whole.nbytes / ticket.nbytes:.1f}x"
    )
    table.title(
        f"(b) unary ListApplications, {plan.calls} calls per client per run, taking turns every"
        f" {plan.block} calls"
    )
    table.header("us, median latency per call")
    table.row("aiosdk  await session.applications()", unary["aiosdk"].latency_us)
    table.row("grpclib stub.list_applications()", unary["grpclib"].latency_us)
    sdk, raw = unary["aiosdk"].latency_us.median, unary["grpclib"].latency_us.median
    table.ratio("ratio of medians aiosdk / grpclib", sdk / raw, GOAL_UNARY_RATIO)


async def run_all(server: ServerProcess, pinning: Pinning, plan: Plan, quick: bool) -> Table:
    table = Table()
    server_header(
        table,
        "aiosdk sessions and tickets benchmark",
        server,
        pinning,
        runs=plan.runs,
        quick=quick,
        versions=f", aiosdk {aiosdk.__version__}, pyarrow {pa.__version__}",
    )
    progress("seeding")
    token, path, data = await seed(server, plan)
    progress("(a) a view by ticket vs the whole table")
    views = await bench_views(server, plan, token, path, data)
    progress("(b) unary round trip")
    unary = await bench_unary(server, plan, token)
    report(table, plan, views, unary)
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--server-command",
        help="the server command, before its options (default: aiosdk serve)",
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
        table = asyncio.run(run_all(server, pinning, plan, args.quick))
    table.text("")
    table.text(f"total time {time.perf_counter() - started:.0f} s")
    print(table.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
