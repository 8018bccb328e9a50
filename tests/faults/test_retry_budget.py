"""The per-client retry budget: sustained failure drains it, and then calls fail at once.

The budget's defaults are botocore's: 500 tokens, 5 per retry, a success refunds 1. Ten forceful
calls that always fail spend 10 x 10 x 5 = 500 tokens, so the eleventh gets no retry.
"""

from __future__ import annotations

import pytest

import aiosdk

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
