"""``Idempotency-Key`` on mutating requests, over loopback."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from aiosdk.server import Server, idempotency
from aiosdk.server.auth import Principal
from aiosdk.server.errors import IdempotencyInProgressError
from aiosdk.server.http.idempotency import IdempotencyMiddleware, unit_of_work
from aiosdk.server.idempotency import (
    IN_PROGRESS_LEASE,
    ClaimLost,
    IdempotencyStore,
    StoredResponse,
    claim_record,
)
from aiosdk.server.keyring import Keyring
from aiosdk.server.storage import (
    IdempotencyKey,
    IdempotencyState,
    Token,
    create_engine,
    default_database_url,
    session_factory,
    utcnow,
)
from aiosdk.server.storage.migrations import upgrade_database

from .conftest import assert_error, create_token, make_client

pytestmark = pytest.mark.anyio


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


async def labels(client: httpx.AsyncClient) -> list[str]:
    items = (await client.get("/tokens", params={"page_size": 1000})).json()["items"]
    return [item["label"] for item in items]


async def test_a_repeat_is_replayed_not_applied_again(client: httpx.AsyncClient) -> None:
    key, label = new_key(), f"once-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    first = await client.post("/tokens", json={"label": label}, headers=headers)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers

    second = await client.post("/tokens", json={"label": label}, headers=headers)
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["content-type"] == "application/json"
    assert second.json() == first.json()
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert (await labels(client)).count(label) == 1


async def test_the_same_key_for_another_request_is_a_422(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": new_key()}
    assert (await client.post("/tokens", json={"label": "a"}, headers=headers)).status_code == 201
    reused = await client.post("/tokens", json={"label": "b"}, headers=headers)
    assert_error(reused, 422, "idempotency_key_reused")
    other_path = await client.delete("/tokens/nope", headers=headers)
    assert_error(other_path, 422, "idempotency_key_reused")


async def test_concurrent_repeats_apply_once(client: httpx.AsyncClient) -> None:
    key, label = new_key(), f"race-{uuid.uuid4()}"
    responses: list[httpx.Response] = []

    async def post() -> None:
        response = await client.post(
            "/tokens", json={"label": label}, headers={"Idempotency-Key": key}
        )
        responses.append(response)

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(post)

    applied = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    assert len(applied) == 1
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "idempotency_in_progress")
            assert response.headers["retry-after"] == "1"
        else:
            assert response.status_code == 201
            assert response.json() == applied[0].json()
    assert (await labels(client)).count(label) == 1


async def test_keys_are_scoped_per_principal(server: Server, client: httpx.AsyncClient) -> None:
    other = await create_token(client, owner=f"scoped-{uuid.uuid4().hex[:8]}")
    headers = {"Idempotency-Key": new_key()}
    mine = await client.post("/tokens", json={"label": "scoped"}, headers=headers)
    async with make_client(server, other["token"]) as http:
        theirs = await http.post("/tokens", json={"label": "scoped"}, headers=headers)
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]


async def test_delete_is_replayed_with_its_status(client: httpx.AsyncClient) -> None:
    token_id = (await create_token(client))["id"]
    headers = {"Idempotency-Key": new_key()}
    first = await client.delete(f"/tokens/{token_id}", headers=headers)
    second = await client.delete(f"/tokens/{token_id}", headers=headers)
    assert first.status_code == second.status_code == 204
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == b""


async def test_client_errors_are_stored_too(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": new_key()}
    first = await client.post("/tokens", json={"label": ""}, headers=headers)
    second = await client.post("/tokens", json={"label": ""}, headers=headers)
    assert first.status_code == second.status_code == 422
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"


async def test_long_request_targets_are_keyed(client: httpx.AsyncClient) -> None:
    """Path and query are stored as a fixed-size digest: any length fits, and still counts."""
    headers = {"Idempotency-Key": new_key()}
    long_query = {"note": "n" * 3000}
    first = await client.post("/tokens", params=long_query, json={"label": "l"}, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post("/tokens", params=long_query, json={"label": "l"}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other_query = {"note": "n" * 2999}
    reused = await client.post("/tokens", params=other_query, json={"label": "l"}, headers=headers)
    assert_error(reused, 422, "idempotency_key_reused")

    headers = {"Idempotency-Key": new_key()}
    long_path = "/tokens/" + "x" * 5000
    assert_error(await client.delete(long_path, headers=headers), 404, "not_found")
    repeat = await client.delete(long_path, headers=headers)
    assert repeat.status_code == 404
    assert repeat.headers["idempotent-replayed"] == "true"


async def test_a_slow_request_keeps_its_claim(
    server: Server, client: httpx.AsyncClient, database: async_sessionmaker[AsyncSession]
) -> None:
    """A request still running after minutes is not run again by a retry; a crashed one is."""
    key, label = new_key(), f"slow-{uuid.uuid4()}"
    body = f'{{"label": "{label}"}}'.encode()
    claim = claim_record(server.keyring, "admin", key, "POST", "/api/v1/tokens", b"", body)
    claim.created_at = utcnow() - timedelta(minutes=5)  # a slow request, claimed 5 minutes ago
    async with database() as session:
        session.add(claim)
        await session.commit()

    async def post() -> httpx.Response:
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        return await client.post("/tokens", content=body, headers=headers)

    busy = await post()
    assert_error(busy, 409, "idempotency_in_progress")
    assert busy.headers["retry-after"] == "1"
    assert label not in await labels(client)

    # Past the lease the claim is taken for a crashed server's: the retry runs, once.
    async with database() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == claim.id)
            .values(created_at=utcnow() - IN_PROGRESS_LEASE - timedelta(seconds=1))
        )
        await session.commit()
    taken_over = await post()
    assert taken_over.status_code == 201, taken_over.text
    assert "idempotent-replayed" not in taken_over.headers
    assert (await post()).headers["idempotent-replayed"] == "true"
    assert (await labels(client)).count(label) == 1


async def test_a_superseded_claim_leaves_its_successor_alone(
    database: async_sessionmaker[AsyncSession],
) -> None:
    """A request outliving its lease must not complete or release the retry's claim."""
    keyring = Keyring.generate()
    store = IdempotencyStore(database, keyring)
    key = new_key()
    first = claim_record(keyring, "p", key, "POST", "/x", b"", b"")
    first.created_at = utcnow() - IN_PROGRESS_LEASE - timedelta(seconds=1)
    assert await store.claim(first) is None
    second = claim_record(keyring, "p", key, "POST", "/x", b"", b"")
    assert await store.claim(second) is None  # took the stale claim over

    async with database() as session:
        with pytest.raises(ClaimLost):  # the late request learns it lost the key ...
            await store.complete(first, StoredResponse(201, [], b"late"), session=session)
    await store.release(first)  # ... and releasing it leaves the successor's claim alone
    async with database() as session:
        rows = list(
            await session.scalars(select(IdempotencyKey).where(IdempotencyKey.key == second.key))
        )
    assert [(row.created_at, row.state) for row in rows] == [
        (second.created_at, IdempotencyState.IN_PROGRESS)
    ]
    await store.release(second)


