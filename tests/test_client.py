"""The async client against the real server: HTTP calls, gRPC calls, paging, options, secrecy."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import httpx
import pytest
from grpclib.exceptions import StreamTerminatedError

import aiosdk

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Everything here except gRPC is HTTP, which runs on both backends."""
    return str(request.param)


async def test_server_info(client: aiosdk.AsyncClient, server: object) -> None:
    info = await client.server_info()
    assert info.name == "aiosdk"
    assert info.version == aiosdk.__version__
    assert info.api_version == "v1"
    assert info.grpc_port == server.grpc_port  # type: ignore[attr-defined]
    assert info.principal == "admin"
    assert info.limits["max_page_size"] >= 1


async def test_grpc_status_and_stream(client: aiosdk.AsyncClient, anyio_backend: str) -> None:
    if anyio_backend == "trio":
        with pytest.raises(aiosdk.UnsupportedBackendError, match="asyncio"):
            await client.get_status()
        return
    before = await client.get_status()
    await client.server_info()
    updates = [s async for s in client.watch_status(interval=0.05, max_updates=3)]
    assert [u.sequence for u in updates] == [1, 2, 3]
    assert updates[0].version == aiosdk.__version__
    assert updates[-1].uptime_seconds > updates[0].uptime_seconds
    assert updates[0].requests_served > before.requests_served


async def test_tokens_lifecycle(client: aiosdk.AsyncClient, server: object) -> None:
    new = await client.tokens.create("lifecycle", expires_in=3600)
    assert new.label == "lifecycle"
    assert new.expires_at is not None
    assert new.expires_at > new.created_at
    assert (await client.tokens.get(new.id)).label == "lifecycle"
    async with aiosdk.AsyncClient(client.url, token=new.secret.reveal()) as other:
        assert (await other.server_info()).principal
    await client.tokens.revoke(new.id)
    async with aiosdk.AsyncClient(client.url, token=new.secret.reveal()) as revoked:
        with pytest.raises(aiosdk.InvalidTokenError) as info:
            await revoked.server_info()
    assert info.value.status_code == 401
    async with aiosdk.AsyncClient(client.url) as anonymous:
        assert (await anonymous.server_info()).principal == "~anonymous"  # optional auth
        with pytest.raises(aiosdk.AuthenticationError) as info:
            await anonymous.tokens.get(new.id)
    assert not isinstance(info.value, aiosdk.InvalidTokenError)  # no token was sent at all
    with pytest.raises(aiosdk.NotFoundError):
        await client.tokens.get("no-such-id")


async def test_pager_yields_every_item_once(client: aiosdk.AsyncClient) -> None:
    created = {(await client.tokens.create(f"page-{i}")).id for i in range(7)}
    pager = client.tokens.list(page_size=3)
    first = await pager
    assert len(first.items) == 3
    assert first.has_next
    ids = [t.id async for t in pager]
    assert len(ids) == len(set(ids))
    assert created <= set(ids)
    pages = [page async for page in pager.pages()]
    assert all(len(p.items) <= 3 for p in pages)
    assert not pages[-1].has_next
    assert [t.id for p in pages for t in p.items] == ids


async def test_invalid_input_is_a_typed_error(client: aiosdk.AsyncClient) -> None:
    with pytest.raises(aiosdk.UnprocessableEntityError) as info:
        await client.tokens.create("")
    assert info.value.request_id
    assert "label" in info.value.message
    with pytest.raises(ValueError, match="interval"):
        await client.watch_status(interval=0).__anext__()  # validated before any I/O
    with pytest.raises(ValueError, match="retry mode"):
        client.retry_mode("sometimes")


async def test_options_reach_services_handed_out_earlier(client: aiosdk.AsyncClient) -> None:
    tokens = client.tokens
    client.retry_mode("forceful")
    assert client.options.retry.mode is aiosdk.RetryMode.FORCEFUL
    assert tokens._ctx.options.retry.mode is aiosdk.RetryMode.FORCEFUL
    once = client.with_options(retry_mode=aiosdk.RetryMode.DISABLED, timeout=5, deadline=10)
    assert once.options.retry.max_retries == 0
    assert (once.options.timeout, once.options.deadline) == (5, 10)
    assert client.options.retry.mode is aiosdk.RetryMode.FORCEFUL  # the original is unchanged
    assert (await once.server_info()).name == "aiosdk"  # shares the open pool
    with pytest.raises(ValueError, match="deadline"):
        client.with_options(deadline=-1)


