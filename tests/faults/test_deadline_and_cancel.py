"""One deadline bounds every attempt and sleep; cancelling a call stops it at once, cleanly.

Times are asserted only as generous sanity bounds (a call that should stop after 0.5 s is given
2 s), never as measurements.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable

import anyio
import pytest

import aiosdk

from .scripted import ScriptedServer, delayed, fail

pytestmark = pytest.mark.anyio

BOUND = 2.0  # seconds: a call with a 0.5 s deadline, or one cancelled, ends well within this


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; the server thread changes it, so no Event can tell."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


# -- the deadline ----------------------------------------------------------------------------


async def test_deadline_bounds_the_backoff_of_an_always_failing_call(
    scripted: ScriptedServer,
) -> None:
    scripted.script(then=fail(503))  # no Retry-After: the real exponential backoff
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as client:
        started = time.monotonic()
        with pytest.raises((aiosdk.DeadlineExceededError, aiosdk.ServiceUnavailableError)):
            await client.with_options(deadline=0.5).server_info()
        assert time.monotonic() - started < BOUND
    assert 1 <= len(scripted.requests) <= 11


async def test_deadline_cuts_a_slow_attempt_short(scripted: ScriptedServer) -> None:
    scripted.script(then=delayed(30))
    async with aiosdk.AsyncClient(scripted.url, token="t", deadline=0.5) as client:
        started = time.monotonic()
        with pytest.raises(aiosdk.DeadlineExceededError):
            await client.server_info()
        assert time.monotonic() - started < BOUND
    assert len(scripted.requests) == 1


async def test_deadline_error_keeps_the_last_failure_as_its_cause(
    scripted: ScriptedServer,
) -> None:
    scripted.script(fail(503, retry_after="0"), then=delayed(30))
    async with aiosdk.AsyncClient(scripted.url, token="t", deadline=0.5) as client:
        with pytest.raises(aiosdk.DeadlineExceededError) as caught:
            await client.server_info()
    assert isinstance(caught.value.__cause__, aiosdk.ServiceUnavailableError)
    assert len(scripted.requests) == 2


async def test_retry_after_beyond_the_deadline_fails_at_once(scripted: ScriptedServer) -> None:
    scripted.script(then=fail(429, retry_after="30"))  # under the 60 s cap, over the deadline
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        started = time.monotonic()
        with pytest.raises(aiosdk.RateLimitError):
            await client.with_options(deadline=0.5).server_info()
        assert time.monotonic() - started < BOUND
    assert len(scripted.requests) == 1


# -- the per-attempt timeout -----------------------------------------------------------------


async def test_timed_out_get_is_retried(scripted: ScriptedServer) -> None:
    scripted.script(delayed(30))
    async with aiosdk.AsyncClient(scripted.url, token="t", timeout=0.3) as client:
        info = await client.server_info()
    assert info.name == "scripted"
    assert len(scripted.requests) == 2


async def test_timed_out_post_is_not_retried_in_default_mode(scripted: ScriptedServer) -> None:
    scripted.script(delayed(30))
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        with pytest.raises(aiosdk.TimeoutError) as caught:
            await client.with_options(timeout=0.3).tokens.create("ci")
    assert not isinstance(caught.value, aiosdk.DeadlineExceededError)
    assert len(scripted.requests) == 1


async def test_timed_out_post_is_retried_in_forceful_mode(scripted: ScriptedServer) -> None:
    scripted.script(delayed(30))
    async with aiosdk.AsyncClient(scripted.url, token="t", timeout=0.3) as client:
        await client.with_options(retry_mode="forceful").tokens.create("ci")
    assert len(scripted.requests) == 2


# -- cancellation ----------------------------------------------------------------------------


async def cancel_once_seen(
    server: ScriptedServer, call: Callable[[], Awaitable[object]], requests: int = 1
) -> float:
    """Start ``call``, cancel it once the server saw ``requests`` requests; the seconds the
    cancellation took to end it."""
    cancelled_at = 0.0
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await call()
            pytest.fail("the call ended before it was cancelled")

        tg.start_soon(run)
        await wait_until(lambda: len(server.requests) >= requests)
        await anyio.sleep(0.1)  # let the call reach its sleep or its read
        cancelled_at = time.monotonic()
        tg.cancel_scope.cancel()
    return time.monotonic() - cancelled_at


async def test_cancel_during_retry_after_sleep_is_prompt(scripted: ScriptedServer) -> None:
    scripted.script(fail(429, retry_after="30"))
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        took = await cancel_once_seen(scripted, client.server_info)
        assert took < 1.0
        assert len(scripted.requests) == 1  # the retry never went out
    await wait_until(lambda: scripted.open_connections == 0)
    gc.collect()  # an unclosed socket would warn now, and warnings are errors


async def test_cancel_during_slow_attempt_is_prompt_and_drops_the_connection(
    scripted: ScriptedServer,
) -> None:
    scripted.script(delayed(30))
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as client:
        took = await cancel_once_seen(scripted, lambda: client.tokens.create("ci"))
        assert took < 1.0
        # A connection cut mid-response cannot go back to the pool: it is closed at once.
        await wait_until(lambda: scripted.open_connections == 0)
        assert len(scripted.requests) == 1
        # The client still works after the cancellation.
        assert (await client.tokens.create("ci")).label == "ci"
    gc.collect()


async def test_move_on_after_cancels_a_backoff_sleep(scripted: ScriptedServer) -> None:
    scripted.script(then=fail(503, retry_after="30"))
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        started = time.monotonic()
        with anyio.move_on_after(0.5) as scope:
            await client.server_info()
        assert scope.cancelled_caught
        assert time.monotonic() - started < BOUND
    assert len(scripted.requests) == 1
