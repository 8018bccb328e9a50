"""The response cache: ETag revalidation through the one request path, against real servers.

A scripted HTTP server on loopback (tests/faults/scripted.py) serves resources with ETags,
answers ``If-None-Match`` with ``304``, and records every request, so each test checks both what
the caller got and what went over the wire. The end-to-end tests use the reference server's
catalog routes.
"""

from __future__ import annotations

import hashlib
import http
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from faults.scripted import RESET, Respond, ScriptedServer, Seen, fail

import aiosdk
from aiosdk._core.cache import EXTENSION, Cache, CacheError
from aiosdk._core.credentials import TokenCredential
from aiosdk._core.options import RequestOptions
from aiosdk._core.retry import RetryMode, RetryPolicy
from aiosdk._core.secrets import Secret
from aiosdk._core.transport import Transport
from aiosdk.testing.accounts import AsyncAccounts, TestUser

pytestmark = pytest.mark.anyio

OPTIONS = RequestOptions(RetryPolicy(RetryMode.DEFAULT, backoff_initial=0.01, backoff_max=0.02))


@dataclass
class Resource:
    body: bytes
    etag: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.etag is None:
            self.etag = f'"{hashlib.sha256(self.body).hexdigest()[:16]}"'


class ETagServer(ScriptedServer):
    """The scripted server, serving ``resources`` (by path) with ETags and 304s.

    Unscripted requests for a known path get its body with its ETag, or a 304 when the request's
    ``If-None-Match`` names it; scripted actions (failures, resets) come first, as usual.
    """

    def __init__(self) -> None:
        super().__init__()
        self.resources: dict[str, Resource] = {}

    def put(self, path: str, body: bytes | str, **kwargs: object) -> Resource:
        raw = body.encode() if isinstance(body, str) else body
        resource = self.resources[f"/api/v1{path}"] = Resource(raw, **kwargs)  # type: ignore[arg-type]
        return resource

    def answers(self, path: str) -> list[int]:
        """How the requests for ``path`` were answered so far: 200 or 304, in order."""
        return [
            304 if _matches(seen, self.resources[seen.path]) else 200
            for seen in self.requests
            if seen.path == f"/api/v1{path}"
        ]

    def _render(self, action: Respond, request: Seen) -> bytes:
        resource = self.resources.get(request.path)
        if resource is None or action != Respond():
            return super()._render(action, request)
        headers = dict(resource.headers)
        if resource.etag:
            headers["ETag"] = resource.etag
        status, body = (304, b"") if _matches(request, resource) else (200, resource.body)
        headers.setdefault("Content-Type", "application/json")
        if status == 200:
            headers["Content-Length"] = str(len(body))
        head = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        return (head + "\r\n").encode("latin-1") + body


def _matches(request: Seen, resource: Resource) -> bool:
    wanted = request.headers.get("if-none-match")
    return bool(resource.etag) and wanted is not None and wanted == resource.etag


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Iterator[ETagServer]:
    etags = ETagServer().start()
    yield etags
    etags.stop()


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[Cache]:
    async with Cache(tmp_path / "cache.sqlite") as made:
        yield made


def transport_of(server: ScriptedServer, cache: Cache | None, token: str | None = "t") -> Transport:
    return Transport(
        url=server.url,
        token=Secret(token) if token else None,
        limits=httpx.Limits(),
        cache=cache,
    )


async def get(transport: Transport, path: str, **kwargs: object) -> httpx.Response:
    return await transport.request("GET", path, options=OPTIONS, **kwargs)  # type: ignore[arg-type]


def from_cache(response: httpx.Response) -> bool:
    return response.extensions.get(EXTENSION) == "revalidated"


# -- hit and revalidation ------------------------------------------------------------------------


