"""Helpers for benchmarks/bench_client.py: the server process, CPU pinning, statistics, the table.

The reference server runs as a separate process (``aiosdk serve``) so that client and server do
not share one GIL; where the machine has two or more usable cores, the server is pinned to one
and the client to another.
"""

from __future__ import annotations

import os
import platform
import queue
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import httpx

__all__ = [
    "Pinning",
    "ServerProcess",
    "Summary",
    "Table",
    "default_server_command",
    "machine_line",
    "plan_pinning",
    "verdict",
]

_URL = re.compile(r"https?://[\w.\-]+(?::\d+)?|https?://\[[0-9a-fA-F:]+\](?::\d+)?")
_GRPC = re.compile(r"grpc\S*\D*?([\w.\-]+:\d+|\[[0-9a-fA-F:]+\]:\d+)", re.IGNORECASE)
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0


# -- statistics --------------------------------------------------------------------------------


@dataclass
class Summary:
    """Per-run values of one measurement (e.g. the median latency of each run)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def runs(self) -> int:
        return len(self.values)


def verdict(value: float, goal: float, *, at_least: bool = False) -> str:
    """``PASS`` when ``value`` is at most ``goal`` (at least ``goal`` with ``at_least``), else
    ``MISS``."""
    return "PASS" if (value >= goal if at_least else value <= goal) else "MISS"


# -- the table ---------------------------------------------------------------------------------


@dataclass
class Table:
    """A plain-text table: sections of rows ``label | median | min | max | note``."""

    lines: list[str] = field(default_factory=list)
    label_width: int = 48

    def title(self, text: str) -> None:
        if self.lines:
            self.lines.append("")
        self.lines.append(text)

    def header(self, what: str) -> None:
        """Column heads, with what the figures are (e.g. the unit) in the label column."""
        self.lines.append(
            f"  {'[' + what + ']':<{self.label_width}} {'median':>9} {'min':>9} {'max':>9}  runs"
        )

    def row(self, label: str, summary: Summary, digits: int = 1, note: str = "") -> None:
        cells = " ".join(f"{v:>9.{digits}f}" for v in (summary.median, summary.min, summary.max))
        self.lines.append(
            f"  {label:<{self.label_width}} {cells}  {summary.runs:>4}  {note}".rstrip()
        )

    def ratio(
        self,
        label: str,
        value: float,
        goal: float,
        unit: str = "x",
        digits: int = 2,
        *,
        at_least: bool = False,
    ) -> None:
        """A figure with its goal (at most ``goal``; at least, with ``at_least``) and PASS/MISS
        beside it."""
        bound = ">=" if at_least else "<="
        self.lines.append(
            f"  {label:<{self.label_width}} {value:>9.{digits}f} {unit:<3} "
            f"goal {bound} {goal:g} {unit}  {verdict(value, goal, at_least=at_least)}"
        )

    def text(self, line: str) -> None:
        self.lines.append(f"  {line}")

    def render(self) -> str:
        return "\n".join(self.lines)


def machine_line() -> str:
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"httpx {httpx.__version__}"
    )


def server_header(
    table: Table,
    title: str,
    server: ServerProcess,
    pinning: Pinning,
    *,
    runs: int,
    quick: bool,
    versions: str = "",
    figures_note: str = "",
) -> None:
    """The lines a benchmark against a server process opens its table with: what ran, when,
    where, pinned how, and how its figures are summarized."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "QUICK smoke run, not for quoting" if quick else "full run"
    table.title(f"{title} ({mode}), {now}")
    table.text(machine_line() + versions)
    table.text(pinning.describe() + "; asyncio default event loop")
    command = shlex.join(server.argv).replace(server.token, "<token>")
    table.text(f"server: {command} (pid {server.pid})")
    table.text(f"        HTTP {server.url}, gRPC {server.grpc}")
    table.text(f"figures: median, min and max over {runs} runs{figures_note}")


