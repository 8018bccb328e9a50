"""The blocking facade's ``Container`` (a real ``collections.abc.Mapping``) used with hostility:
eight threads sharing one ``aiosdk.Client`` iterating and indexing one container at once (and
pulling from one shared iterator), a fork with a listing in flight (the child using the
container it inherited), iterations broken out of and iterators dropped by the hundred (no
connection and no watch stream left behind), Ctrl-C (SIGINT) in the middle of long listings, and
blocking calls from aiosdk's own event loop thread.

Nothing in the client is mocked: what is left open is read from the kernel's socket table and
the server's own status (``active_streams``). The fork and signal scenarios run in fresh
interpreters (as tests/test_fork.py does) against this module's server.
"""

from __future__ import annotations

import asyncio
import collections.abc
import gc
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import aiosdk
from aiosdk._core import portal
from aiosdk.server import ServerThread
from outside._tools import PASSWORD, connections_to, run_script

N = 250  # children of the big container: 3 pages of 100 when iterated


@pytest.fixture(scope="module")
def user(server: ServerThread) -> str:
    """A user owning ``{user}/big``: N containers ``c0000`` ... with a little metadata."""
    username = f"hc-{secrets.token_hex(5)}"
    with aiosdk.Client(server.http_url, token=server.admin_token) as admin:
        admin.admin.create_user(username, password=PASSWORD)
    with aiosdk.Client(server.http_url, timeout=30) as client:
        client.login(username=username, password=PASSWORD)
        big = client.catalog.create_container(f"{username}/big")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: big.create_container(f"c{i:04d}", metadata={"i": i}), range(N)))
    return username


@pytest.fixture(scope="module")
def expected(user: str) -> list[str]:
    return [f"c{i:04d}" for i in range(N)]


def _big(client: aiosdk.Client, user: str) -> aiosdk.Container:
    found = client.catalog[f"{user}/big"]
    assert isinstance(found, aiosdk.Container)
    return found


@pytest.fixture
def client(server: ServerThread, user: str) -> Iterator[aiosdk.Client]:
    with aiosdk.Client(server.http_url, timeout=10, retry_mode="disabled") as opened:
        opened.login(username=user, password=PASSWORD)
        yield opened


def test_the_container_is_a_real_mapping(
    client: aiosdk.Client, user: str, expected: list[str]
) -> None:
    big = _big(client, user)
    assert isinstance(big, collections.abc.Mapping)
    assert isinstance(big, aiosdk.Container)
    assert len(big) == N
    assert list(big)[:3] == expected[:3]
    assert big.get("nope", None) is None
    assert "c0001" in big
    assert "nope" not in big
    with pytest.raises(KeyError):
        big["nope"]
    assert big.values()[-1].key == expected[-1]
    assert [n.key for n in big.values()[:3]] == expected[:3]
    assert big.keys() & {"c0001", "nope"} == {"c0001"}
    assert ("c0002", big["c0002"]) in big.items()


def test_get_is_the_issues_lookup_and_takes_a_mapping_default(
    client: aiosdk.Client, user: str
) -> None:
    """``Container.get(path)`` is the catalog's lookup by path, as in the async API it wraps:
    a missing node is ``NodeNotFoundError`` (a ``KeyError`` too). It is the one place where the
    blocking ``Container`` departs from ``Mapping.get``; with a default given it answers as
    every Mapping does, and the Mapping mixin itself still works on it."""
    big = _big(client, user)
    assert collections.abc.Mapping.get(big, "nope") is None  # the Mapping mixin's answer
    assert big.get("nope", None) is None
    sentinel = object()
    assert big.get("nope", sentinel) is sentinel
    with pytest.raises(aiosdk.NodeNotFoundError) as raised:
        big.get("nope")
    assert isinstance(raised.value, KeyError)
    assert big.get("c0001").key == "c0001"