async def test_tokens_never_appear_in_reprs_logs_or_errors(
    server: object, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "aio_not-a-real-token-but-secret"
    caplog.set_level(logging.DEBUG)
    client = aiosdk.AsyncClient(server.http_url, token=secret)  # type: ignore[attr-defined]
    async with client:
        with pytest.raises(aiosdk.AuthenticationError) as info:
            await client.server_info()
    assert "GET / -> 401" in caplog.text  # the request was logged, without its credentials
    for text in (repr(client), str(info.value), repr(info.value), caplog.text):
        assert secret not in text
    assert repr(aiosdk.Secret(secret)) == "Secret('***')"


async def test_new_token_secret_is_hidden(client: aiosdk.AsyncClient) -> None:
    new = await client.tokens.create("hidden")
    assert new.secret.reveal() not in repr(new)
    assert new.secret.reveal() not in str(new)


async def test_closed_client_refuses_calls(server: object, anyio_backend: str) -> None:
    client = aiosdk.AsyncClient(server.http_url, token=server.admin_token)  # type: ignore[attr-defined]
    await client.server_info()
    await client.aclose()
    with pytest.raises(aiosdk.ClientClosedError, match="closed"):
        await client.server_info()
    with pytest.raises(aiosdk.ClientClosedError):
        await client.with_options(retry_mode="forceful").tokens.get("x")  # shares the pool
    if anyio_backend == "asyncio":
        with pytest.raises(aiosdk.ClientClosedError):
            await client.get_status()
        with pytest.raises(aiosdk.ClientClosedError):
            await client.watch_status().__anext__()


async def test_cancelled_call_releases_its_connection(client: aiosdk.AsyncClient) -> None:
    with anyio.move_on_after(0.001):
        await client.server_info()
    # The pool is still healthy, and nothing leaks (the suite fails on ResourceWarning).
    assert (await client.server_info()).name == "aiosdk"


async def test_transport_choice_is_visible_and_overridable(
    client: aiosdk.AsyncClient, server: object, anyio_backend: str
) -> None:
    await client.server_info()
    expected = "AsyncioTransport" if anyio_backend == "asyncio" else "AsyncHTTPTransport"
    assert f"http={expected}" in repr(client)
    own = httpx.AsyncHTTPTransport()
    async with aiosdk.AsyncClient(
        server.http_url,  # type: ignore[attr-defined]
        token=server.admin_token,  # type: ignore[attr-defined]
        http_transport=own,
    ) as chosen:
        assert (await chosen.server_info()).name == "aiosdk"
        assert "http=AsyncHTTPTransport" in repr(chosen)


class FailingStub:
    """A stub whose call fails on the wire after reaching the server, as a dropped stream does."""

    keys: list[str | None] = []  # noqa: RUF012 - the calls' idempotency keys, in order

    def __init__(self, channel: object, *, metadata: dict[str, str], **_: object) -> None:
        self._key = metadata.get("idempotency-key")

    async def mutate(self) -> None:
        type(self).keys.append(self._key)
        raise StreamTerminatedError("connection lost mid-call")

    async def watch(self, last: object) -> AsyncIterator[int]:
        type(self).keys.append(self._key)
        raise StreamTerminatedError("connection lost before the first item")
        yield 0  # (an async generator)


QUICK_FORCEFUL = aiosdk.RetryPolicy(
    aiosdk.RetryMode.FORCEFUL, backoff_initial=0.001, backoff_max=0.002
)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("idempotent", [True, False])
async def test_forceful_retries_a_mutating_grpc_call_under_one_idempotency_key(
    client: aiosdk.AsyncClient, idempotent: bool
) -> None:
    FailingStub.keys = []
    with pytest.raises(aiosdk.ProtocolError):
        await client._ctx.transport.grpc_unary(
            FailingStub,
            lambda stub: stub.mutate(),
            idempotent=idempotent,
            options=client.with_options(retry=QUICK_FORCEFUL).options,
            what="Mutate",
        )
    assert len(FailingStub.keys) == 11  # forceful's 10 retries, safe either way ...
    if idempotent:
        assert FailingStub.keys == [None] * 11  # ... an idempotent call needs no key
    else:  # ... a mutating one carries a key, the same on every attempt
        assert FailingStub.keys[0] is not None
        assert set(FailingStub.keys) == {FailingStub.keys[0]}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("idempotent", "attempts"), [(True, 11), (False, 1)])
async def test_forceful_retries_a_stream_that_reached_the_server_only_if_idempotent(
    client: aiosdk.AsyncClient, idempotent: bool, attempts: int
) -> None:
    # Streams carry no idempotency key: one that is not idempotent gets default's rules.
    FailingStub.keys = []
    with pytest.raises(aiosdk.ProtocolError):
        async for _ in client._ctx.transport.grpc_stream(
            FailingStub,
            lambda stub, last: stub.watch(last),
            idempotent=idempotent,
            options=client.with_options(retry=QUICK_FORCEFUL).options,
            what="Watch",
        ):
            pass
    assert FailingStub.keys == [None] * attempts


