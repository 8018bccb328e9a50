"""The per-client retry budget: sustained failure drains it, and then calls fail at once.

The budget's defaults are botocore's: 500 tokens, 5 per retry, a success refunds 1. Ten forceful
calls that always fail spend 10 x 10 x 5 = 500 tokens, so the eleventh gets no retry.
"""

from __future__ import annotations

import pytest

import aiosdk
from aiosdk.proto import CreateTokenRequest, TokenServiceStub

from .conftest import RetryLog
from .scripted import ScriptedServer, fail

pytestmark = pytest.mark.anyio

CALLS_TO_DRAIN = 10


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def drain(client: aiosdk.AsyncClient) -> None:
    for _ in range(CALLS_TO_DRAIN):
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await client.server_info()


async def failing_call_attempts(client: aiosdk.AsyncClient, server: ScriptedServer) -> int:
    before = len(server.requests)
    with pytest.raises(aiosdk.ServiceUnavailableError):
        await client.server_info()
    return len(server.requests) - before


async def test_drained_budget_makes_the_next_failing_call_fail_at_once(
    scripted: ScriptedServer,
) -> None:
    scripted.script(then=fail(503, retry_after="0"))
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as client:
        await drain(client)
        assert len(scripted.requests) == CALLS_TO_DRAIN * 11
        assert await failing_call_attempts(client, scripted) == 1
        # Clients made by with_options share the pool, and with it the budget.
        shared = client.with_options(retry_mode="default")
        assert await failing_call_attempts(shared, scripted) == 1


async def test_budget_is_per_client(scripted: ScriptedServer) -> None:
    scripted.script(then=fail(503, retry_after="0"))
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as drained:
        await drain(drained)
        async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as fresh:
            assert await failing_call_attempts(fresh, scripted) == 11


async def test_successes_refill_the_budget(scripted: ScriptedServer) -> None:
    scripted.script(then=fail(503, retry_after="0"))
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as client:
        await drain(client)
        scripted.script()  # succeed from now on
        for _ in range(5):  # +1 token each: enough for exactly one retry
            await client.server_info()
        scripted.script(then=fail(503, retry_after="0"))
        assert await failing_call_attempts(client, scripted) == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_healthy_stream_refunds_once_not_per_item(server: object) -> None:
    # A stream used to refund a token for every item: a watch or a channel kept open refilled
    # an exhausted budget, and the brake on retry storms never engaged while it ran.
    url, token = server.http_url, server.admin_token  # type: ignore[attr-defined]
    async with aiosdk.AsyncClient(url, token=token) as client:
        await client.get_status()  # the channel is open: the stream is the only call below
        client._ctx.transport.budget.tokens = 0
        updates = [s async for s in client.watch_status(interval=0.05, max_updates=20)]
        assert len(updates) == 20
        assert client._ctx.transport.budget.tokens == 1  # one successful call


async def test_a_request_that_cannot_be_written_is_not_retried(scripted: ScriptedServer) -> None:
    # A header holding a newline can never be sent: a configuration error at once, not ten
    # forceful attempts, twenty seconds and fifty budget tokens.
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as client:
        transport = client._ctx.transport
        with pytest.raises(aiosdk.ConfigurationError, match="cannot be sent"):
            await transport.request(
                "GET", "/", headers={"X-Note": "line\nbreak"}, options=client.options
            )
        assert transport.budget.tokens == transport.budget.capacity
    assert scripted.requests == []


async def test_a_request_over_a_size_limit_is_not_retried(
    server: object, retry_log: RetryLog, anyio_backend: str
) -> None:
    url, token = server.http_url, server.admin_token  # type: ignore[attr-defined]
    async with aiosdk.AsyncClient(url, token=token, retry_mode="forceful") as client:
        limits = (await client.server_info()).limits
        with pytest.raises(aiosdk.RequestTooLargeError) as body:
            await client.tokens.create("x" * (limits["max_request_body_bytes"] + 1))
        assert body.value.status_code == 413
        if anyio_backend == "asyncio":
            big = CreateTokenRequest(label="x" * (limits["max_grpc_message_bytes"] + 1))
            with pytest.raises(aiosdk.RequestTooLargeError) as message:
                await client._ctx.transport.grpc_unary(
                    TokenServiceStub,
                    lambda stub: stub.create_token(big),
                    idempotent=False,
                    options=client.options,
                    what="CreateToken",
                )
            assert message.value.grpc_status == "RESOURCE_EXHAUSTED"
    oversized = "t" * (limits["max_header_bytes"] + 1)
    async with aiosdk.AsyncClient(url, token=oversized, retry_mode="forceful") as client:
        with pytest.raises(aiosdk.RequestTooLargeError) as headers:
            await client.server_info()
        assert headers.value.status_code == 431
    assert not retry_log.retries  # forceful tries everything again, but not these
