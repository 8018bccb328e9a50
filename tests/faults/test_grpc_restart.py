"""gRPC calls retried across a restart of the real server (same ports, same data directory).

gRPC needs the asyncio backend; under trio a gRPC call fails with ``UnsupportedBackendError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest

import aiosdk
from aiosdk.server import ServerConfig, ServerThread

from .conftest import RetryLog
from .scripted import ScriptedServer

pytestmark = pytest.mark.anyio

ADMIN_TOKEN = "restart-admin-token"


class RestartableServer:
    """The reference server, which can be stopped and started again on the same ports."""

    def __init__(self, data_dir: Path) -> None:
        self._config = ServerConfig(data_dir=data_dir, admin_token=ADMIN_TOKEN)
        self.thread = ServerThread(self._config)
        self.thread.start()
        port = urlsplit(self.thread.http_url).port
        assert port is not None
        self._config.http_port, self._config.grpc_port = port, self.thread.grpc_port
        self.http_url = self.thread.http_url

    def stop(self) -> None:
        self.thread.stop()

    def restart(self) -> None:
        """Start a new server on the ports of the first (after :meth:`stop`)."""
        self.thread = ServerThread(self._config)
        self.thread.start()

    async def bounce(self, downtime: float = 0.5) -> None:
        """Stop, stay down ``downtime`` seconds, start again (blocking parts in a thread)."""
        await anyio.to_thread.run_sync(self.stop)
        await anyio.sleep(downtime)
        await anyio.to_thread.run_sync(self.restart)


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[RestartableServer]:
    server = RestartableServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
async def forceful(restartable: RestartableServer) -> AsyncIterator[aiosdk.AsyncClient]:
    async with aiosdk.AsyncClient(
        restartable.http_url, token=ADMIN_TOKEN, retry_mode="forceful"
    ) as client:
        yield client


async def test_unary_call_is_retried_across_a_restart(
    restartable: RestartableServer, forceful: aiosdk.AsyncClient, retry_log: RetryLog
) -> None:
    before = await forceful.get_status()  # opens the gRPC channel
    await anyio.to_thread.run_sync(restartable.stop)
    statuses: list[aiosdk.ServerStatus] = []

    async def get_status() -> None:
        statuses.append(await forceful.get_status())

    async with anyio.create_task_group() as tg:
        tg.start_soon(get_status)
        await anyio.sleep(0.5)
        assert not statuses  # nothing serves: the call is retrying
        await anyio.to_thread.run_sync(restartable.restart)
    assert len(statuses) == 1
    assert statuses[0].version == before.version
    assert retry_log.retries


async def test_unary_call_fails_at_once_when_retries_are_disabled(
    restartable: RestartableServer, forceful: aiosdk.AsyncClient, retry_log: RetryLog
) -> None:
    await forceful.get_status()
    await anyio.to_thread.run_sync(restartable.stop)
    with pytest.raises(aiosdk.TransportError):
        await forceful.with_options(retry_mode="disabled").get_status()
    assert not retry_log.retries


async def test_stream_resumes_across_a_restart_in_forceful_mode(
    restartable: RestartableServer, forceful: aiosdk.AsyncClient, retry_log: RetryLog
) -> None:
    received: list[aiosdk.ServerStatus] = []
    async with anyio.create_task_group() as tg:
        async for status in forceful.watch_status(interval=0.3, max_updates=5):
            received.append(status)
            if len(received) == 2:
                tg.start_soon(restartable.bounce)
    sequences = [status.sequence for status in received]
    assert len(sequences) == 5  # every update owed, none twice
    assert sequences[:2] == [1, 2]
    assert 1 in sequences[2:]  # ... the rest from a new stream on the restarted server
    assert retry_log.retries


async def test_stream_is_not_resumed_after_delivering_in_default_mode(
    restartable: RestartableServer, forceful: aiosdk.AsyncClient, retry_log: RetryLog
) -> None:
    received: list[aiosdk.ServerStatus] = []

    async def watch_and_stop_the_server() -> None:
        stream = forceful.with_options(retry_mode="default").watch_status(
            interval=0.3, max_updates=50
        )
        async for status in stream:
            received.append(status)
            if len(received) == 2:
                await anyio.to_thread.run_sync(restartable.stop)

    with pytest.raises((aiosdk.ServiceUnavailableError, aiosdk.TransportError)):
        await watch_and_stop_the_server()
    assert 2 <= len(received) < 50
    assert not retry_log.retries


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_grpc_under_trio_raises_unsupported_backend(scripted: ScriptedServer) -> None:
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as client:
        with pytest.raises(aiosdk.UnsupportedBackendError):
            await client.get_status()
        with pytest.raises(aiosdk.UnsupportedBackendError):
            async for _ in client.watch_status(max_updates=1):
                pass
        assert (await client.server_info()).name == "scripted"  # HTTP still works under trio
    assert [request.method for request in scripted.requests] == ["GET"]


async def test_stream_is_not_reconnected_past_its_deadline(
    restartable: RestartableServer, forceful: aiosdk.AsyncClient, retry_log: RetryLog
) -> None:
    received: list[aiosdk.ServerStatus] = []

    async def watch_and_stop_the_server() -> None:
        async for status in forceful.with_options(deadline=1.0).watch_status(interval=0.05):
            received.append(status)
            if len(received) == 1:
                await anyio.to_thread.run_sync(restartable.stop)  # and it stays down

    started = anyio.current_time()
    with pytest.raises((aiosdk.ServiceUnavailableError, aiosdk.TransportError)):
        await watch_and_stop_the_server()
    assert anyio.current_time() - started < 5  # forceful would otherwise retry 10 times
    assert received