class FlakyStreamStub:
    """A stream that delivers one item per connection, then breaks, ``breaks`` times over."""

    breaks = 0

    def __init__(self, channel: object, **_: object) -> None:
        pass

    async def watch(self, last: int | None) -> AsyncIterator[int]:
        item = 0 if last is None else last + 1
        yield item
        if type(self).breaks:
            type(self).breaks -= 1
            raise StreamTerminatedError("connection lost mid-stream")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_forceful_stream_that_keeps_progressing_keeps_resuming(
    client: aiosdk.AsyncClient,
) -> None:
    # More interruptions than forceful's 10 retries of one failure, and than the client's retry
    # budget pays for (500 tokens, 5 a retry) if progress did not give it back.
    FlakyStreamStub.breaks = 150
    quick = aiosdk.RetryPolicy(aiosdk.RetryMode.FORCEFUL, backoff_initial=0.001, backoff_max=0.002)
    items = client._ctx.transport.grpc_stream(
        FlakyStreamStub,
        lambda stub, last: stub.watch(last),
        idempotent=True,
        options=client.with_options(retry=quick).options,
        what="Watch",
    )
    assert [item async for item in items] == list(range(151))  # each resumed after the last
    budget = client._ctx.transport.budget
    assert budget.tokens == budget.capacity


async def test_concurrent_first_calls_build_one_pool(
    server: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiosdk")
    client = aiosdk.AsyncClient(server.http_url, token=server.admin_token)  # type: ignore[attr-defined]
    async with client, anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(client.server_info)
    assert caplog.text.count("HTTP pool opened") == 1


async def test_resizing_the_pool_while_it_is_built_is_not_lost(server: object) -> None:
    async with aiosdk.AsyncClient(server.http_url, token=server.admin_token) as client:  # type: ignore[attr-defined]
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.server_info)
            await anyio.lowlevel.checkpoint()  # the first call is building the pool now
            client.set_threads(5)
        assert client._ctx.transport._pool is not None
        await client.server_info()
        assert client._ctx.transport.limits.max_connections == 5


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_refused_token_is_an_invalid_token_error_on_grpc_too(
    client: aiosdk.AsyncClient,
) -> None:
    new = await client.tokens.create("grpc-then-revoked")
    async with aiosdk.AsyncClient(client.url, token=new.secret.reveal()) as holder:
        assert (await holder.get_status()).version  # the channel is open and authenticated
        await client.tokens.revoke(new.id)
        with pytest.raises(aiosdk.InvalidTokenError) as info:
            await holder.get_status()  # refused by the gRPC server itself
    assert info.value.grpc_status == "UNAUTHENTICATED"


def test_a_client_used_from_a_second_event_loop_says_so(server: object) -> None:
    client = aiosdk.AsyncClient(server.http_url, token=server.admin_token)  # type: ignore[attr-defined]
    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(client.server_info()).name == "aiosdk"
        # A clear SDK error, not a RuntimeError from deep inside asyncio (or a hang).
        with pytest.raises(aiosdk.ConfigurationError, match="first used it, and this is another"):
            asyncio.run(client.server_info())
        with pytest.raises(aiosdk.ConfigurationError, match="event loop"):
            asyncio.run(client.get_status())
        first.run_until_complete(client.aclose())
    finally:
        first.close()


def test_a_client_whose_first_loop_closed_says_so() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = aiosdk.AsyncClient(f"http://127.0.0.1:{port}", retry_mode="disabled")
    with pytest.raises(aiosdk.ConnectError):  # the pool now belongs to this first loop
        asyncio.run(client.server_info())
    # "RuntimeError: Event loop is closed" used to come out of asyncio here.
    with pytest.raises(aiosdk.ConfigurationError, match="which is closed now"):
        asyncio.run(client.server_info())


async def test_a_pager_that_cycles_is_a_protocol_error() -> None:
    cursors = {None: "A", "A": "B", "B": "A"}  # a server answering A -> B -> A ...
    fetched: list[str | None] = []

    async def fetch(cursor: str | None) -> aiosdk.Page[int]:
        fetched.append(cursor)
        return aiosdk.Page(items=[len(fetched)], next_page_token=cursors[cursor])

    with pytest.raises(aiosdk.ProtocolError, match="a second time"):
        async for _ in aiosdk.AsyncPager(fetch):
            pass
    assert fetched == [None, "A", "B"]
