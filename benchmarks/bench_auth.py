"""What authorization costs: the same small call as the admin token, a user's session, a
user's API token and a user's password (Basic, a login without a session).

The reference server runs as its own process (pinned to one core, the client to the other, as
in bench_client.py). Every client makes the same calls, taking turns every 10 calls so that
drift in the machine hits them alike: ``GET /api/v1/`` (authentication only) and
``GET /api/v1/organizations/lab`` (authentication, then authorization: the admin token may read
any organization, a user needs its membership, which the server looks up). Goal (issue 8): a
session's call costs at most 1.05x the admin token's, ratio of median latencies.

    python benchmarks/bench_auth.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import datetime, timezone
from pathlib import Path

import aiosdk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    Pinning,
    ServerProcess,
    Table,
    default_server_command,
    machine_line,
    plan_pinning,
)
from bench_client import FULL, QUICK, Call, Plan, async_runner, interleaved_runs, progress

GOAL_SESSION_RATIO = 1.05

Endpoint = Callable[[aiosdk.AsyncClient], Call]
ENDPOINTS: dict[str, Endpoint] = {
    "GET /api/v1/ (server_info: authentication)": lambda client: client.server_info,
    "GET /api/v1/organizations/lab (organization: + authorization)": (
        lambda client: lambda: client.organization("lab")
    ),
}


async def clients(stack: AsyncExitStack, server: ServerProcess) -> dict[str, aiosdk.AsyncClient]:
    """The admin token's client, and three of one user: session, API token, Basic."""
    admin = await stack.enter_async_context(aiosdk.AsyncClient(server.url, token=server.token))
    password = secrets.token_urlsafe(16)
    await admin.admin.create_user("bench", password=password)
    await admin.admin.create_organization("lab", owner="bench")
    session = await stack.enter_async_context(aiosdk.AsyncClient(server.url))
    await session.login(username="bench", password=password)
    token = await session.tokens.create("bench")
    api_token = await stack.enter_async_context(
        aiosdk.AsyncClient(server.url, token=token.secret.reveal())
    )
    basic = await stack.enter_async_context(aiosdk.AsyncClient(server.url))
    await basic.login(username="bench", password=password, no_session=True)
    return {"admin token": admin, "session": session, "API token": api_token, "basic": basic}


async def run_all(server: ServerProcess, pinning: Pinning, plan: Plan, quick: bool) -> Table:
    table = Table(label_width=40)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table.title(f"aiosdk authorization benchmark ({'QUICK' if quick else 'full'} run), {now}")
    table.text(machine_line() + f", aiosdk {aiosdk.__version__}")
    table.text(pinning.describe())
    table.text(f"server: {shlex.join(server.argv).replace(server.token, '<token>')}")
    table.text(f"figures: median, min and max over {plan.runs} runs of {plan.calls} calls each")
    async with AsyncExitStack() as stack:
        by_credential = await clients(stack, server)
        for endpoint, call_of in ENDPOINTS.items():
            progress(endpoint)
            runners = {name: async_runner(call_of(c)) for name, c in by_credential.items()}
            results = await interleaved_runs(runners, plan, endpoint)
            table.title(endpoint)
            table.header("us, median latency per call")
            for name, result in results.items():
                table.row(name, result.latency_us)
            admin = results["admin token"].latency_us.median
            ratio = results["session"].latency_us.median / admin
            table.ratio("ratio of medians session / admin token", ratio, GOAL_SESSION_RATIO)
            for name in ("API token", "basic"):
                table.text(
                    f"(info) {name} / admin token".ljust(table.label_width)
                    + f" {results[name].latency_us.median / admin:>9.2f} x"
                )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (< 30 s)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    pinning = plan_pinning()
    started = time.perf_counter()
    pinning.pin_client()
    with ServerProcess(default_server_command(), pinning, ["--log-level", "warning"]) as server:
        progress(f"server up at {server.url} (pid {server.pid}); {pinning.describe()}")
        table = asyncio.run(run_all(server, pinning, plan, args.quick))
    table.text("")
    table.text(f"total time {time.perf_counter() - started:.0f} s")
    print(table.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
