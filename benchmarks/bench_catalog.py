"""The catalog against Tiled, side by side in one run: a container of 10,000 small entries.

Usage: python benchmarks/bench_catalog.py [--quick] [--no-tiled] [--access-log]

Both servers get the same content (benchmarks/_catalog_content.py): a container "bench/big" of
10,000 containers with about 100 bytes of metadata each. Each server runs as its own process
pinned to one core, its client on the other, one server at a time (Tiled first). Seeding is not
timed. Measured, with the same keys on both sides:

(a) listing all keys of the container;
(b) 200 sequential metadata lookups (``await grp.get(key)`` / Tiled's ``grp[key].metadata``);
(c) 200 concurrent lookups (aiosdk: ``asyncio.gather``; Tiled's blocking client from a
    ``ThreadPoolExecutor`` of 16), lookups/s;
(d) ``values()[5000]``.

Goals (issue 9): aiosdk >= 5x faster on (a), (b) and (d), >= 20x on (c).

Tiled runs from its own virtualenv, never imported here: its server is ``python -m tiled serve
catalog`` and its client measurements are benchmarks/_tiled_side.py, both run by that venv's
interpreter (``AIOSDK_BENCH_TILED_PYTHON``, default /work/tiled-venv/bin/python; when the default
is missing, benchmarks/.tiled-venv is created with ``pip install "tiled[all]"``). If Tiled cannot
be installed or started, the table says why and shows aiosdk's figures alone.

Both servers run without their per-request access log (aiosdk ``--log-level warning``, Tiled a
copy of its logging config with ``uvicorn.access`` at WARNING); ``--access-log`` keeps both
servers' default logging instead. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

import aiosdk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _catalog_content import (
    CONTAINER,
    CONTAINER_METADATA,
    ENTRIES,
    INDEX,
    LOOKUPS,
    NAMESPACE,
    THREADS,
    entry_key,
    entry_metadata,
    lookup_keys,
)
from _harness import (
    Pinning,
    ServerProcess,
    Summary,
    default_server_command,
    machine_line,
    plan_pinning,
)

HERE = Path(__file__).resolve().parent
DEFAULT_TILED_PYTHON = "/work/tiled-venv/bin/python"
LOCAL_TILED_VENV = HERE / ".tiled-venv"
TILED_REQUIREMENTS = ("tiled[all]", "tiled[server,client]")  # the second if the first fails
INDEX_CALLS = 20  # (d) calls per run (same as _tiled_side.py); a run's figure is their median
SEED_CONCURRENCY = 64
START_TIMEOUT = 90.0


@dataclass(frozen=True)
class Plan:
    entries: int
    runs: int


FULL = Plan(entries=ENTRIES, runs=5)
QUICK = Plan(entries=1_000, runs=1)


@dataclass(frozen=True)
class Operation:
    key: str  # in the JSON of both sides
    label: str
    unit: str
    faster_is_smaller: bool  # times: ratio tiled/aiosdk; rates: aiosdk/tiled
    goal: float
    digits: int


OPERATIONS = [
    Operation("list_s", "(a) list all keys", "s", True, 5.0, 3),
    Operation("lookup_ms", f"(b) {LOOKUPS} sequential lookups, per lookup", "ms", True, 5.0, 2),
    Operation("concurrent_per_s", f"(c) {LOOKUPS} concurrent lookups", "lookups/s", False, 20.0, 0),
    Operation("index_ms", "(d) values()[{index}]", "ms", True, 5.0, 2),
]


@dataclass
class Side:
    """One side's figures (per run), or why it has none."""

    name: str
    figures: dict[str, Summary] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- Tiled, from its own venv ------------------------------------------------------------------


class Skip(Exception):
    """Tiled cannot be measured; the message says why."""


def tiled_python() -> Path:
    """The Tiled venv's interpreter: the configured one, else the default, else a local venv."""
    configured = os.environ.get("AIOSDK_BENCH_TILED_PYTHON")
    if configured:
        if not Path(configured).exists():
            raise Skip(f"AIOSDK_BENCH_TILED_PYTHON={configured} does not exist")
        return Path(configured)
    for candidate in (Path(DEFAULT_TILED_PYTHON), LOCAL_TILED_VENV / "bin" / "python"):
        if candidate.exists() and _has_tiled(candidate):
            return candidate
    return _create_local_venv()


