"""Every mutating request carries an ``Idempotency-Key``, the same on every attempt of one call."""

from __future__ import annotations

import re

import anyio
import pytest

import aiosdk

from .scripted import RESET, ScriptedServer, fail

pytestmark = pytest.mark.anyio

# What the reference server accepts: 1 to 255 printable ASCII characters; a random key is longer
# than a few characters.
KEY = re.compile(r"[\x21-\x7e]{16,255}")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def keys(server: ScriptedServer, method: str) -> list[str | None]:
    return [request.idempotency_key for request in server.seen(method)]


async def test_post_keeps_one_key_across_attempts_and_changes_it_per_call(
    scripted: ScriptedServer,
) -> None:
    scripted.script(fail(503, retry_after="0"), RESET, fail(502, retry_after="0"))
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode="forceful") as client:
        await client.tokens.create("first")
        await client.tokens.create("second")
    first_call, second_call = keys(scripted, "POST")[:4], keys(scripted, "POST")[4:]
    assert len(first_call) == 4
    assert len(second_call) == 1
    first_key = first_call[0]
    assert first_key is not None
    assert KEY.fullmatch(first_key)
    assert set(first_call) == {first_key}
    assert second_call[0] is not None
    assert second_call[0] != first_key


async def test_delete_keeps_one_key_across_attempts(scripted: ScriptedServer) -> None:
    scripted.script(fail(503, retry_after="0"), fail(504, retry_after="0"))
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        await client.tokens.revoke("tok-1")
        await client.tokens.revoke("tok-1")
    seen = keys(scripted, "DELETE")
    assert len(seen) == 4
    assert seen[0] is not None
    assert KEY.fullmatch(seen[0])
    assert seen[:3] == [seen[0]] * 3
    assert seen[3] not in (None, seen[0])


async def test_concurrent_calls_get_distinct_keys(scripted: ScriptedServer) -> None:
    async with (
        aiosdk.AsyncClient(scripted.url, token="t") as client,
        anyio.create_task_group() as tg,
    ):
        for index in range(20):
            tg.start_soon(client.tokens.create, f"t{index}")
    seen = keys(scripted, "POST")
    assert len(seen) == 20
    assert None not in seen
    assert len(set(seen)) == 20