async def test_a_stored_answer_is_revalidated_and_served_on_304(
    server: ETagServer, cache: Cache
) -> None:
    resource = server.put("/things/a", json.dumps({"a": 1}), headers={"X-Thing": "a"})
    transport = transport_of(server, cache)
    try:
        first = await get(transport, "/things/a")
        second = await get(transport, "/things/a")
    finally:
        await transport.aclose()
    assert first.json() == second.json() == {"a": 1}
    assert not from_cache(first)
    assert from_cache(second)
    assert second.status_code == 200
    assert second.headers["etag"] == resource.etag
    assert second.headers["x-thing"] == "a"
    assert server.answers("/things/a") == [200, 304]
    assert server.requests[1].headers["if-none-match"] == resource.etag
    assert "if-none-match" not in server.requests[0].headers
    assert await cache.acount() == 1
    assert await cache.asize() == len(resource.body)


async def test_a_changed_resource_replaces_its_entry(server: ETagServer, cache: Cache) -> None:
    server.put("/things/a", b'{"v": 1}')
    transport = transport_of(server, cache)
    try:
        assert (await get(transport, "/things/a")).json() == {"v": 1}
        new = server.put("/things/a", b'{"v": 2, "longer": true}')
        changed = await get(transport, "/things/a")
        again = await get(transport, "/things/a")
    finally:
        await transport.aclose()
    assert changed.json() == again.json() == {"v": 2, "longer": True}
    assert not from_cache(changed)
    assert from_cache(again)
    assert server.requests[2].headers["if-none-match"] == new.etag
    assert await cache.acount() == 1
    assert await cache.asize() == len(new.body)


@pytest.mark.parametrize(
    ("etag", "headers", "kept"),
    [
        (None, {}, True),
        ("", {}, False),  # no ETag: nothing to revalidate with
        (None, {"Cache-Control": "no-store"}, False),
        (None, {"Cache-Control": "private, max-age=0"}, True),  # the cache is per identity
        (None, {"Cache-Control": "no-cache"}, True),  # every use is revalidated anyway
        (None, {"Vary": "Accept, Authorization"}, True),  # keyed by those
        (None, {"Vary": "Cookie"}, False),
        (None, {"Vary": "*"}, False),
    ],
)
async def test_what_is_kept(
    server: ETagServer, cache: Cache, etag: str | None, headers: dict[str, str], kept: bool
) -> None:
    server.put("/things/a", b"{}", etag=etag, headers=headers)
    transport = transport_of(server, cache)
    try:
        await get(transport, "/things/a")
        second = await get(transport, "/things/a")
    finally:
        await transport.aclose()
    assert await cache.acount() == int(kept)
    assert from_cache(second) is kept
    assert ("if-none-match" in server.requests[1].headers) is kept


async def test_no_store_drops_a_stored_entry(server: ETagServer, cache: Cache) -> None:
    server.put("/things/a", b"{}")
    transport = transport_of(server, cache)
    try:
        await get(transport, "/things/a")
        assert await cache.acount() == 1
        server.put("/things/a", b'{"secret": 1}', headers={"Cache-Control": "no-store"})
        assert (await get(transport, "/things/a")).json() == {"secret": 1}
        assert await cache.acount() == 0
        # A request that says no-store is neither looked up nor kept.
        server.put("/things/a", b"{}")
        await get(transport, "/things/a", headers={"Cache-Control": "no-store"})
    finally:
        await transport.aclose()
    assert await cache.acount() == 0


async def test_only_get_is_cached_and_a_callers_own_conditional_is_left_alone(
    server: ETagServer, cache: Cache
) -> None:
    resource = server.put("/things/a", b"{}")
    transport = transport_of(server, cache)
    try:
        await transport.request("DELETE", "/things/a", options=OPTIONS)
        assert await cache.acount() == 0
        await get(transport, "/things/a")
        # The caller's own If-None-Match: its 304 is the caller's, an error as before.
        with pytest.raises(aiosdk.StatusError) as caught:
            await get(transport, "/things/a", headers={"If-None-Match": resource.etag})
    finally:
        await transport.aclose()
    assert caught.value.status_code == 304


