"""The blocking facade's ``ArrayClient`` used with hostility: Ctrl-C (SIGINT) in the middle of a
large ``read()``, ``iter_blocks`` broken out of (and dropped) from other threads, eight threads
reading one ``ArrayClient`` at once, a forked child reading the array it inherited, and a
connection killed in the middle of a download by a real loopback proxy (``forceful`` resumes
where the body stopped and returns the exact data; ``disabled`` raises a ``TransportError``).

Nothing in the client is mocked: what is left open is read from the kernel (the socket table,
a process's file descriptors). The fork and signal scenarios run in fresh interpreters (as
tests/test_fork.py does) against this module's server.
"""

from __future__ import annotations

import gc
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from faults.proxy import TcpProxy

import aiosdk
from aiosdk.server import ServerThread
from outside._tools import PASSWORD, connections_to, log_in, run_script

MB = 1024 * 1024
BIG_SHAPE = (4096, 1024)  # float64: 32 MiB, in 16 blocks of 2 MiB
BIG_CHUNKS = (256, 1024)
SMALL_SHAPE = (300, 70)  # 42 blocks of 64 x 16 (edges smaller)
SMALL_CHUNKS = (64, 16)
ONE_BLOCK_SHAPE = (1024, 1024)  # 8 MiB in one block: one body to cut


def big_values() -> np.ndarray:
    return np.arange(BIG_SHAPE[0] * BIG_SHAPE[1], dtype="<f8").reshape(BIG_SHAPE)


def small_values() -> np.ndarray:
    return (np.arange(SMALL_SHAPE[0] * SMALL_SHAPE[1], dtype="<i8") * 7 - 3).reshape(SMALL_SHAPE)


def one_block_values() -> np.ndarray:
    return np.random.default_rng(5).standard_normal(ONE_BLOCK_SHAPE)


@pytest.fixture(scope="module")
def user(server: ServerThread) -> str:
    """A user owning ``{user}/d`` with ``big`` (32 MiB), ``small`` and ``one`` (8 MiB, one
    block)."""
    username = f"hd-{secrets.token_hex(5)}"
    with aiosdk.Client(server.http_url, token=server.admin_token) as admin:
        admin.admin.create_user(username, password=PASSWORD)
    with aiosdk.Client(server.http_url, timeout=60) as client:
        client.login(username=username, password=PASSWORD)
        group = client.catalog.create_container(f"{username}/d")
        group.write_array(big_values(), key="big", chunks=BIG_CHUNKS)
        group.write_array(small_values(), key="small", chunks=SMALL_CHUNKS)
        group.write_array(one_block_values(), key="one", chunks=ONE_BLOCK_SHAPE)
    return username


@pytest.fixture
def client(server: ServerThread, user: str) -> Iterator[aiosdk.Client]:
    with aiosdk.Client(server.http_url, timeout=20, retry_mode="disabled") as opened:
        opened.login(username=user, password=PASSWORD)
        yield opened


def _array(client: aiosdk.Client, path: str) -> aiosdk.ArrayClient:
    found = client.catalog[path]
    assert isinstance(found, aiosdk.ArrayClient)
    return found


def _settle(port: int, at_most: int, seconds: float = 5.0) -> int:
    deadline = time.monotonic() + seconds
    while (count := connections_to(port)) > at_most and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    return count