def test_eight_threads_share_one_client_and_one_container(
    client: aiosdk.Client, user: str, expected: list[str]
) -> None:
    big = _big(client, user)
    failures: list[str] = []
    done: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        end = time.monotonic() + 2.0
        i = n
        while time.monotonic() < end:
            i = (i * 7 + 13) % N
            try:
                kind = n % 4
                if kind == 0:
                    assert list(big) == expected
                elif kind == 1:
                    assert big.values()[i].key == expected[i]
                    assert big.values()[-1 - i].key == expected[-1 - i]
                    assert big.keys()[i : i + 7] == expected[i : i + 7]
                elif kind == 2:
                    assert big[expected[i]].metadata["i"] == i
                    assert expected[i] in big
                    assert len(big) == N
                else:
                    assert [k for k, _ in big.items()[-3:]] == expected[-3:]
                    assert big.get(f"nope-{n}", "x") == "x"
                with lock:
                    done[str(kind)] += 1
            except Exception as exc:  # every call must succeed
                with lock:
                    failures.append(f"{n}: {exc!r}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[:5]
    assert set(done) == {"0", "1", "2", "3"}, done
    assert list(big) == expected  # and the client is still fine


def test_threads_pulling_from_one_shared_iterator_get_each_key_once(
    client: aiosdk.Client, user: str, expected: list[str]
) -> None:
    """One ``iter(container)`` shared by four threads: each key reaches exactly one of them,
    nothing hangs; a ``next()`` while another thread's is running may fail cleanly
    (``RuntimeError``: the async generator is already running), and is retried."""
    keys = iter(_big(client, user))
    got: list[str] = []
    clashes: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def pull() -> None:
        while True:
            try:
                key = next(keys)
            except StopIteration:
                return
            except RuntimeError as exc:
                with lock:
                    clashes.append(str(exc))
                time.sleep(0.001)
                continue
            except Exception as exc:
                with lock:
                    failures.append(repr(exc))
                return
            with lock:
                got.append(key)

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "a thread is stuck on the shared iterator"
    assert not failures, failures[:5]
    assert all("already running" in c for c in clashes), clashes[:3]
    assert sorted(got) == expected, (len(got), len(set(got)))


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp")
def test_breaking_out_and_dropping_iterators_leaks_no_connection(
    server: ServerThread, client: aiosdk.Client, user: str, expected: list[str]
) -> None:
    big = _big(client, user)
    port = server.server.http_port

    def abandon(rounds: int) -> None:
        for n in range(rounds):
            for key in big:  # break out of the first page
                assert key == expected[0]
                break
            values = iter(big.values())
            assert next(values).key == expected[0]
            del values  # dropped after one entry
            items = iter(big.items())
            for _ in range(101):  # into the second page
                next(items)
            del items  # dropped in its second page
            keys = iter(big.sort(("i", aiosdk.DESCENDING)).keys())
            assert next(keys) == expected[-1]
            keys = iter(big.keys())  # the first one dropped by rebinding the name
            assert next(keys) == expected[0]
            if n % 8 == 0:
                gc.collect()

    abandon(4)
    gc.collect()
    time.sleep(0.2)
    before = connections_to(port)
    abandon(24)
    gc.collect()
    time.sleep(0.2)
    after = connections_to(port)
    assert after <= before + 2, (before, after)  # what a dropped listing held, it gave back
    assert list(big) == expected  # and the client still lists everything


def _active_streams(client: aiosdk.Client) -> int:
    return int(client.get_status().active_streams)


def _wait_for_streams(client: aiosdk.Client, count: int, seconds: float = 5) -> int:
    deadline = time.monotonic() + seconds
    while (active := _active_streams(client)) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    return active


def test_breaking_out_of_a_watch_and_dropping_it_ends_the_server_stream(
    client: aiosdk.Client, user: str
) -> None:
    watched = client.catalog.create_container(f"{user}/watched-{secrets.token_hex(3)}")
    baseline = _active_streams(client)

    def create_soon(key: str) -> threading.Timer:
        timer = threading.Timer(0.3, lambda: watched.create_container(key))
        timer.start()
        return timer

    for n in range(3):
        timer = create_soon(f"b{n}")
        for event in watched.watch():
            assert event.kind == "created"
            break
        timer.join()
        assert _wait_for_streams(client, baseline) == baseline, f"break {n}"

    for n in range(3):
        timer = create_soon(f"d{n}")
        events = watched.watch()
        assert next(events).key == f"d{n}"
        assert _active_streams(client) == baseline + 1
        del events
        timer.join()
        assert _wait_for_streams(client, baseline) == baseline, f"drop {n}"

    never_started = watched.watch()  # dropped before its first step: nothing was opened
    del never_started
    gc.collect()
    assert _wait_for_streams(client, baseline) == baseline


def test_a_blocking_call_from_aiosdk_s_own_loop_is_a_clear_error(
    client: aiosdk.Client, user: str, expected: list[str]
) -> None:
    """From a coroutine on the facade's loop thread (a callback of the user's, say): every use
    of the container raises at once instead of deadlocking, and warns of nothing (no coroutine
    left unawaited); the client stays usable."""
    big = _big(client, user)
    uses = {
        "index": lambda: big["c0001"],
        "len": lambda: len(big),
        "contains": lambda: "c0001" in big,
        "list": lambda: list(big),
        "next": lambda: next(iter(big.values())),
        "view-index": lambda: big.values()[-1],
        "slice": lambda: big.keys()[:3],
        "count": big.count,
        "get": lambda: big.get("nope"),
    }
    for name, use in uses.items():

        async def on_the_loop(use: collections.abc.Callable[[], object] = use) -> None:
            use()

        started = time.monotonic()
        with pytest.raises(RuntimeError, match="own event loop thread"):
            portal.call(on_the_loop())
        assert time.monotonic() - started < 5, name
    gc.collect()
    assert list(big) == expected


def test_a_blocking_call_from_a_thread_running_its_own_loop_works(
    client: aiosdk.Client, user: str, expected: list[str], blockbuster: object
) -> None:
    """As in a notebook: a loop runs in the calling thread, the blocking call blocks it (as the
    user asked), the answer is right."""
    blockbuster.deactivate()  # type: ignore[attr-defined]
    big = _big(client, user)

    async def cell() -> list[str]:
        return [big.values()[-1].key, *list(big)[:2], str(len(big))]

    result: list[list[str]] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(cell())))
    thread.start()
    thread.join(30)
    assert result == [[expected[-1], *expected[:2], str(N)]]


