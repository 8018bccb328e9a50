"""What the outside tests share: users and logins over plain httpx, schemathesis runs and texts
it cannot send, HTTP/1.1 exchanged byte for byte over a socket, the server's logged errors,
servers in threads or processes of their own, loopback connections counted, and scripts run in
fresh interpreters."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import aiosdk
from aiosdk.server import ServerConfig, ServerThread
from aiosdk.server.config import AccountSettings, Limits

PASSWORD = "correct horse battery staple"
REPOSITORY = Path(aiosdk.__file__).parents[1]  # the aiosdk under test, for the subprocesses
TESTS = Path(__file__).parents[1]  # for the subprocesses' imports of outside._in_scripts
IDLE = 1.0  # an impatient server's http_idle_timeout_seconds (a stalled body is cut off after it)
HEAD_TIMEOUT = 2.0  # its header_timeout_seconds


def admin_client(server: ServerThread | RemoteServer) -> httpx.Client:
    """A client of ``server``'s admin on ``/api/v1`` (to close)."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    return httpx.Client(base_url=f"{server.http_url}/api/v1", headers=headers, timeout=30)


def new_user(admin: httpx.Client, prefix: str) -> str:
    """A new user (password :data:`PASSWORD`), made by ``admin`` (a client on ``/api/v1``)."""
    username = f"{prefix}-{secrets.token_hex(5)}"
    response = admin.post("/admin/users", json={"username": username, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return username


def log_in(server: ServerThread | RemoteServer, username: str) -> str:
    """An access token of ``username``'s, from a login with :data:`PASSWORD`."""
    response = httpx.post(
        f"{server.http_url}/api/v1/auth/login",
        json={"username": username, "password": PASSWORD},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


class Unhandled(logging.Handler):
    """Every error the server logs (an unhandled exception is logged before its 500)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def impatient_server(accounts: AccountSettings | None = None) -> ServerThread:
    """A server that cuts stalled bodies off after :data:`IDLE` s and stalled heads after
    :data:`HEAD_TIMEOUT` s, with ``accounts`` (by default: failed logins lock an address
    practically never, every test being 127.0.0.1)."""
    limits = Limits(http_idle_timeout_seconds=IDLE, header_timeout_seconds=HEAD_TIMEOUT)
    if accounts is None:
        accounts = AccountSettings(login_failures_per_address=1_000_000)
    return ServerThread(ServerConfig(limits=limits, accounts=accounts))


# -- fuzzing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schemathesis:
    """How a module runs schemathesis on the live document: on which routes, with which
    checks, how many examples from which seed, with how many workers."""

    routes: str
    checks: str
    max_examples: int
    seed: int
    workers: int = 1
    timeout: float = 150

    def run(
        self, server: ServerThread, workdir: Path, *arguments: str, config: str | None = None
    ) -> str:
        """A run with more ``arguments`` (and a ``config`` file, if given); its output, after
        checking it passed."""
        command = [sys.executable, "-m", "schemathesis.cli"]
        if config is not None:
            (workdir / "schemathesis.toml").write_text(config)
            command += ["--config-file", str(workdir / "schemathesis.toml")]
        command += [
            "run",
            f"{server.http_url}/api/v1/openapi.json",
            f"--checks={self.checks}",
            f"--include-path-regex={self.routes}",
            f"--max-examples={self.max_examples}",
            f"--seed={self.seed}",
            "--generation-database=none",
            "--request-timeout=10",
            f"--workers={self.workers}",
            "--no-color",
            *arguments,
        ]
        result = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True, timeout=self.timeout
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        return output


# Lone surrogates are valid in JSON text (as escapes) and reach the routes as Python strings
# that no UTF-8 encoder takes; weighted up, with controls (NUL among them), among all others.
ANY_TEXT = st.text(
    st.one_of(
        st.characters(categories=["Cs"]),
        st.characters(categories=["Cc"]),
        st.characters(),
    ),
    min_size=1,
    max_size=24,
)
SURROGATES_AND_NUL = ["\ud800", "\udc80\udcff", "x\udfff\ud800y", "\x00"]
"""The texts every check on :data:`ANY_TEXT` is given, whatever hypothesis draws."""


def on_any_text(
    max_examples: int, *more: str
) -> Callable[[Callable[[str], None]], Callable[[], None]]:
    """Make ``check(text)`` a ``check()`` that runs it on :data:`SURROGATES_AND_NUL`, ``more``,
    and ``max_examples`` texts of :data:`ANY_TEXT` (always the same ones, none remembered)."""

    def decorate(check: Callable[[str], None]) -> Callable[[], None]:
        for text in reversed([*SURROGATES_AND_NUL, *more]):
            check = example(text=text)(check)
        run: Callable[[], None] = settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )(given(text=ANY_TEXT)(check))
        return run

    return decorate


_names = itertools.count()


def fresh_name(prefix: str = "k") -> str:
    """A name no other call gives: ``prefix``, a counter and a random part."""
    return f"{prefix}-{next(_names)}-{secrets.token_hex(3)}"


# -- HTTP/1.1 byte for byte ------------------------------------------------------------------


@dataclass
class Answer:
    status: int | None  # None: the server closed without answering
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> dict[str, object]:
        decoded: dict[str, object] = json.loads(self.body)
        return decoded


def exchange(port: int, request: bytes, *, deadline: float = 10.0, pace: float = 0.0) -> Answer:
    """Send ``request`` (its body in pieces of 8 bytes ``pace`` seconds apart, if ``pace``), read
    until the server closes, and parse the answer (a chunked body joined). Raises
    ``TimeoutError`` past ``deadline``."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
        # Answered (413, 431...) and closed before all of it was sent: read the answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if pace:
                head, _, body = request.partition(b"\r\n\r\n")
                sock.sendall(head + b"\r\n\r\n")
                for i in range(0, len(body), 8):
                    sock.sendall(body[i : i + 8])
                    time.sleep(pace)
            else:
                sock.sendall(request)
        while True:
            left = deadline - (time.monotonic() - started)
            if left <= 0:
                raise TimeoutError(f"no end of the answer in {deadline} s: {received[:200]!r}")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise TimeoutError(
                    f"no end of the answer in {deadline} s: {received[:200]!r}"
                ) from None
            if not chunk:
                break
            received += chunk
    seconds = time.monotonic() - started
    if not received:
        return Answer(None, {}, b"", seconds)
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Answer(int(lines[0].split()[1]), headers, body, seconds)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2 :]
    return out


def assert_4xx_or_closed(answer: Answer) -> None:
    """A client error in the API's error shape, or the connection closed unanswered."""
    if answer.status is None:
        return
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    if answer.headers.get("content-type") == "application/json":
        error = answer.json()["error"]
        assert isinstance(error, dict)
        assert set(error) == {"type", "message", "request_id"}, error


# -- other processes ---------------------------------------------------------------------------


def connections_to(port: int) -> int:
    """Established TCP connections whose one end is ``port`` on this machine (both ends of a
    loopback connection are listed: the server's and the client's)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


@dataclass
class RemoteServer:
    """A server in a process of its own: what it leaks or stalls stays there."""

    http_url: str
    admin_token: str
    port: int


_SERVE = """
import json, sys
from aiosdk.server import ServerConfig, ServerThread
from aiosdk.server.config import AccountSettings
config = ServerConfig(
    database_url=sys.argv[1] or None,
    accounts=AccountSettings(login_failures_per_address=1_000_000),
)
with ServerThread(config) as thread:
    print(json.dumps([thread.http_url, thread.admin_token, thread.server.http_port]), flush=True)
    sys.stdin.read()  # until the test closes it
"""


@contextlib.contextmanager
def serve(database_url: str) -> Iterator[RemoteServer]:
    """A :class:`RemoteServer` of ``database_url`` (``""``: SQLite in its data directory)."""
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE, database_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        assert process.stdin is not None
        line = process.stdout.readline()
        assert line, "the server process did not start"
        url, token, port = json.loads(line)
        yield RemoteServer(url, token, port)
        process.stdin.close()
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def run_script(
    source: str,
    *argv: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    dev_mode: bool = True,
    absent: tuple[str, ...] = ("Warning", "Traceback"),
) -> str:
    """Run ``source`` (dedented) in a fresh interpreter on the aiosdk under test (in Python's
    development mode, ``-X dev``, if ``dev_mode``), with ``argv`` and ``env`` added to the
    environment, :mod:`outside._in_scripts` importable; its output, after checking that it
    succeeded and that its standard error has none of the words ``absent``."""
    command = [sys.executable, *(["-X", "dev"] if dev_mode else []), "-c"]
    result = subprocess.run(
        [*command, textwrap.dedent(source), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(TESTS)]),
            **(env or {}),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for word in absent:
        assert word not in result.stderr, result.stderr
    return result.stdout


def load_grpcio_stubs() -> Any:
    """``grpcio_stubs`` of tests/server/grpcio_stubs.py (the official grpcio client's modules
    built from our .proto files), loaded by its path (tests/ is no package)."""
    path = Path(__file__).parents[1] / "server" / "grpcio_stubs.py"
    spec = importlib.util.spec_from_file_location("outside_grpcio_stubs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.grpcio_stubs