# -- threads ---------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp")
def test_breaking_out_of_iter_blocks_in_threads_leaks_no_connection(
    server: ServerThread, client: aiosdk.Client, user: str
) -> None:
    """Four threads at once each break out of ``iter_blocks`` after two blocks, drop one after
    one block, and drop another made in a different thread: nothing stays in flight."""
    small = _array(client, f"{user}/d/small")
    expected = small_values()
    port = server.server.http_port
    np.testing.assert_array_equal(small.read(), expected)  # the pool warmed up
    gc.collect()
    time.sleep(0.2)
    before = connections_to(port)
    failures: list[str] = []
    handed: list[Iterator[tuple[tuple[int, ...], np.ndarray]]] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            for _ in range(6):
                for n, (index, block) in enumerate(small.iter_blocks(concurrency=8)):
                    i, j = index
                    np.testing.assert_array_equal(
                        block, expected[i * 64 : i * 64 + 64, j * 16 : j * 16 + 16]
                    )
                    if n == 1:
                        break
                dropped = small.iter_blocks(concurrency=4)
                assert next(dropped)[0] == (0, 0)
                del dropped
                with lock:
                    handed.append(small.iter_blocks(concurrency=4))
        except Exception as exc:
            with lock:
                failures.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck in iter_blocks"
    assert not failures, failures[:5]
    # Iterators made in those threads, started and dropped in this one.
    for made in handed:
        assert next(made)[0] == (0, 0)
    handed.clear()
    after = _settle(port, before + 2)
    assert after <= before + 2, (before, after)
    np.testing.assert_array_equal(small.read(), expected)  # and the client still reads


def test_eight_threads_read_one_array_client_at_once(client: aiosdk.Client, user: str) -> None:
    small = _array(client, f"{user}/d/small")
    expected = small_values()
    failures: list[str] = []
    done = [0] * 8
    start = threading.Barrier(8)

    def work(n: int) -> None:
        rng = np.random.default_rng(n)
        start.wait()
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                kind = n % 4
                if kind == 0:
                    np.testing.assert_array_equal(small.read(), expected)
                elif kind == 1:
                    a, b = sorted(rng.integers(-300, 300, 2))
                    step = int(rng.integers(1, 9)) * (1 if rng.random() < 0.5 else -1)
                    index = np.s_[a:b:step, ::3]
                    np.testing.assert_array_equal(small.read(slice=index), expected[index])
                elif kind == 2:
                    i, j = int(rng.integers(0, 5)), int(rng.integers(0, 5))
                    got = small.read_block((i, j))
                    np.testing.assert_array_equal(
                        got, expected[i * 64 : i * 64 + 64, j * 16 : j * 16 + 16]
                    )
                else:
                    blocks = dict(small.iter_blocks(concurrency=3))
                    assert len(blocks) == 5 * 5
                    np.testing.assert_array_equal(blocks[4, 4], expected[256:, 64:])
                done[n] += 1
            except Exception as exc:
                failures.append(f"{n}: {exc!r}")
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a reader is stuck"
    assert not failures, failures[:5]
    assert all(done), done
    assert small.shape == SMALL_SHAPE


# -- a connection killed mid-download, through a real proxy -----------------------------------


@pytest.fixture
def proxy(server: ServerThread) -> Iterator[TcpProxy]:
    """A :class:`~faults.proxy.TcpProxy` to the server: its ``cut_after`` resets a connection
    in the middle of a response body."""
    started = TcpProxy("127.0.0.1", server.server.http_port).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def token(server: ServerThread, user: str) -> str:
    """An access token of ``user`` (a login of its own, over plain HTTP)."""
    return log_in(server, user)


SIZE = ONE_BLOCK_SHAPE[0] * ONE_BLOCK_SHAPE[1] * 8


