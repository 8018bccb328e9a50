"""The blocking facade's login used with hostility, against a server whose access tokens live 1 s:
one ``aiosdk.Client`` shared by 8 threads across many expiries, a fork after login (the child
using the inherited client, or not), and Ctrl-C (SIGINT) in the middle of logins and renewals.

Renewals are counted from the server's own access log (``aiosdk.server`` at INFO), nothing in
the client is mocked or read. The fork and signal scenarios run in fresh interpreters (as
tests/test_fork.py does) against this module's server.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiosdk
from aiosdk.server import ServerConfig, ServerThread
from aiosdk.server.config import AccountSettings
from outside._tools import PASSWORD, run_script

TTL = 1  # seconds an access token lives; the client renews at 0.9 s
REFRESH = "POST /api/v1/auth/refresh"


class AccessLog(logging.Handler):
    """The server's access-log lines, as ``(method path, status)``."""

    LINE = re.compile(r"^(\S+) (\S+) -> (\S+) in ")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        found = self.LINE.match(record.getMessage())
        if found:
            with self._lock:
                self.lines.append((f"{found[1]} {found[2]}", found[3]))

    def counts(self) -> collections.Counter[tuple[str, str]]:
        with self._lock:
            return collections.Counter(self.lines)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    config = ServerConfig(
        accounts=AccountSettings(access_token_ttl=TTL, login_failures_per_address=1_000_000)
    )
    with ServerThread(config) as thread:
        yield thread


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    logger = logging.getLogger("aiosdk.server")
    handler, level = AccessLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def user(server: ServerThread) -> str:
    username = f"fa-{secrets.token_hex(5)}"
    with aiosdk.Client(server.http_url, token=server.admin_token) as admin:
        admin.admin.create_user(username, password=PASSWORD)
    return username


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``remember=True`` writes: never the real user's directory."""
    monkeypatch.setenv("AIOSDK_CONFIG_DIR", str(tmp_path))
    for name in ("AIOSDK_URL", "AIOSDK_TOKEN", "AIOSDK_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_eight_threads_share_one_client_across_expiries_with_one_renewal_each(
    server: ServerThread, user: str, access_log: AccessLog, config_dir: Path
) -> None:
    client = aiosdk.Client(server.http_url, timeout=10, retry_mode="disabled")
    calls = [
        client.user_profile,
        client.server_info,
        client.get_status,  # gRPC
        client.organizations,
    ]
    outcomes: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    with client:
        client.login(username=user, password=PASSWORD)
        start = threading.Barrier(8)
        duration = 2.5

        def work(n: int) -> None:
            start.wait()
            end = time.monotonic() + duration
            while time.monotonic() < end:
                call = calls[n % len(calls)]
                try:
                    call()
                    outcomes[call.__name__] += 1
                except Exception as exc:  # every call must succeed
                    failures.append(f"{call.__name__}: {exc!r}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        elapsed = time.monotonic() - began
        assert client.user_profile().username == user
    assert not failures, failures[:5]
    assert all(outcomes[c.__name__] > 0 for c in calls), outcomes
    time.sleep(0.2)  # the server logs a request just after answering it
    counts = access_log.counts()
    renewals = sum(n for (request, _), n in counts.items() if request == REFRESH)
    assert counts[(REFRESH, "200")] == renewals, counts  # none refused: no reuse, no race
    # One renewal per lifetime of a token (0.9 s on the client's clock), not one per thread.
    expiries = elapsed / (TTL * 0.9)
    assert expiries - 2 <= renewals <= expiries + 2, (renewals, elapsed)
    refused = sum(n for (request, status), n in counts.items() if status == "401")
    assert refused <= 8 * renewals, counts  # at most each thread once per expiry


FORK = """
import sys, time, aiosdk
from outside._in_scripts import exit_status_of, in_a_forked_child

CHILD_USES, REMEMBER = {child_uses}, {remember}
url, user, password = sys.argv[1:4]

def use(client, seconds):
    # Through at least one renewal (tokens live 1 s): every call must succeed.
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert client.user_profile().username == user
        assert client.get_status().version
        time.sleep(0.02)

client = aiosdk.Client(url, timeout=5, retry_mode="disabled")
client.login(username=user, password=password, remember=REMEMBER)
use(client, 0.2)

def child():
    if CHILD_USES:
        use(client, 1.2)

# (Exit status 3: the child may be told to log in again, the parent's session is not its own.)
pid = in_a_forked_child(child)
use(client, 1.2)  # while the child runs
status = exit_status_of(pid)
use(client, 1.0)  # and after it is gone
print("parent ok, child", status)
client.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
@pytest.mark.parametrize(
    ("child_uses", "remember"),
    [(False, False), (True, False), (True, True)],
    ids=["child-idle", "child-uses-it", "child-uses-a-remembered-login"],
)
def test_a_forked_child_leaves_the_parent_s_session_working(
    server: ServerThread, user: str, config_dir: Path, child_uses: bool, remember: bool
) -> None:
    """Found (child-uses-it): a child that used the client it inherited renewed the session
    with the refresh token it shares with its parent; the second of the two renewals was a
    reuse of a used refresh token, which revokes the session: the parent's calls (and the
    child's) failed with InvalidTokenError from then on. A remembered login (whose renewals go
    through the store, under its lock) is shared safely."""
    out = run_script(
        FORK.format(child_uses=child_uses, remember=remember),
        server.http_url,
        user,
        PASSWORD,
        dev_mode=False,
        absent=("Warning",),
    )
    assert "parent ok" in out
    if remember:  # coordinated through the store: both go on
        assert out.split()[-1] == "0"


SIGNALS = """
import os, signal, sys, threading, time, aiosdk

