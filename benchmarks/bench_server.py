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
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
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

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools", loop="asyncio",
            log_level="warning", access_log=False, server_header=False, lifespan="off")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    rounds, seconds = (2, 2.0) if args.quick else (args.rounds, args.seconds)
    if shutil.which("wrk") is None:
        print("bench_server.py needs wrk (Debian: apt install wrk)", file=sys.stderr)
        return 1

    pinning = plan_pinning()
    with ServerProcess(default_server_command(), pinning) as ours:
        url = f"{ours.url}/api/v1/"
        body = httpx.get(url, headers={"Authorization": f"Bearer {ours.token}"}).json()
        port = free_port()
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_APP, str(port), json.dumps(body)],
            preexec_fn=pinning.server_preexec(),
        )
        try:
            bare_url = f"http://127.0.0.1:{port}/api/v1/"
            for _ in range(200):
                try:
                    if httpx.get(bare_url).json() == body:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            rates = {"ours": Summary(), "bare": Summary()}
            wrk(url, 1, pinning.client, ours.token)  # warm-up
            wrk(bare_url, 1, pinning.client, None)
            for index in range(rounds):
                print(f"round {index + 1} of {rounds}", file=sys.stderr)
                rates["ours"].add(wrk(url, seconds, pinning.client, ours.token))
                rates["bare"].add(wrk(bare_url, seconds, pinning.client, None))
        finally:
            bare.terminate()
            bare.wait(10)

    table = Table(label_width=52)
    table.title(machine_line())
    table.text(pinning.describe())
    table.title(
        f"GET /api/v1/, wrk -c{_CONNECTIONS} for {seconds:g} s per round, "
        f"servers on one core, taking turns"
    )
    table.header("requests/s")
    table.row("aiosdk serve, authenticated (token, middleware, DB)", rates["ours"], digits=0)
    table.row("bare FastAPI route, same JSON, same uvicorn", rates["bare"], digits=0)
    ratio = rates["ours"].median / rates["bare"].median
    table.text(
        f"{'ratio of medians aiosdk / bare FastAPI':<52} {ratio:>9.2f} x   goal >= {_GOAL:g} x  "
        f"{'PASS' if ratio >= _GOAL else 'MISS'}"
    )
    print(table.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