def _has_tiled(python: Path) -> bool:
    probe = subprocess.run(
        [str(python), "-c", "import tiled.client, tiled.server"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def _create_local_venv() -> Path:
    python = LOCAL_TILED_VENV / "bin" / "python"
    progress(f"no Tiled venv at {DEFAULT_TILED_PYTHON}: creating {LOCAL_TILED_VENV} (minutes)")
    if not python.exists():
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(LOCAL_TILED_VENV)], capture_output=True, check=False
        )
        if made.returncode != 0:
            raise Skip(f"could not create {LOCAL_TILED_VENV}: {made.stderr.decode()[-500:]}")
    errors = []
    for requirement in TILED_REQUIREMENTS:
        progress(f"pip install {requirement!r} into {LOCAL_TILED_VENV}")
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", requirement],
            capture_output=True,
            check=False,
        )
        if installed.returncode == 0 and _has_tiled(python):
            return python
        errors.append(f"{requirement}: {installed.stderr.decode(errors='replace')[-300:]}")
    raise Skip("could not install Tiled: " + " | ".join(errors))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_json(argv: list[str], what: str, timeout: float) -> dict[str, Any]:
    """Run ``argv`` (stderr passes through as progress) and parse the JSON it prints last."""
    try:
        done = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=None, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise Skip(f"{what} took over {timeout:.0f} s") from exc
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        raise Skip(f"{what} failed (exit {done.returncode}); see its output above")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class TiledServer:
    """``python -m tiled serve catalog DB`` from Tiled's venv, pinned to the server core."""

    def __init__(self, python: Path, directory: Path, pinning: Pinning, log_config: str | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = secrets.token_hex(32)  # Tiled accepts alphanumeric keys only
        self.argv = [
            str(python), "-m", "tiled", "serve", "catalog", str(directory / "catalog.db"),
            "-w", str(directory / "data"), "--api-key", self.api_key, "--port", str(self.port),
        ]  # fmt: skip
        if log_config:
            self.argv += ["--log-config", log_config]
        self._pinning = pinning
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._pinning.server_preexec(),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                progress(f"tiled: server output:\n{self.tail()}")
                raise Skip(
                    f"the Tiled server exited ({self._process.returncode}): {self.last_line()}"
                )
            try:
                answer = httpx.get(
                    f"{self.url}/api/v1/",
                    headers={"Authorization": f"Apikey {self.api_key}"},
                    timeout=5,
                )
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    progress(f"tiled: server output:\n{self.tail()}")
                    raise Skip(
                        f"the Tiled server did not answer within {START_TIMEOUT:.0f} s"
                    ) from None
                time.sleep(0.1)
                continue
            if answer.status_code != 200:
                raise Skip(f"the Tiled server answered {answer.status_code}: {answer.text[:300]}")
            return

    def tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-3000:]

    def last_line(self) -> str:
        lines = [line for line in self.tail().splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line]
        return (errors or lines or ["(no output)"])[-1].strip()

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log.close()


def measure_tiled(plan: Plan, pinning: Pinning, access_log: bool) -> Side:
    side = Side("tiled")
    try:
        python = tiled_python()
        script = str(HERE / "_tiled_side.py")
        with tempfile.TemporaryDirectory(prefix="tiled-bench-") as tmp:
            directory = Path(tmp)
            progress(f"tiled: seeding {plan.entries} entries with {python}")
            seeded = run_json(
                [str(python), script, "seed", str(directory), "--entries", str(plan.entries)],
                "seeding Tiled's catalog",
                timeout=900,
            )
            side.notes.append(
                f"Tiled {seeded['version']} ({python}); seeded in {seeded['seconds']:.1f} s "
                "(in process, untimed)"
            )
            server = TiledServer(
                python, directory, pinning, None if access_log else seeded["quiet_logging"]
            )
            try:
                server.start()
                progress(f"tiled: server up at {server.url} (pid {server.pid})")
                side.notes.append(
                    "server: " + shlex.join(server.argv).replace(server.api_key, "<key>")
                )
                # The child inherits this process's pinning to the client core.
                measured = run_json(
                    [str(python), script, "measure", server.url, server.api_key,
                     "--runs", str(plan.runs), "--entries", str(plan.entries)],
                    "Tiled's measurements",
                    timeout=1800,
                )  # fmt: skip
            finally:
                server.stop()
    except Skip as why:
        side.skipped = str(why)
        progress(f"tiled: SKIPPED: {why}")
        return side
    for operation in OPERATIONS:
        side.figures[operation.key] = Summary(list(measured[operation.key]))
    return side