FORK = """
import os, sys, aiosdk
from outside._in_scripts import exit_status_of, in_a_forked_child

url, user = sys.argv[1:3]
password = os.environ["AIOSDK_TEST_PASSWORD"]
N = {n}
expected = [f"c{{i:04d}}" for i in range(N)]

client = aiosdk.Client(url, timeout=5, retry_mode="disabled")
client.login(username=user, password=password)
big = client.catalog[f"{{user}}/big"]
assert list(big) == expected
in_flight = iter(big)  # a listing in the middle of its first page at the fork
assert [next(in_flight) for _ in range(50)] == expected[:50]

def check(container):
    assert len(container) == N
    assert container["c0007"].metadata["i"] == 7
    assert container.values()[-1].key == expected[-1]
    assert list(container) == expected

def child():
    status = 0
    check(big)  # the inherited client's container
    try:  # the listing in flight: its next pages, or a clean error
        rest = list(in_flight)
        assert rest == expected[50:], (len(rest), rest[:3])
    except aiosdk.AiosdkError as exc:
        print("child in-flight:", repr(exc), file=sys.stderr)
        status = 3
    check(client.catalog[f"{{user}}/big"])
    return status

pid = in_a_forked_child(child, alarm=20)
check(big)  # while the child runs
assert list(in_flight) == expected[50:]
status = exit_status_of(pid)
check(big)  # and after it is gone
print("parent ok, child", status)
client.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_uses_the_inherited_container_and_the_parent_goes_on(
    server: ServerThread, user: str
) -> None:
    out = run_script(
        FORK.format(n=N), server.http_url, user, env={"AIOSDK_TEST_PASSWORD": PASSWORD}
    )
    assert "parent ok" in out, out


SIGNALS = """
import os, sys, time, aiosdk
from outside._in_scripts import interrupted_runs

url, user = sys.argv[1:3]
password = os.environ["AIOSDK_TEST_PASSWORD"]
N = {n}
expected = [f"c{{i:04d}}" for i in range(N)]

client = aiosdk.Client(url, timeout=5, retry_mode="disabled")
client.login(username=user, password=password)
big = client.catalog[f"{{user}}/big"]
started = time.monotonic()
assert list(big.values()) and time.monotonic() - started < 10
full = time.monotonic() - started

def as_before():  # after any interrupt: the client lists, indexes and counts as before
    assert list(big) == expected
    assert big.values()[-1].key == expected[-1]
    assert len(big) == N

# A long listing, with full metadata, to the end.
interrupted = interrupted_runs(
    lambda: list(big.values()), runs=16, seconds=full, parts=18, then=as_before
)
assert interrupted >= 3, interrupted
import gc
gc.collect()
print("ok", interrupted)
client.close()
"""


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_ctrl_c_during_a_long_listing_raises_and_leaves_the_client_usable(
    server: ServerThread, user: str
) -> None:
    out = run_script(
        SIGNALS.format(n=N),
        server.http_url,
        user,
        env={"AIOSDK_TEST_PASSWORD": PASSWORD},
        timeout=90,
    )
    assert out.split()[0] == "ok", out
