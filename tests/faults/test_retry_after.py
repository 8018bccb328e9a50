"""``Retry-After`` in both forms is honoured; one beyond the cap fails fast and says how long."""

from __future__ import annotations

import time

import pytest

import aiosdk

from .scripted import ScriptedServer, fail, rate_limited_until

pytestmark = pytest.mark.anyio

FAST = 2.0  # seconds: generous bound for "did not wait" (the waits under test are 60 s or more)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def gap(server: ScriptedServer) -> float:
    first, second = server.requests[:2]
    return second.at - first.at


async def test_retry_after_seconds_is_waited_for(scripted: ScriptedServer) -> None:
    scripted.script(fail(429, retry_after="1"))
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        await client.server_info()
    assert len(scripted.requests) == 2
    assert gap(scripted) >= 0.9


async def test_retry_after_http_date_is_waited_for(scripted: ScriptedServer) -> None:
    scripted.script(rate_limited_until(2))  # a date 1 to 2 s ahead
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        await client.server_info()
    assert len(scripted.requests) == 2
    assert gap(scripted) >= 0.9


async def test_retry_after_on_503_is_waited_for_by_a_forceful_post(
    scripted: ScriptedServer,
) -> None:
    scripted.script(fail(503, retry_after="1"))
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as client:
        await client.tokens.create("ci")
    assert len(scripted.requests) == 2
    assert gap(scripted) >= 0.9


@pytest.mark.parametrize("mode", ["default", "forceful"])
async def test_retry_after_beyond_the_cap_fails_fast_with_rate_limit_error(
    scripted: ScriptedServer, mode: str
) -> None:
    cap = aiosdk.RetryPolicy().max_retry_after
    scripted.script(then=fail(429, retry_after=str(int(cap) + 60)))
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode=mode) as client:
        started = time.monotonic()
        with pytest.raises(aiosdk.RateLimitError) as caught:
            await client.server_info()
        assert time.monotonic() - started < FAST
    assert caught.value.retry_after == cap + 60
    assert len(scripted.requests) == 1


async def test_retry_after_date_beyond_the_cap_fails_fast_with_its_wait(
    scripted: ScriptedServer,
) -> None:
    scripted.script(then=rate_limited_until(120))
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        with pytest.raises(aiosdk.RateLimitError) as caught:
            await client.server_info()
    assert caught.value.retry_after is not None
    assert 115 <= caught.value.retry_after <= 121
    assert len(scripted.requests) == 1


async def test_retry_after_is_reported_when_retries_are_disabled(
    scripted: ScriptedServer,
) -> None:
    scripted.script(then=fail(429, retry_after="7"))
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="disabled") as client:
        with pytest.raises(aiosdk.RateLimitError) as caught:
            await client.server_info()
    assert caught.value.retry_after == 7
    assert len(scripted.requests) == 1


async def test_unparseable_retry_after_falls_back_to_backoff(scripted: ScriptedServer) -> None:
    scripted.script(fail(429, retry_after="soon"))
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        await client.server_info()
    assert len(scripted.requests) == 2
    assert gap(scripted) < FAST  # the first backoff is at most 0.2 s