# -- aiosdk ------------------------------------------------------------------------------------


def catalog_missing() -> str | None:
    """Why aiosdk's catalog client cannot be measured (``None``: it can)."""
    if not hasattr(aiosdk.AsyncClient, "catalog"):
        return "aiosdk.AsyncClient has no `catalog` yet (the catalog client is not there)"
    return None


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def seed_aiosdk(admin: aiosdk.AsyncClient, entries: int) -> float:
    started = time.perf_counter()
    grp = await admin.catalog.create_container(
        f"{NAMESPACE}/{CONTAINER}", metadata=dict(CONTAINER_METADATA)
    )
    gate = asyncio.Semaphore(SEED_CONCURRENCY)

    async def create(i: int) -> None:
        async with gate:
            await grp.create_container(entry_key(i), metadata=entry_metadata(i))

    await asyncio.gather(*(create(i) for i in range(entries)))
    return time.perf_counter() - started


async def measure_aiosdk_with(client: aiosdk.AsyncClient, plan: Plan, side: Side) -> None:
    grp = await client.catalog.get(f"{NAMESPACE}/{CONTAINER}")
    if not isinstance(grp, aiosdk.AsyncContainer):
        raise TypeError(f"{NAMESPACE}/{CONTAINER} is not a container: {grp!r}")
    keys = lookup_keys(plan.entries)
    index = min(INDEX, plan.entries - 1)

    async def list_keys() -> list[str]:
        return [key async for key in grp.keys()]  # noqa: SIM118 - the view, as a user writes it

    async def lookup(key: str) -> dict[str, Any]:
        node = await grp.get(key)
        return dict(node.metadata)

    # Warm up, and check that both sides serve the same thing.
    listed = await list_keys()
    if len(listed) != plan.entries or listed[0] != entry_key(0):
        raise RuntimeError(f"listing gave {len(listed)} keys, first {listed[:1]}")
    for key in keys[:20]:
        await lookup(key)
    if await lookup(keys[0]) != entry_metadata(int(keys[0][1:])):
        raise RuntimeError("metadata differs from what was seeded")
    got = await grp.values()[index]
    if got.key != entry_key(index):
        raise RuntimeError(f"values()[{index}] is {got.key}, not {entry_key(index)}")
    await asyncio.gather(*(lookup(key) for key in keys[:THREADS]))

    figures = {operation.key: Summary() for operation in OPERATIONS}
    for run in range(plan.runs):
        figures["list_s"].add(await timed(list_keys))

        started = time.perf_counter()
        for key in keys:
            await lookup(key)
        figures["lookup_ms"].add((time.perf_counter() - started) / len(keys) * 1e3)

        started = time.perf_counter()
        done = await asyncio.gather(*(lookup(key) for key in keys))
        figures["concurrent_per_s"].add(len(done) / (time.perf_counter() - started))

        async def index_call() -> None:
            await grp.values()[index]

        times = [await timed(index_call) for _ in range(INDEX_CALLS)]
        figures["index_ms"].add(statistics.median(times) * 1e3)
        progress(
            f"aiosdk: run {run + 1}/{plan.runs}: list {figures['list_s'].values[-1]:.3f} s, "
            f"lookup {figures['lookup_ms'].values[-1]:.2f} ms, "
            f"{figures['concurrent_per_s'].values[-1]:.0f} lookups/s, "
            f"values()[{index}] {figures['index_ms'].values[-1]:.2f} ms"
        )
    side.figures = figures


async def measure_aiosdk_on(server: ServerProcess, plan: Plan, side: Side) -> None:
    async with aiosdk.AsyncClient(server.url, token=server.token) as admin:
        password = secrets.token_urlsafe(16)
        await admin.admin.create_user(NAMESPACE, password=password)
        progress(f"aiosdk: seeding {plan.entries} entries ({SEED_CONCURRENCY} at a time)")
        seconds = await seed_aiosdk(admin, plan.entries)
        side.notes.append(
            f"seeded in {seconds:.1f} s over HTTP ({SEED_CONCURRENCY} concurrent creates, untimed)"
        )
    # Measured as the namespace's user with an API token (the counterpart of Tiled's API key).
    async with aiosdk.AsyncClient(server.url) as session:
        await session.login(username=NAMESPACE, password=password)
        token = await session.tokens.create("bench")
    async with aiosdk.AsyncClient(server.url, token=token.secret.reveal()) as client:
        side.notes.append(f"client: {client!r} (user {NAMESPACE!r}, API token)")
        await measure_aiosdk_with(client, plan, side)