# -- CPU pinning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pinning:
    """Which core the server and the client run on (``None``: not pinned)."""

    server: int | None
    client: int | None

    def describe(self) -> str:
        if self.server is None or self.client is None:
            return "not pinned (fewer than 2 usable cores or no sched_setaffinity)"
        return f"server pinned to CPU {self.server}, client to CPU {self.client}"

    def pin_client(self) -> None:
        """Pin this process (its current thread and every thread started later)."""
        if self.client is not None:
            os.sched_setaffinity(0, {self.client})

    def server_preexec(self) -> Callable[[], None] | None:
        """A ``preexec_fn`` that pins the server before it starts any thread."""
        core = self.server
        if core is None:
            return None
        return lambda: os.sched_setaffinity(0, {core})


def plan_pinning() -> Pinning:
    if not hasattr(os, "sched_setaffinity"):
        return Pinning(None, None)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return Pinning(None, None)
    return Pinning(server=cores[-1], client=cores[0])


# -- the server process ------------------------------------------------------------------------


def default_server_command() -> list[str]:
    """``aiosdk serve``: the console script next to this interpreter, else ``aiosdk.cli``."""
    script = Path(sys.executable).with_name("aiosdk")
    if script.exists():
        return [str(script), "serve"]
    found = shutil.which("aiosdk")
    if found:
        return [found, "serve"]
    return [
        sys.executable,
        "-c",
        "import sys; from aiosdk.cli import main; sys.exit(main())",
        "serve",
    ]


class ServerProcess:
    """``aiosdk serve`` on free ports, with a temporary data directory and a known admin token.

    Use as a context manager; ``url`` and ``grpc`` are parsed from what the server prints on start.
    """

    def __init__(self, command: Sequence[str], pinning: Pinning, extra: Sequence[str] = ()) -> None:
        self.token = "bench-" + secrets.token_urlsafe(24)
        self._extra = list(extra)
        self.url = ""
        self.grpc = "?"
        self._command = list(command)
        self._pinning = pinning
        self._data = tempfile.TemporaryDirectory(prefix="aiosdk-bench-")
        self._stderr = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - closed by _stop
        self._process: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def argv(self) -> list[str]:
        return [
            *self._command,
            "--data",
            self._data.name,
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--admin-token",
            self.token,
            *self._extra,
        ]

    def __enter__(self) -> ServerProcess:
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _start(self) -> None:
        # The client has no threads yet, so a preexec_fn is safe here.
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            preexec_fn=self._pinning.server_preexec(),
        )
        threading.Thread(target=self._pump_stdout, name="server-stdout", daemon=True).start()
        self._wait_for_url()
        self._wait_until_answering()

    def _pump_stdout(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            self._lines.put(raw.decode(errors="replace"))
        self._lines.put(None)

    def _wait_for_url(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        seen: list[str] = []
        while not self.url or self.grpc == "?":
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if self.url:  # the gRPC endpoint is informational only
                    return
                self._fail(f"printed no HTTP URL within {_START_TIMEOUT:.0f} s", seen)
            if line is None:
                if self.url:
                    return
                self._fail("exited before printing its HTTP URL", seen)
            seen.append(line)
            self._parse(line)
            if self.url and self.grpc == "?":
                # The gRPC endpoint may come on a later line, or not at all.
                deadline = min(deadline, time.monotonic() + 1.0)

    def _parse(self, line: str) -> None:
        if not self.url and (match := _URL.search(line)):
            self.url = match.group(0).rstrip("/")
        if self.grpc == "?" and (match := _GRPC.search(line)):
            self.grpc = match.group(1)

    def _wait_until_answering(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                response = httpx.get(f"{self.url}/api/v1/", headers=headers, timeout=5)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            if response.status_code != 200:
                self._fail(f"answered GET /api/v1/ with {response.status_code}: {response.text}")
            return

    def _fail(self, why: str, stdout: Sequence[str] = ()) -> NoReturn:
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace")[-4000:]
        raise RuntimeError(
            f"the server ({shlex.join(self.argv)}) {why}\n"
            f"--- stdout ---\n{''.join(stdout)}--- stderr (tail) ---\n{stderr}"
        )

    def _stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._stderr.close()
        self._data.cleanup()
