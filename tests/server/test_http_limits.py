"""The HTTP port's limits against raw-socket abuse: head size, head and body deadlines, the
connection cap, and the answers the protocol writes itself."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from aiosdk.server import Server

from .wire import GUARD_SECONDS, RawHttp, request, serving

pytestmark = pytest.mark.anyio

HEAD_LIMIT = 4096


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One server with a small head limit and short deadlines, for the whole module."""
    async with serving(
        tmp_path_factory.mktemp("data"),
        max_header_bytes=HEAD_LIMIT,
        header_timeout_seconds=0.5,
        http_idle_timeout_seconds=0.5,
    ) as running:
        yield running


def authorized(server: Server, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_token}", **headers}


def padded_to(size: int, server: Server) -> bytes:
    """An authenticated ``GET /api/v1/`` whose head is exactly ``size`` bytes."""
    headers = authorized(server, **{"X-Padding": ""})
    unpadded = len(request(headers=headers))
    headers["X-Padding"] = "p" * (size - unpadded)
    data = request(headers=headers)
    assert len(data) == size
    return data


@pytest.mark.parametrize("size", [HEAD_LIMIT - 1, HEAD_LIMIT])
async def test_a_head_within_the_limit_is_served(server: Server, size: int) -> None:
    async with RawHttp.connect(server) as http:
        await http.send(padded_to(size, server))
        assert (await http.response()).status == 200


async def test_a_head_over_the_limit_is_a_431_in_the_error_shape(server: Server) -> None:
    async with RawHttp.connect(server) as http:
        await http.send(padded_to(HEAD_LIMIT + 1, server))
        response = await http.response()
        assert response.status == 431
        error = response.error()
        assert error["type"] == "invalid_request"
        assert str(HEAD_LIMIT) in error["message"]
        assert response.headers["connection"] == "close"
        assert await http.closed_by_server() == b""


async def test_a_head_that_never_ends_is_cut_off(server: Server) -> None:
    """Bytes of one header keep coming, never its end: answered once past the limit."""
    async with RawHttp.connect(server) as http:
        await http.send(b"GET /api/v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
        with anyio.fail_after(GUARD_SECONDS):
            async with anyio.create_task_group() as group:

                async def keep_sending() -> None:
                    with contextlib.suppress(anyio.BrokenResourceError, ConnectionError):
                        while True:
                            await http.send(b"x" * 1024)
                            await anyio.lowlevel.checkpoint()

                group.start_soon(keep_sending)
                response = await http.response()
                group.cancel_scope.cancel()
    assert response.status == 431
    assert response.error()["type"] == "invalid_request"


async def test_a_huge_header_costs_nothing_past_the_limit(server: Server) -> None:
    """8 MiB in one header (httptools alone would copy it over and over) is a quick 431."""
    async with RawHttp.connect(server) as http:
        head = b"GET /api/v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"x" * (8 << 20)
        with anyio.fail_after(GUARD_SECONDS), contextlib.suppress(anyio.BrokenResourceError):
            await http.send(head + b"\r\n\r\n")
        assert (await http.response()).status == 431


async def test_pipelined_answers_stay_in_order(server: Server) -> None:
    """A request over the limit behind one being answered: that one is answered, then the
    connection closes (a 431 written at once would have come first)."""
    async with RawHttp.connect(server) as http:
        await http.send(request(headers=authorized(server)) + padded_to(HEAD_LIMIT + 1, server))
        assert (await http.response()).status == 200
        assert await http.closed_by_server() == b""


async def test_pipelined_requests_within_the_limit_are_all_served(server: Server) -> None:
    async with RawHttp.connect(server) as http:
        await http.send(request(headers=authorized(server)) + padded_to(HEAD_LIMIT, server))
        assert (await http.response()).status == 200
        assert (await http.response()).status == 200


async def test_a_body_is_not_counted_as_head(server: Server) -> None:
    """Head and a body larger than the head limit, in one write: served."""
    body = b'{"label": "' + b"b" * (2 * HEAD_LIMIT) + b'"}'
    headers = authorized(server, **{"Content-Type": "application/json"})
    async with RawHttp.connect(server) as http:
        await http.send(request("POST", "/api/v1/tokens", headers, body))
        assert (await http.response()).status == 422  # the label is too long: read, refused


async def test_keep_alive_requests_each_get_the_full_limit(server: Server) -> None:
    async with RawHttp.connect(server) as http:
        for _ in range(3):
            await http.send(padded_to(HEAD_LIMIT, server))
            assert (await http.response()).status == 200


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # a connection that never says anything
        b"GET /api/v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # a head that stops halfway
    ],
)
async def test_a_request_head_must_arrive_in_time(server: Server, sent: bytes) -> None:
    async with RawHttp.connect(server) as http:
        await http.send(sent)
        assert await http.closed_by_server() == b""