url, user, password = sys.argv[1:4]
client = aiosdk.Client(url, timeout=5, retry_mode="disabled")

def interrupt_after(delay):
    fired = []
    def fire():
        fired.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)
    timer = threading.Timer(delay, fire)
    return timer, fired

# 1. Ctrl-C at every moment of a login: interrupted or not, the client is never wedged.
interrupted = 0
for i in range(6):
    timer, fired = interrupt_after(0.002 + i * 0.015)
    try:
        timer.start()
        client.login(username=user, password=password, remember=i % 2 == 0)
    except KeyboardInterrupt:
        interrupted += 1
        assert time.monotonic() - fired[0] < 6, "Ctrl-C took more than the 5 s grace"
    try:
        timer.join()
        time.sleep(0.01)
    except KeyboardInterrupt:
        pass  # the login had finished first
    client.login(username=user, password=password)  # a login works after any interrupt ...
    assert client.user_profile().username == user  # ... and the client with it
    client.logout()
    try:
        client.user_profile()
        raise SystemExit("still logged in after logout")
    except aiosdk.AuthenticationError:
        pass
assert interrupted, "no login was ever interrupted"

# 2. Ctrl-C during calls while the session renews (every 0.9 s): the session survives.
client.login(username=user, password=password)
interrupted = 0
end = time.monotonic() + 1.2
i = 0
while time.monotonic() < end:
    i += 1
    timer, fired = interrupt_after(0.005 + (i % 10) * 0.01)
    try:
        timer.start()
        for _ in range(50):
            client.user_profile()
            client.get_status()
        timer.join()
    except KeyboardInterrupt:
        interrupted += 1
    finally:
        try:
            timer.join()
        except KeyboardInterrupt:
            pass
time.sleep(0.5)  # past the next renewal
for _ in range(2):
    assert client.user_profile().username == user  # not InvalidTokenError: nothing was lost
    assert client.get_status().version
    time.sleep(0.5)
