"""Server throughput: the authenticated ``GET /api/v1/`` against a bare FastAPI app.

Both servers run as separate processes pinned to the same core (one loaded at a time), with the
same uvicorn settings (httptools parser, asyncio loop, no access log); wrk loads them from another
core with 50 keep-alive connections. The bare app answers ``GET /api/v1/`` with the JSON our
server sends, with no authentication, middleware or database: what FastAPI alone costs. The
ratio of request rates says how much of the framework's speed the server keeps (goal >= 0.5).

    python benchmarks/bench_server.py [--quick] [--rounds N] [--seconds S]

Needs wrk (Debian: ``apt install wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

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

_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_GOAL = 0.5
_CONNECTIONS = 50

BARE_APP = """
import json, sys
import uvicorn
from fastapi import FastAPI

app = FastAPI()
body = json.loads(sys.argv[2])

@app.get("/api/v1/")
async def info() -> dict:
    return body

logged = sys.argv[3] == "logged"  # uvicorn's default: an access line per request
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools", loop="asyncio",
            log_level="info" if logged else "warning", access_log=logged, server_header=False,
            lifespan="off")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wrk(url: str, seconds: float, core: int | None, token: str | None) -> float:
    """Requests per second wrk gets from ``url`` (pinned to ``core``)."""
    command = ["wrk", "-t1", f"-c{_CONNECTIONS}", f"-d{seconds:g}s", url]
    if token is not None:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw error answers from {url}:\n{output}")
    match = _RATE.search(output)
    if match is None:
        raise RuntimeError(f"no request rate in wrk's output:\n{output}")
    return float(match.group(1))


@contextlib.contextmanager
def bare_app(body: object, pinning: Pinning, logged: bool) -> Iterator[str]:
    """The bare FastAPI app answering ``body`` on a free port, pinned like our server."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", BARE_APP, str(port), json.dumps(body), "logged" if logged else "-"],
        preexec_fn=pinning.server_preexec(),
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/v1/"
    try:
        for _ in range(200):
            try:
                if httpx.get(url).json() == body:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    rounds, seconds = (2, 2.0) if args.quick else (args.rounds, args.seconds)
    if shutil.which("wrk") is None:
        print("bench_server.py needs wrk (Debian: apt install wrk); skipped", file=sys.stderr)
        return 0  # benchmarks measure, they do not gate

    pinning = plan_pinning()
    variants = {
        "quiet": ["--log-level", "warning"],  # no line per request, like the bare app
        "logged": [],  # the default: an INFO line per request
    }
    rates = {name: Summary() for name in (*variants, "bare quiet", "bare logged")}
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(ServerProcess(default_server_command(), pinning, extra))
            for name, extra in variants.items()
        }
        first = servers["quiet"]
        body = httpx.get(
            f"{first.url}/api/v1/", headers={"Authorization": f"Bearer {first.token}"}
        ).json()
        targets = {
            name: (f"{server.url}/api/v1/", server.token) for name, server in servers.items()
        }
        for logged in (False, True):
            url = stack.enter_context(bare_app(body, pinning, logged))
            targets["bare logged" if logged else "bare quiet"] = (url, None)
        for url, token in targets.values():  # warm-up
            wrk(url, 1, pinning.client, token)
        for index in range(rounds):
            print(f"round {index + 1} of {rounds}", file=sys.stderr)
            for name, (url, token) in targets.items():
                rates[name].add(wrk(url, seconds, pinning.client, token))

    table = Table(label_width=52)
    table.title(machine_line())
    table.text(pinning.describe())
    table.title(
        f"GET /api/v1/, wrk -c{_CONNECTIONS} for {seconds:g} s per round, "
        f"servers on one core, taking turns"
    )
    table.header("requests/s")
    table.row("aiosdk serve --log-level warning, authenticated", rates["quiet"], digits=0)
    table.row("bare FastAPI route, same JSON, no access log", rates["bare quiet"], digits=0)
    table.row("aiosdk serve (default: a log line per request)", rates["logged"], digits=0)
    table.row("bare FastAPI route, uvicorn's access log", rates["bare logged"], digits=0)
    for name, logging in (("quiet", "no access log"), ("logged", "both logging")):
        ratio = rates[name].median / rates[f"bare {name}"].median
        verdict = "PASS" if ratio >= _GOAL else "MISS"
        label = f"ratio of medians aiosdk / bare, {logging}"
        table.text(f"{label:<52} {ratio:>9.2f} x   goal >= {_GOAL:g} x  {verdict}")
    print(table.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