async def test_a_trickled_head_is_closed_when_its_time_is_up(server: Server) -> None:
    """One byte at a time, each well within any idle timeout: the deadline is for the head."""
    async with RawHttp.connect(server) as http:
        await http.send(b"GET /api/v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        with anyio.fail_after(GUARD_SECONDS):
            with contextlib.suppress(anyio.BrokenResourceError, ConnectionError):
                while True:
                    await http.send(b"s")
                    await anyio.sleep(0.05)
    # Sending failed: the server closed the connection.


async def test_the_next_request_on_a_connection_gets_its_own_deadline(server: Server) -> None:
    async with RawHttp.connect(server) as http:
        await http.send(request(headers=authorized(server)))
        assert (await http.response()).status == 200
        await http.send(b"GET /api/v1/ HTTP/1.1\r\n")  # and then nothing
        assert await http.closed_by_server() == b""


async def test_an_idle_keep_alive_connection_is_closed(server: Server) -> None:
    async with RawHttp.connect(server) as http:
        await http.send(request(headers=authorized(server)))
        assert (await http.response()).status == 200
        assert await http.closed_by_server() == b""


async def test_a_stalled_request_body_is_closed(server: Server) -> None:
    async with RawHttp.connect(server) as http:
        head = request("POST", "/api/v1/tokens", authorized(server, **{"Content-Length": "100"}))
        await http.send(head + b'{"label": ')
        assert await http.closed_by_server() == b""


async def test_a_slow_body_that_keeps_coming_is_read(server: Server) -> None:
    """The body deadline is for a stall, not for the whole body."""
    body = b'{"label": "' + b"s" * 40 + b'"}'
    async with RawHttp.connect(server) as http:
        headers = authorized(server, **{"Content-Type": "application/json"})
        await http.send(request("POST", "/api/v1/tokens", headers)[:-2])
        await http.send(f"Content-Length: {len(body)}\r\n\r\n".encode())
        for start in range(0, len(body), 4):  # about 1.3 s in all, 0.1 s between pieces
            await http.send(body[start : start + 4])
            await anyio.sleep(0.1)
        assert (await http.response()).status == 201


async def test_a_malformed_request_is_a_400_in_the_error_shape(server: Server) -> None:
    async with RawHttp.connect(server) as http:
        await http.send(b"GET /api/v1/ HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n")
        response = await http.response()
        assert response.status == 400
        assert response.error()["type"] == "invalid_request"
        assert await http.closed_by_server() == b""


async def test_connections_past_the_cap_are_answered_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        serving(tmp_path, max_connections=3, header_timeout_seconds=60) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        silent = [await stack.enter_async_context(RawHttp.connect(server)) for _ in range(3)]
        for _ in range(3):
            async with RawHttp.connect(server) as http:
                await http.send(request(headers=authorized(server)))
                response = await http.response()
                assert response.status == 503
                assert response.error()["type"] == "unavailable"
                assert response.headers["retry-after"] == "1"
                assert await http.closed_by_server() == b""
        refusals = [r for r in caplog.records if "at its limit of 3 connections" in r.message]
        assert len(refusals) == 1  # reported at a bounded rate, not once per connection

        await silent[0].stream.aclose()  # a slot frees up...
        with anyio.fail_after(GUARD_SECONDS):
            while True:  # ...once the server has seen the close
                async with RawHttp.connect(server) as http:
                    await http.send(request(headers=authorized(server)))
                    if (await http.response()).status == 200:
                        break
                await anyio.sleep(0.01)


async def test_a_refused_connection_that_sends_nothing_is_closed(tmp_path: Path) -> None:
    async with (
        serving(tmp_path, max_connections=1, header_timeout_seconds=60) as server,
        RawHttp.connect(server),
        RawHttp.connect(server) as refused,
    ):
        assert await refused.closed_by_server() == b""


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiosdk.server")