def measure_aiosdk(plan: Plan, pinning: Pinning, access_log: bool) -> Side:
    side = Side("aiosdk")
    if (why := catalog_missing()) is not None:
        side.skipped = why
        progress(f"aiosdk: SKIPPED: {why}")
        return side
    extra = [] if access_log else ["--log-level", "warning"]
    with ServerProcess(default_server_command(), pinning, extra) as server:
        progress(f"aiosdk: server up at {server.url} (pid {server.pid})")
        side.notes.append("server: " + shlex.join(server.argv).replace(server.token, "<token>"))
        asyncio.run(measure_aiosdk_on(server, plan, side))
    return side


# -- the table ---------------------------------------------------------------------------------


def cell(summary: Summary | None, digits: int) -> str:
    if summary is None:
        return "-"
    return f"{summary.median:.{digits}f}"


def spread(summary: Summary | None, digits: int) -> str:
    if summary is None:
        return ""
    return f"{summary.min:.{digits}f}..{summary.max:.{digits}f}"


def render(tiled: Side, sdk: Side, plan: Plan, pinning: Pinning, load: str, quick: bool) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "QUICK smoke run, not for quoting" if quick else "full run"
    lines = [
        f"aiosdk catalog vs Tiled ({mode}), {now}",
        f"  {machine_line()}, aiosdk {aiosdk.__version__}",
        f"  {pinning.describe()}; load average (1, 5, 15 min) at start {load}",
        f"  content: {NAMESPACE}/{CONTAINER} with {plan.entries} containers with small metadata;"
        f" figures: median of {plan.runs} runs (min..max)",
        f"  (c): aiosdk asyncio.gather of {LOOKUPS}; Tiled's blocking client, "
        f"ThreadPoolExecutor({THREADS})",
    ]
    for side in (tiled, sdk):
        for note in side.notes:
            lines.append(f"  {side.name}: {note}")
        if side.skipped:
            lines.append(f"  {side.name}: SKIPPED: {side.skipped}")
    lines.append("")
    head = (
        f"  {'operation':<38} {'unit':<9} {'tiled':>9} {'aiosdk':>9} {'ratio':>7}  "
        f"{'goal':>6}        {'tiled min..max':>16} {'aiosdk min..max':>16}"
    )
    lines += [head, "  " + "-" * (len(head) - 2)]
    for op in OPERATIONS:
        t, a = tiled.figures.get(op.key), sdk.figures.get(op.key)
        ratio, verdict = "-", ""
        if t is not None and a is not None:
            value = t.median / a.median if op.faster_is_smaller else a.median / t.median
            ratio = f"{value:.1f}x"
            verdict = "PASS" if value >= op.goal else "MISS"
        label = op.label.format(index=min(INDEX, plan.entries - 1))
        lines.append(
            f"  {label:<38} {op.unit:<9} {cell(t, op.digits):>9} {cell(a, op.digits):>9} "
            f"{ratio:>7}  >={op.goal:<3g}x {verdict:<5} {spread(t, op.digits):>16} "
            f"{spread(a, op.digits):>16}"
        )
    lines.append(
        "  ratio: how many times faster aiosdk is (tiled/aiosdk for times, "
        "aiosdk/tiled for lookups/s)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK.entries} entries, {QUICK.runs} runs"
    )
    parser.add_argument("--no-tiled", action="store_true", help="aiosdk's figures only")
    parser.add_argument(
        "--access-log", action="store_true", help="keep both servers' default per-request logs"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    pinning = plan_pinning()
    started = time.perf_counter()
    pinning.pin_client()  # before any thread starts; child processes inherit it too
    progress(pinning.describe())
    if args.no_tiled:
        tiled = Side("tiled", skipped="--no-tiled")
    else:
        tiled = measure_tiled(plan, pinning, args.access_log)
    sdk = measure_aiosdk(plan, pinning, args.access_log)
    load += ", at end " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    table = render(tiled, sdk, plan, pinning, load, args.quick)
    table += f"\n\n  total time {time.perf_counter() - started:.0f} s"
    print(table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