async def test_reads_ignore_the_key(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": new_key()}
    for _ in range(2):
        response = await client.get("/", headers=headers)
        assert response.status_code == 200
        assert "idempotent-replayed" not in response.headers


@pytest.mark.parametrize("key", [b"", b"x" * 256, b"tab\there", "é".encode()])
async def test_malformed_key_is_a_400(client: httpx.AsyncClient, key: bytes) -> None:
    response = await client.post(
        "/tokens", json={"label": "x"}, headers=[(b"Idempotency-Key", key)]
    )
    assert_error(response, 400, "invalid_request")


async def test_server_errors_are_not_stored(tmp_path: Path) -> None:
    """A 5xx releases the key: the retry runs again (a scripted app behind the middleware)."""
    engine = await anyio.to_thread.run_sync(create_engine, default_database_url(tmp_path))
    try:
        await upgrade_database(engine)
        runs: list[int] = []

        async def flaky(scope: Scope, receive: Receive, send: Send) -> None:
            runs.append(len(runs))
            response = PlainTextResponse("down" if len(runs) == 1 else "ok")
            response.status_code = 503 if len(runs) == 1 else 200
            await response(scope, receive, send)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = {"principal": Principal("p", is_admin=False, token_id="t")}
            await middleware(scope, receive, send)

        middleware = IdempotencyMiddleware(
            flaky, IdempotencyStore(session_factory(engine), Keyring.generate())
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            headers = {"Idempotency-Key": "k"}
            statuses = [(await http.post("/", headers=headers)).status_code for _ in range(3)]
        assert statuses == [503, 200, 200]
        assert runs == [0, 1]
    finally:
        await engine.dispose()


async def test_stored_responses_keep_no_secret_in_the_clear(tmp_path: Path) -> None:
    """A replayable response (a new token's secret) is stored sealed under a hashed key."""
    engine = await anyio.to_thread.run_sync(create_engine, default_database_url(tmp_path))
    try:
        await upgrade_database(engine)
        secret, key = f"aio_{uuid.uuid4().hex}", new_key()
        in_query, in_body = f"q-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"

        async def mint(scope: Scope, receive: Receive, send: Send) -> None:
            await PlainTextResponse(secret, status_code=201)(scope, receive, send)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = {"principal": Principal("p", is_admin=False, token_id="t")}
            await middleware(scope, receive, send)

        middleware = IdempotencyMiddleware(
            mint, IdempotencyStore(session_factory(engine), Keyring.generate())
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            replies = [
                await http.post(
                    f"/mint?note={in_query}", content=in_body, headers={"Idempotency-Key": key}
                )
                for _ in range(2)
            ]
        assert [r.text for r in replies] == [secret, secret]
        assert replies[1].headers["idempotent-replayed"] == "true"
        async with engine.connect() as conn:
            rows = (await conn.execute(select(IdempotencyKey))).all()
        stored = repr(rows).encode() + b"".join(bytes(r.response_body) for r in rows)
        assert len(rows) == 1
        for clear in (secret, key, in_query, in_body, "/mint"):
            assert clear.encode() not in stored
    finally:
        await engine.dispose()


async def test_the_answer_is_sent_after_the_commit(
    server: Server, client: httpx.AsyncClient, database: async_sessionmaker[AsyncSession]
) -> None:
    """Whoever sees the answer sees its stored record: an immediate repeat is a replay."""
    for _ in range(20):
        key = new_key()
        headers = {"Idempotency-Key": key}
        first = await client.post("/tokens", json={"label": "ordered"}, headers=headers)
        assert first.status_code == 201
        async with database() as session:  # looked at the moment the answer arrived
            states = list(
                await session.scalars(
                    select(IdempotencyKey.state).where(
                        IdempotencyKey.key
                        == claim_record(server.keyring, "admin", key, "", "", b"", b"").key
                    )
                )
            )
        assert states == [IdempotencyState.DONE]
        repeat = await client.post("/tokens", json={"label": "ordered"}, headers=headers)
        assert repeat.headers["idempotent-replayed"] == "true"


@contextlib.asynccontextmanager
async def scripted_app(
    tmp_path: Path, handler: Callable[[Scope, Receive, Send], Awaitable[None]]
) -> AsyncIterator[tuple[httpx.AsyncClient, async_sessionmaker[AsyncSession]]]:
    """``handler`` behind the idempotency middleware, on a database of its own."""
    engine = await anyio.to_thread.run_sync(create_engine, default_database_url(tmp_path))
    try:
        await upgrade_database(engine)
        sessions = session_factory(engine)
        middleware = IdempotencyMiddleware(handler, IdempotencyStore(sessions, Keyring.generate()))

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = {"principal": Principal("p", is_admin=False, token_id="t")}
            await middleware(scope, receive, send)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, sessions
    finally:
        await engine.dispose()


def add_token(scope: Scope, label: str) -> None:
    unit_of_work(scope).session.add(
        Token(label=label, secret_hash=uuid.uuid4().hex, owner="p", created_at=utcnow())
    )


async def token_labels(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return list(await session.scalars(select(Token.label)))


async def test_a_handler_that_writes_then_fails_leaves_nothing(tmp_path: Path) -> None:
    """Its writes roll back with the failure, so a retry applies the change exactly once."""
    runs: list[int] = []

    async def write_then_fail_once(scope: Scope, receive: Receive, send: Send) -> None:
        runs.append(len(runs))
        add_token(scope, "written")
        await unit_of_work(scope).session.flush()
        if len(runs) == 1:
            raise RuntimeError("failed after writing")
        await PlainTextResponse("made", status_code=201)(scope, receive, send)

    async with scripted_app(tmp_path, write_then_fail_once) as (http, sessions):
        with pytest.raises(RuntimeError):  # (the server's outer layer answers it with a 500)
            await http.post("/", headers={"Idempotency-Key": "k"})
        assert await token_labels(sessions) == []
        replies = [await http.post("/", headers={"Idempotency-Key": "k"}) for _ in range(2)]
        assert [r.status_code for r in replies] == [201, 201]
        assert replies[1].headers["idempotent-replayed"] == "true"
        assert await token_labels(sessions) == ["written"]
        assert runs == [0, 1]


async def test_a_refusal_keeps_no_write_but_is_replayed(tmp_path: Path) -> None:
    async def write_then_refuse(scope: Scope, receive: Receive, send: Send) -> None:
        add_token(scope, "refused")
        await PlainTextResponse("no", status_code=403)(scope, receive, send)

    async with scripted_app(tmp_path, write_then_refuse) as (http, sessions):
        replies = [await http.post("/", headers={"Idempotency-Key": "k"}) for _ in range(2)]
        assert [r.status_code for r in replies] == [403, 403]
        assert replies[1].headers["idempotent-replayed"] == "true"
        assert await token_labels(sessions) == []


async def test_a_handler_may_not_commit_on_its_own(tmp_path: Path) -> None:
    async def commits(scope: Scope, receive: Receive, send: Send) -> None:
        add_token(scope, "committed by the handler")
        await unit_of_work(scope).session.commit()

    async with scripted_app(tmp_path, commits) as (http, sessions):
        with pytest.raises(RuntimeError, match="unit of work commits it"):
            await http.post("/")
        assert await token_labels(sessions) == []


async def test_a_request_that_outlives_its_lease_is_not_applied_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the lease a retry takes the key over and applies the change; the slow first run
    must then commit nothing (it answers 409 in progress: a retry gets the retry's answer)."""
    monkeypatch.setattr(idempotency, "IN_PROGRESS_LEASE", timedelta(seconds=0.3))
    runs: list[int] = []

    async def slow_first(scope: Scope, receive: Receive, send: Send) -> None:
        runs.append(len(runs))
        label = f"run {len(runs)}"
        if len(runs) == 1:
            await anyio.sleep(1.0)  # a lock wait, a slow upstream ...
        add_token(scope, label)
        await unit_of_work(scope).session.flush()
        await PlainTextResponse("made", status_code=201)(scope, receive, send)

    async with scripted_app(tmp_path, slow_first) as (http, sessions):
        headers = {"Idempotency-Key": "k"}
        async with anyio.create_task_group() as tg:

            async def first() -> None:
                # (The server's outer layer answers this with a 409 idempotency_in_progress.)
                with pytest.raises(IdempotencyInProgressError, match="took over"):
                    await http.post("/", headers=headers)

            tg.start_soon(first)
            await anyio.sleep(0.6)  # past the lease: the first run looks crashed
            retry = await http.post("/", headers=headers)
        assert retry.status_code == 201
        assert await token_labels(sessions) == ["run 2"]  # the change, once
        replay = await http.post("/", headers=headers)
        assert replay.headers["idempotent-replayed"] == "true"