async def test_the_accept_header_is_part_of_the_key(server: ETagServer, cache: Cache) -> None:
    server.put("/things/a", b"{}")
    transport = transport_of(server, cache)
    try:
        await get(transport, "/things/a")
        await get(transport, "/things/a", headers={"Accept": "text/csv"})
    finally:
        await transport.aclose()
    assert server.answers("/things/a") == [200, 200]
    assert await cache.acount() == 2


# -- identity ------------------------------------------------------------------------------------


async def test_identities_never_see_each_others_answers(server: ETagServer, tmp_path: Path) -> None:
    server.put("/things/a", b'{"for": "everyone"}')
    path = tmp_path / "shared.sqlite"
    # One Cache object for alice and anonymous; bob's client opens the same file on its own.
    async with Cache(path) as shared, Cache(path) as bobs:
        alice = transport_of(server, shared, "aio_alice_token_0123456789abcdef")
        bob = transport_of(server, bobs, "aio_bob_token_0123456789abcdef")
        anonymous = transport_of(server, shared, None)
        try:
            await get(alice, "/things/a")
            await get(bob, "/things/a")
            await get(anonymous, "/things/a")
            assert server.answers("/things/a") == [200, 200, 200]  # no one reused another's
            assert await shared.acount() == await bobs.acount() == 3
            await get(alice, "/things/a")
            await get(bob, "/things/a")
            await get(anonymous, "/things/a")
            assert server.answers("/things/a")[3:] == [304, 304, 304]
        finally:
            for transport in (alice, bob, anonymous):
                await transport.aclose()
    raw = await anyio.Path(path).read_bytes()
    wal = anyio.Path(f"{path}-wal")
    if await wal.exists():
        raw += await wal.read_bytes()
    assert b"alice_token" not in raw
    assert b"bob_token" not in raw
    assert hashlib.sha256(b"Bearer aio_alice_token_0123456789abcdef").digest() not in raw


async def test_a_new_credential_is_a_new_identity(server: ETagServer, cache: Cache) -> None:
    server.put("/things/a", b"{}")
    transport = transport_of(server, cache, "first")
    try:
        await get(transport, "/things/a")
        transport.auth.use(TokenCredential(Secret("second")))
        await get(transport, "/things/a")
    finally:
        await transport.aclose()
    assert server.answers("/things/a") == [200, 200]


# -- capacity, item size, read-only ----------------------------------------------------------------


async def test_capacity_evicts_the_least_recently_used(server: ETagServer, tmp_path: Path) -> None:
    for name in "abc":
        server.put(f"/things/{name}", b"x" * 100)
    async with Cache(tmp_path / "c.sqlite", capacity=250, max_item_size=100) as cache:
        transport = transport_of(server, cache)
        try:
            await get(transport, "/things/a")
            await get(transport, "/things/b")
            assert await get(transport, "/things/a")  # revalidated: a is the most recent now
            await get(transport, "/things/c")  # 300 bytes: the least recent (b) goes
            assert await cache.acount() == 2
            assert await cache.asize() == 200
            assert from_cache(await get(transport, "/things/a"))
            assert from_cache(await get(transport, "/things/c"))
            assert not from_cache(await get(transport, "/things/b"))
        finally:
            await transport.aclose()


async def test_a_body_over_max_item_size_passes_uncached(
    server: ETagServer, tmp_path: Path
) -> None:
    server.put("/things/big", b"y" * 151)
    server.put("/things/small", b"y" * 150)
    async with Cache(tmp_path / "c.sqlite", max_item_size=150) as cache:
        transport = transport_of(server, cache)
        try:
            big = await get(transport, "/things/big")
            await get(transport, "/things/small")
            assert big.content == b"y" * 151
            assert await cache.acount() == 1
            assert not from_cache(await get(transport, "/things/big"))
        finally:
            await transport.aclose()
    assert cache.max_item_size == 150
    assert cache.capacity > 150


