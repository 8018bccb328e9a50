"""A forked child leaves its parent's connections alone.

A child that closed (or finalized) the gRPC channel it inherited unregistered the parent's socket
from the epoll set they share, and the parent's next gRPC call hung. Each scenario runs in a fresh
interpreter against the session's server: the parent uses HTTP and gRPC, forks, the child exits
(normally, with finalizers, or after using the inherited client), and the parent goes on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")

PARENT_CHECK = """
def parent_still_works(client):
    # Bounded: with the bug, the call hangs; the 5 s attempt timeout turns that into an error.
    assert client.get_status().version
    assert [s.sequence for s in client.watch_status(interval=0.05, max_updates=3)] == [1, 2, 3]
    assert client.server_info().name == "aiosdk"
"""


def run_script(source: str, server: object) -> str:
    """Run ``source`` in a fresh interpreter with the server's URL and admin token as argv."""
    url, token = server.http_url, server.admin_token  # type: ignore[attr-defined]
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), url, token],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_blocking_client_survives_children_that_exit_or_use_it(server: object) -> None:
    out = run_script(
        PARENT_CHECK
        + """
import gc, os, sys, aiosdk

client = aiosdk.Client(sys.argv[1], token=sys.argv[2], timeout=5, retry_mode="disabled")
parent_still_works(client)
for touch in (False, True):
    pid = os.fork()
    if pid == 0:
        if touch:  # the child may use the client it inherited: it gets a pool of its own
            assert client.get_status().version
            assert len(list(client.watch_status(interval=0.05, max_updates=2))) == 2
            assert client.server_info().name == "aiosdk"
        del client
        gc.collect()  # finalizers of everything the child drops run now ...
        sys.exit(0)  # ... and at a normal interpreter exit
    assert os.waitpid(pid, 0)[1] == 0
    parent_still_works(client)
    print("ok", touch)
client.close()
""",
        server,
    )
    assert out.split() == ["ok", "False", "ok", "True"]


def test_the_blocking_client_survives_a_fork_process_pool(server: object) -> None:
    out = run_script(
        PARENT_CHECK
        + """
import multiprocessing, sys, aiosdk
from concurrent.futures import ProcessPoolExecutor

client = aiosdk.Client(sys.argv[1], token=sys.argv[2], timeout=5, retry_mode="disabled")

def work(n):
    return client.get_status().version if n % 2 else client.server_info().name

parent_still_works(client)
with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
    print(sorted(set(pool.map(work, range(6)))) == sorted({aiosdk.__version__, "aiosdk"}))
parent_still_works(client)
client.close()
print("ok")
""",
        server,
    )
    assert out.split() == ["True", "ok"]


def test_an_async_client_survives_a_child_forked_from_its_loop(server: object) -> None:
    out = run_script(
        """
import asyncio, gc, os, sys, traceback, aiosdk

async def parent_still_works(client):
    assert (await client.get_status()).version
    updates = [s.sequence async for s in client.watch_status(interval=0.05, max_updates=3)]
    assert updates == [1, 2, 3]
    assert (await client.server_info()).name == "aiosdk"

async def child_uses(client):
    # The inherited client in the child's own event loop: it opens connections of its own.
    assert (await client.get_status()).version
    assert (await client.server_info()).name == "aiosdk"

def fork(client, touch):
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            if touch:
                asyncio.run(child_uses(client))
            del client
            gc.collect()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)  # the child's checks failing fail the test
    return pid

async def main():
    client = aiosdk.AsyncClient(sys.argv[1], token=sys.argv[2], timeout=5, retry_mode="disabled")
    async with client:
        await parent_still_works(client)
        for touch in (False, True):
            # Forked from a worker thread: the child must not run the parent's loop.
            pid = await asyncio.to_thread(fork, client, touch)
            status = (await asyncio.to_thread(os.waitpid, pid, 0))[1]
            assert status == 0, status
            await parent_still_works(client)
            print("ok", touch)

asyncio.run(main())
""",
        server,
    )
    assert out.split() == ["ok", "False", "ok", "True"]
