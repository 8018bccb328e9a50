"""The embedded default: one call starts a real server in-process; closing the client stops it."""

from __future__ import annotations

import socket
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
    with pytest.raises(aiosdk.ConfigurationError, match="closed"):
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