async def test_readonly_reads_but_never_writes(server: ETagServer, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    server.put("/things/a", b'{"a": 1}')
    server.put("/things/b", b'{"b": 1}')
    async with Cache(path) as writer:
        transport = transport_of(server, writer)
        try:
            await get(transport, "/things/a")
        finally:
            await transport.aclose()
    before = await anyio.Path(path).read_bytes()
    async with Cache(path, readonly=True) as reader:
        assert reader.readonly
        assert not reader.write_safe()
        transport = transport_of(server, reader)
        try:
            assert from_cache(await get(transport, "/things/a"))
            assert not from_cache(await get(transport, "/things/b"))
            assert not from_cache(await get(transport, "/things/b"))  # not stored
        finally:
            await transport.aclose()
        assert await reader.acount() == 1
        with pytest.raises(CacheError, match="read-only"):
            await reader.aclear()
        with pytest.raises(CacheError, match="read-only"):
            await reader.adelete(f"{server.url}/api/v1/things/a")
    assert await anyio.Path(path).read_bytes() == before


async def test_readonly_without_a_file_goes_on_uncached(
    server: ETagServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.put("/things/a", b"{}")
    async with Cache(tmp_path / "missing.sqlite", readonly=True) as cache:
        transport = transport_of(server, cache)
        try:
            with caplog.at_level(logging.WARNING, "aiosdk"):
                await get(transport, "/things/a")
                await get(transport, "/things/a")
        finally:
            await transport.aclose()
        with pytest.raises(CacheError, match=r"missing\.sqlite"):
            await cache.acount()
    warnings = [r for r in caplog.records if "response cache" in r.getMessage()]
    assert len(warnings) == 1  # once, not per request
    assert not await anyio.Path(tmp_path / "missing.sqlite").exists()


# -- the maintenance API ---------------------------------------------------------------------------


async def test_delete_and_clear(server: ETagServer, cache: Cache) -> None:
    server.put("/things/a", b"{}")
    server.put("/things/b", b"{}")
    alice, bob = transport_of(server, cache, "alice"), transport_of(server, cache, "bob")
    try:
        for transport in (alice, bob):
            await get(transport, "/things/a")
            await get(transport, "/things/b")
        assert await cache.acount() == 4
        assert await cache.adelete(f"{server.url}/api/v1/things/a") == 2  # every identity's
        request = alice._build_request("GET", "/things/b", None, None, {}, OPTIONS)
        assert (await cache.aget(request)) is not None
        assert await cache.adelete(request) == 1  # alice's own
        assert await cache.aget(request) is None
        assert await cache.acount() == 1
        await cache.aclear()
        assert await cache.acount() == 0
        assert await cache.asize() == 0
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_the_blocking_api_refuses_the_event_loop(cache: Cache) -> None:
    with pytest.raises(CacheError, match=r"await cache\.acount\(\)"):
        cache.count()


def test_the_blocking_api(tmp_path: Path) -> None:
    request = httpx.Request("GET", "http://h/api/v1/x", headers={"Authorization": "Bearer t"})
    answer = httpx.Response(200, headers={"ETag": '"1"'}, content=b"abc", request=request)
    with Cache(tmp_path / "c.sqlite") as cache:
        assert cache.filepath == tmp_path / "c.sqlite"
        assert cache.set(request, answer)
        assert cache.count() == 1
        assert cache.size() == 3
        got = cache.get(request)
        assert got is not None
        assert got.content == b"abc"
        assert got.headers["etag"] == '"1"'
        assert cache.get(httpx.Request("GET", "http://h/api/v1/x")) is None  # no credential
        assert not cache.set(request, httpx.Response(500, content=b"x", request=request))
        assert cache.count() == 0  # an error answer drops the entry
        cache.set(request, answer)
        cache.clear()
        assert cache.count() == 0
    with pytest.raises(CacheError, match="closed"):
        cache.count()


def test_a_temporary_cache_is_deleted_on_close() -> None:
    cache = Cache()
    request = httpx.Request("GET", "http://h/x")
    cache.set(request, httpx.Response(200, headers={"ETag": 'W/"1"'}, content=b"", request=request))
    path = cache.filepath
    assert path.exists()
    cache.close()
    assert not path.exists()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="capacity"):
        Cache(capacity=0)
    with pytest.raises(aiosdk.ConfigurationError, match="max_item_size"):
        Cache(max_item_size=-1)


# -- failures --------------------------------------------------------------------------------------


async def test_a_corrupt_file_does_not_fail_requests(
    server: ETagServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "corrupt.sqlite"
    await anyio.Path(path).write_bytes(b"this is not a database, " * 100)
    server.put("/things/a", b'{"a": 1}')
    async with Cache(path) as cache:
        transport = transport_of(server, cache)
        try:
            with caplog.at_level(logging.WARNING, "aiosdk"):
                assert (await get(transport, "/things/a")).json() == {"a": 1}
                assert (await get(transport, "/things/a")).json() == {"a": 1}
        finally:
            await transport.aclose()
        with pytest.raises(CacheError, match=r"corrupt\.sqlite.*cannot be used"):
            await cache.acount()
    assert any("goes on uncached" in r.getMessage() for r in caplog.records)


async def test_a_foreign_database_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"

    def make() -> None:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE aiosdk_cache_entries (x)")
        db.close()

    await anyio.to_thread.run_sync(make)
    async with Cache(path) as cache:
        with pytest.raises(CacheError, match="not an aiosdk response cache"):
            await cache.acount()


async def test_a_locked_file_does_not_fail_requests(
    server: ETagServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "locked.sqlite"
    server.put("/things/a", b'{"a": 1}')
    async with Cache(path) as cache:
        await cache.acount()  # made, in WAL mode
        holder = await anyio.to_thread.run_sync(
            lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        )
        await anyio.to_thread.run_sync(holder.execute, "BEGIN EXCLUSIVE")
        transport = transport_of(server, cache)
        try:
            with caplog.at_level(logging.WARNING, "aiosdk"):
                assert (await get(transport, "/things/a")).json() == {"a": 1}
        finally:
            await transport.aclose()
            await anyio.to_thread.run_sync(holder.execute, "ROLLBACK")
            await anyio.to_thread.run_sync(holder.close)
        assert await cache.acount() == 0
    assert any("locked" in r.getMessage() for r in caplog.records)


async def test_a_closed_cache_lets_requests_go_on(server: ETagServer, tmp_path: Path) -> None:
    server.put("/things/a", b"{}")
    cache = Cache(tmp_path / "c.sqlite")
    transport = transport_of(server, cache)
    try:
        await get(transport, "/things/a")
        await cache.aclose()
        assert (await get(transport, "/things/a")).status_code == 200
    finally:
        await transport.aclose()
    assert server.answers("/things/a") == [200, 200]


# -- retries and concurrency -----------------------------------------------------------------------


async def test_retries_still_work_and_a_304_never_escapes(server: ETagServer, cache: Cache) -> None:
    server.put("/things/a", b'{"a": 1}')
    transport = transport_of(server, cache)
    try:
        await get(transport, "/things/a")
        server.script(fail(503), RESET)
        again = await get(transport, "/things/a")
    finally:
        await transport.aclose()
    assert again.json() == {"a": 1}
    assert from_cache(again)
    tried = [seen for seen in server.requests if seen.path == "/api/v1/things/a"]
    assert len(tried) == 4  # the first, then a 503, a reset, and the 304
    assert all("if-none-match" in seen.headers for seen in tried[1:])


async def test_concurrent_tasks(server: ETagServer, cache: Cache) -> None:
    for n in range(10):
        server.put(f"/things/{n}", json.dumps({"n": n}))
    transport = transport_of(server, cache)
    results: dict[int, list[int]] = {n: [] for n in range(10)}

    async def fetch(n: int) -> None:
        results[n].append((await get(transport, f"/things/{n}")).json()["n"])

    try:
        for _ in range(2):
            async with anyio.create_task_group() as tasks:
                for i in range(60):
                    tasks.start_soon(fetch, i % 10)
    finally:
        await transport.aclose()
    assert all(values == [n] * 12 for n, values in results.items())
    assert await cache.acount() == 10
    assert server.answers("/things/3")[-6:] == [304] * 6  # the second round: all revalidated


def test_threads_with_their_own_loops_share_one_cache(tmp_path: Path) -> None:
    """As the blocking facade's clients do: each in its thread, with its own event loop."""
    etags = ETagServer().start()
    errors: list[BaseException] = []
    try:
        for n in range(5):
            etags.put(f"/things/{n}", json.dumps({"n": n}))
        with Cache(tmp_path / "c.sqlite") as cache:

            async def user(token: str) -> None:
                transport = transport_of(etags, cache, token)
                try:
                    for _ in range(3):
                        for n in range(5):
                            assert (await get(transport, f"/things/{n}")).json() == {"n": n}
                finally:
                    await transport.aclose()

            def run(token: str) -> None:
                try:
                    anyio.run(user, token)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=(f"user{i}",)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors, errors
            assert cache.count() == 20  # 4 identities x 5 resources
        assert sum(a == 304 for n in range(5) for a in etags.answers(f"/things/{n}")) == 40
    finally:
        etags.stop()


# -- end to end: the reference server's catalog ----------------------------------------------------


async def cached_client(
    accounts: AsyncAccounts, user: TestUser, cache: Cache
) -> aiosdk.AsyncClient:
    """A client of ``user`` using ``cache``."""
    return await accounts.client(user, cache=cache)


async def call(client: aiosdk.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return await client._ctx.transport.request(method, path, options=client.options, **kwargs)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_end_to_end_against_the_catalog(
    aiosdk_accounts: AsyncAccounts, tmp_path: Path
) -> None:
    async with Cache(tmp_path / "shared.sqlite") as cache:
        alice_user = await aiosdk_accounts.user("alice")
        bob_user = await aiosdk_accounts.user("bob")
        alice = await cached_client(aiosdk_accounts, alice_user, cache)
        bob = await cached_client(aiosdk_accounts, bob_user, cache)
        home = alice_user.username
        await call(
            alice, "POST", f"/catalog/children/{home}", json={"key": "x", "metadata": {"v": 1}}
        )
        node = f"/catalog/nodes/{home}/x"

        first = await call(alice, "GET", node)
        second = await call(alice, "GET", node)
        assert not from_cache(first)
        assert from_cache(second)  # the server said 304
        assert second.json() == first.json()
        assert second.json()["metadata"] == {"v": 1}

        # Bob shares the cache, but never alice's answer: the node is not his to read.
        with pytest.raises(aiosdk.NotFoundError):
            await call(bob, "GET", node)
        await call(
            alice,
            "PUT",
            f"/catalog/shares/{home}/x",
            json={"namespace": bob_user.username, "actions": ["read"]},
        )
        bobs = await call(bob, "GET", node)
        assert not from_cache(bobs)
        assert from_cache(await call(bob, "GET", node))
        assert bobs.json()["allowed_actions"] == ["read"]

        # A change is seen at once: every use is revalidated.
        revision = (await call(alice, "GET", node)).json()["revision"]
        await call(alice, "PATCH", node, json={"revision": revision, "metadata": {"v": 2}})
        changed = await call(alice, "GET", node)
        assert not from_cache(changed)
        assert changed.json()["metadata"] == {"v": 2}

        # Listings are cached per identity too, and many tasks at once get the same answer.
        listing = f"/catalog/children/{home}"
        expected = (await call(alice, "GET", listing)).json()
        answers: list[httpx.Response] = []

        async def fetch() -> None:
            answers.append(await call(alice, "GET", listing))

        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(fetch)
        assert all(from_cache(answer) and answer.json() == expected for answer in answers)
        assert await cache.acount() >= 3  # alice's node and listing, bob's node
