"""The embedded default: one call starts a real server in-process; closing the client stops it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest

import aiosdk

pytestmark = pytest.mark.anyio


def accepts_connections(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except OSError:
        return False
    return True


async def test_embedded_starts_serves_and_stops(blockbuster: object) -> None:
    client = aiosdk.embedded()
    assert client.url is None  # nothing runs until it is used
    async with client:
        url = client.url
        assert url is not None
        assert url.startswith("http://127.0.0.1:")
        assert (await client.server_info()).principal == "admin"
        assert (await client.get_status()).version == aiosdk.__version__
    blockbuster.deactivate()  # type: ignore[attr-defined]  # the probe below is a blocking socket
    assert not accepts_connections(url)
    with pytest.raises(aiosdk.ClientClosedError, match="closed"):
        await client.server_info()


async def test_embedded_starts_on_first_call_without_async_with() -> None:
    client = aiosdk.AsyncClient.embedded(retry_mode="forceful")
    try:
        assert (await client.server_info()).name == "aiosdk"
        assert client.options.retry.mode is aiosdk.RetryMode.FORCEFUL
    finally:
        await client.aclose()


def test_sync_embedded_keeps_a_given_data_directory(tmp_path: Path) -> None:
    with aiosdk.Client.embedded(data_dir=tmp_path) as client:
        kept = client.tokens.create("kept")
        assert client.server_info().name == "aiosdk"
    with aiosdk.Client.embedded(data_dir=tmp_path) as client:  # a second run, same data
        assert client.tokens.get(kept.id).label == "kept"


async def test_a_cancelled_close_still_stops_the_server(blockbuster: object) -> None:
    client = aiosdk.embedded()
    with anyio.move_on_after(2):
        async with client:
            url = client.url
            assert url is not None
            await anyio.sleep(30)  # cancelled here: __aexit__ runs under cancellation
    blockbuster.deactivate()  # type: ignore[attr-defined]  # the probe below is a blocking socket
    assert not accepts_connections(url)


def run_in_fresh_interpreter(source: str, tmp_path: Path) -> str:
    """Run ``source`` with its temporary files in ``tmp_path``; return what it printed."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_an_unclosed_embedded_client_leaves_no_temporary_directory(tmp_path: Path) -> None:
    out = run_in_fresh_interpreter(
        """
        import asyncio, os, aiosdk

        async def main():
            client = aiosdk.embedded()  # never closed
            await client.server_info()
            print(client._ctx.transport._bootstrap._thread.data_dir)

        asyncio.run(main())
        sync = aiosdk.Client.embedded()  # never closed either
        sync.server_info()
        if os.fork() == 0:  # a forked child exits normally: it must not delete the parent's data
            raise SystemExit(0)
        os.wait()
        print(sorted(os.listdir(os.environ["TMPDIR"])))
        """,
        tmp_path,
    )
    data_dir, listing = out.splitlines()
    assert Path(data_dir).parent == tmp_path
    assert len(eval(listing)) == 2  # both servers' directories, still there after the child
    assert not list(tmp_path.glob("aiosdk-*"))  # and gone once the interpreter exited


def test_cancelling_the_first_call_does_not_orphan_the_server(tmp_path: Path) -> None:
    # Cancelled at every stage of the start (importing, creating the database, binding,
    # serving), by plain asyncio cancellation, which anyio's shield around the worker thread
    # does not hold against: each server that got started is stopped by aclose().
    out = run_in_fresh_interpreter(
        """
        import asyncio, os, threading, aiosdk

        def servers():
            return [t for t in threading.enumerate() if t.name == "aiosdk-server"]

        async def first_call_cancelled_after(delay):
            client = aiosdk.embedded()
            try:
                async with asyncio.timeout(delay):
                    await client.server_info()
            except TimeoutError:
                pass
            return client

        async def first_call_cancelled_while_the_server_starts():
            # Whatever the machine's speed: cancelled once the server thread runs, not sooner.
            client = aiosdk.embedded()
            call = asyncio.ensure_future(client.server_info())
            while not servers() and not call.done():
                await asyncio.sleep(0.001)
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            return client

        async def main():
            delays = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]
            clients = [await first_call_cancelled_after(delay) for delay in delays]
            clients.append(await first_call_cancelled_while_the_server_starts())
            for client in clients:
                await client.aclose()
            print(len(servers()), len(os.listdir(os.environ["TMPDIR"])))

        asyncio.run(main())
        """,
        tmp_path,
    )
    assert out.split() == ["0", "0"]