assert interrupted
print("ok")
client.close()
"""


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_ctrl_c_during_logins_and_renewals_leaves_a_working_client(
    server: ServerThread, user: str, config_dir: Path
) -> None:
    # (Warnings are the next test's business.)
    assert run_script(
        SIGNALS, server.http_url, user, PASSWORD, timeout=90, dev_mode=False, absent=()
    ).split() == ["ok"]


EARLY_SIGNALS = """
import os, random, signal, sys, threading, time, aiosdk

url, user, password = sys.argv[1:4]
client = aiosdk.Client(url, timeout=5, retry_mode="disabled")
client.login(username=user, password=password)
go = threading.Event()

def interrupter():
    while True:
        go.wait()
        go.clear()
        time.sleep(random.uniform(0, 0.0015))  # within the call's first instants
        os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupter, daemon=True).start()
end = time.monotonic() + 1.0
while True:
    try:  # an interrupt may land anywhere in here
        if time.monotonic() > end:
            break
        go.set()
        for _ in range(5):
            client.server_info()
        time.sleep(0.01)
    except KeyboardInterrupt:
        pass
try:
    time.sleep(0.05)  # the last interrupt, if it is still to come
except KeyboardInterrupt:
    pass
import gc
gc.collect()
print("ok")
client.close()
"""


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_ctrl_c_as_a_call_starts_leaves_no_coroutine_unawaited(
    server: ServerThread, user: str, config_dir: Path
) -> None:
    """Found: a Ctrl-C that lands after a facade call was handed to the loop but before the
    loop ran its first step cancels the task before it starts; the call's coroutine is then
    never awaited, and Python prints ``RuntimeWarning: coroutine 'AsyncClient.server_info' was
    never awaited`` on the user's terminal (in a REPL or a notebook, where an interrupt is
    routine). Interrupts within the first 1.5 ms of calls, for a second: it shows every time."""
    assert run_script(
        EARLY_SIGNALS,
        server.http_url,
        user,
        PASSWORD,
        timeout=60,
        dev_mode=False,
        absent=("Warning",),
    ).split() == ["ok"]


@pytest.mark.parametrize(
    "where", ["before the call is handed over", "as it is handed over", "just after"]
)
def test_ctrl_c_before_the_wait_leaves_no_coroutine_unawaited_and_no_call_running(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Found (``RuntimeWarning: coroutine 'AsyncClient.login' was never awaited``, and in the
    third case a call that went on running after the interrupt): a Ctrl-C that lands in the
    facade before it waits for the call, while it makes the call's future, hands it to the loop,
    or just after, escaped with the coroutines never closed, or the call never cancelled.
    Deterministic: the interrupt is raised at each of those places."""
    import asyncio
    import gc
    import inspect
    import warnings

    from aiosdk._core import portal

    portal.call(asyncio.sleep(0))  # the loop is running
    interrupted = [False]

    def interrupt() -> None:
        if not interrupted[0]:
            interrupted[0] = True
            raise KeyboardInterrupt

    if where == "before the call is handed over":
        callers_context = portal._callers_context

        def context() -> object:
            interrupt()
            return callers_context()

        monkeypatch.setattr(portal, "_callers_context", context)
    else:
        submit = portal._Portal.submit

        def submitting(self: object, job: object) -> None:
            if where == "as it is handed over":
                interrupt()
            submit(self, job)  # type: ignore[arg-type]
            interrupt()

        monkeypatch.setattr(portal._Portal, "submit", submitting)

    log: list[str] = []

    async def step() -> None:
        log.append("started")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        log.append("finished")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coroutine = step()
        with pytest.raises(KeyboardInterrupt):
            portal.finished(coroutine)
        assert interrupted[0]
        # Never started (and closed), or started and cancelled: over either way, not running.
        assert log in ([], ["started", "cancelled"]), log
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
        monkeypatch.undo()
        del coroutine
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], caught
    assert portal.call(asyncio.sleep(0, "after")) == "after"  # the facade works on