@pytest.mark.parametrize("cut", [SIZE // 2, SIZE - 100, 3 * MB + 17])
def test_forceful_resumes_a_killed_download_and_returns_the_exact_data(
    proxy: TcpProxy, user: str, token: str, cut: int
) -> None:
    with aiosdk.Client(proxy.url, token=token, retry_mode="forceful", timeout=20) as client:
        one = _array(client, f"{user}/d/one")
        proxy.cut_after(cut)
        got = one.read(concurrency=1)
        assert proxy.cuts == 1
        starts = proxy.range_starts()
    np.testing.assert_array_equal(got, one_block_values())
    # Resumed where it stopped: one Range request, from a byte past 0 and not past the cut
    # (what the client had received: the sockets between may hold some of what was relayed).
    assert len(starts) == 1, starts
    assert 0 < starts[0] <= cut, (starts, cut)


def test_forceful_resumes_killed_block_reads_too(proxy: TcpProxy, user: str, token: str) -> None:
    """Cut in the middle of one of 16 blocks read 4 at a time, then again in ``iter_blocks``."""
    with aiosdk.Client(proxy.url, token=token, retry_mode="forceful", timeout=20) as client:
        big = _array(client, f"{user}/d/big")
        proxy.cut_after(5 * MB + 123)
        np.testing.assert_array_equal(big.read(concurrency=4), big_values())
        assert proxy.cuts == 1
        proxy.cut_after(7 * MB + 5)
        blocks = dict(big.iter_blocks(concurrency=2))
        assert proxy.cuts == 2
    expected = big_values()
    for (i, _), block in blocks.items():
        np.testing.assert_array_equal(block, expected[i * 256 : i * 256 + 256])


def test_disabled_raises_a_transport_error_on_a_killed_download(
    proxy: TcpProxy, user: str, token: str
) -> None:
    with aiosdk.Client(proxy.url, token=token, retry_mode="disabled", timeout=20) as client:
        one = _array(client, f"{user}/d/one")
        proxy.cut_after(SIZE // 2)
        with pytest.raises(aiosdk.TransportError):
            one.read(concurrency=1)
        assert proxy.cuts == 1
        # The client is fine afterwards.
        np.testing.assert_array_equal(one.read(), one_block_values())


# -- fork and Ctrl-C, in fresh interpreters ------------------------------------------------------


COMMON = """
import gc, os, sys, time
import numpy as np
import aiosdk
from outside._in_scripts import exit_status_of, in_a_forked_child, interrupted_runs

url, user = sys.argv[1:3]
token = os.environ["AIOSDK_TEST_TOKEN"]
SHAPE = {shape}
expected = np.arange(SHAPE[0] * SHAPE[1], dtype="<f8").reshape(SHAPE)

def sockets():
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{{fd}}").startswith("socket:")
        except OSError:
            pass
    return found
"""

FORK = (
    COMMON
    + """
client = aiosdk.Client(url, token=token, timeout=20, retry_mode="disabled")
big = client.catalog[f"{{user}}/d/big"]
assert (big.read(slice=np.s_[:8]) == expected[:8]).all()

def child():
    got = big.read()  # the inherited client's array
    assert (got == expected).all()
    again = client.catalog[f"{{user}}/d/big"].read(slice=np.s_[-3:, ::7])
    assert (again == expected[-3:, ::7]).all()
    blocks = sum(1 for _ in big.iter_blocks(concurrency=4))
    assert blocks == 16, blocks

pid = in_a_forked_child(child, alarm=30)
got = big.read()  # while the child reads
assert (got == expected).all()
status = exit_status_of(pid)
assert (big.read() == expected).all()  # and after it is gone
print("parent ok, child", status)
client.close()
"""
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_reads_the_inherited_array_and_the_parent_goes_on(
    server: ServerThread, user: str, token: str
) -> None:
    out = run_script(
        FORK.format(shape=BIG_SHAPE), server.http_url, user, env={"AIOSDK_TEST_TOKEN": token}
    )
    assert out.startswith("parent ok, child 0"), out


SIGNALS = (
    COMMON
    + """
client = aiosdk.Client(url, token=token, timeout=20, retry_mode="disabled")
big = client.catalog[f"{{user}}/d/big"]
started = time.monotonic()
assert (big.read() == expected).all()
full = time.monotonic() - started
gc.collect()
baseline = sockets()

def as_before():  # after any interrupt: the client reads the whole array, exactly, again
    assert (big.read() == expected).all()

interrupted = interrupted_runs(big.read, runs=10, seconds=full, parts=12, then=as_before)
assert interrupted >= 3, interrupted
gc.collect()
time.sleep(0.3)
left = sockets()
assert left <= baseline + 1, (baseline, left)  # the interrupted reads left no connection
print("ok", interrupted, baseline, left)
client.close()
"""
)


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_ctrl_c_during_a_large_read_leaves_a_working_client_and_no_connection(
    server: ServerThread, user: str, token: str
) -> None:
    out = run_script(
        SIGNALS.format(shape=BIG_SHAPE),
        server.http_url,
        user,
        env={"AIOSDK_TEST_TOKEN": token},
        timeout=90,
    )
    assert out.split()[0] == "ok", out
