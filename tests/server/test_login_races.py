"""Logins under concurrency, against the real server: a burst of logins holds no database
connection while Argon2 runs (nothing else starves), a password reset or a disabling racing
logins leaves no session opened with what it replaced, and password hashing is bounded across
every event loop of the process (several embedded servers).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timezone
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.server import Server, ServerConfig
from aiosdk.server.accounts import passwords
from aiosdk.server.accounts.models import LoginAttempts, LoginSession, User
from aiosdk.server.config import AccountSettings

from .conftest import assert_error
from .test_sessions import PASSWORD, new_user, whoami

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def server(
    database_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    """The module's server: every request comes from 127.0.0.1, so the address limit is high."""
    accounts = AccountSettings(login_failures_per_address=10_000)
    config = ServerConfig(
        data_dir=tmp_path_factory.mktemp("data"), database_url=database_url, accounts=accounts
    )
    async with Server(config) as running:
        yield running


def _client(server: Server, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=f"{server.http_url}/api/v1",
        headers=headers,
        timeout=60,
        limits=httpx.Limits(max_connections=100),
    )


async def test_a_burst_of_logins_starves_no_other_request(server: Server) -> None:
    """More concurrent logins than the database pool has connections (5 + 10 overflow): none
    holds a connection while its hash waits, so every one is answered, and so is a request that
    has nothing to do with logging in, at once (it used to wait 30 s for the pool, then 500)."""
    burst = 24
    async with _client(server) as anonymous, _client(server, server.admin_token) as admin:

        async def wrong_login(number: int) -> int:
            body = {"username": f"victim-{number}", "password": "wrong password"}
            return (await anonymous.post("/auth/login", json=body)).status_code

        async def wrong_basic(number: int) -> int:
            pair = base64.b64encode(f"victim-{number}:wrong password".encode()).decode()
            return (
                await anonymous.get("/", headers={"Authorization": f"Basic {pair}"})
            ).status_code

        async def unrelated() -> tuple[int, float]:
            await anyio.sleep(0.2)  # while the burst is being checked
            started = time.monotonic()
            status = (await admin.get("/admin/users")).status_code
            return status, time.monotonic() - started

        results: dict[str, Any] = {}

        async def run(name: str, work: Any) -> None:
            results[name] = await work

        async with anyio.create_task_group() as group:
            group.start_soon(run, "unrelated", unrelated())
            for number in range(burst):
                group.start_soon(run, f"login-{number}", wrong_login(number))
                group.start_soon(run, f"basic-{number}", wrong_basic(burst + number))
        status, took = results.pop("unrelated")
        assert status == 200
        assert took < 10, took
        assert set(results.values()) == {401}, results


@pytest.mark.parametrize("change", ["password", "disable"])
async def test_no_session_survives_a_change_racing_logins(
    server: Server, database: async_sessionmaker[AsyncSession], change: str
) -> None:
    """Logins with the old password race a password reset (or a disabling): each either
    committed before it, and its session ends with it, or sees it, and is refused. None may
    open a session afterwards with what was checked before."""
    async with _client(server, server.admin_token) as admin, _client(server) as anonymous:
        username = await new_user(admin)
        grants: list[dict[str, str]] = []
        statuses: list[int] = []
        stop = anyio.Event()

        async def thief() -> None:
            body = {"username": username, "password": PASSWORD}
            while not stop.is_set():
                response = await anonymous.post("/auth/login", json=body)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    grants.append(response.json())

        async with anyio.create_task_group() as group:
            for _ in range(4):  # (fewer than the account's limit: they all get checked)
                group.start_soon(thief)
            await anyio.sleep(1.0)
            update = (
                {"password": "a new passphrase"} if change == "password" else {"disabled": True}
            )
            response = await admin.patch(f"/admin/users/{username}", json=update)
            assert response.status_code == 200, response.text
            await anyio.sleep(0.5)  # logins that checked the old password finish now
            stop.set()
        assert grants, statuses
        assert set(statuses) <= {200, 401, 429}, statuses  # (429: wrong ones, after the change)
        async with database() as session:
            user_id = await session.scalar(select(User.id).where(User.username == username))
            live = await session.scalar(
                select(func.count())
                .select_from(LoginSession)
                .where(LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))
            )
        assert live == 0, f"{live} of {len(grants)} sessions outlived the {change} change"
        for grant in grants:
            assert await whoami(server, f"Bearer {grant['access_token']}") == (401, None)
            response = await anonymous.post(
                "/auth/refresh", json={"refresh_token": grant["refresh_token"]}
            )
            assert_error(response, 401, "unauthenticated")


class _SlowHasher:
    """Stands in for Argon2: takes a while, and records how many run at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self.most = 0
        self.checked: list[str | bytes] = []

    def verify(self, stored: str | bytes, password: str | bytes) -> bool:
        with self._lock:
            self._running += 1
            self.most = max(self.most, self._running)
            self.checked.append(stored)
        time.sleep(0.03)
        with self._lock:
            self._running -= 1
        return True

    def hash(self, password: str | bytes) -> str:
        self.verify("", password)
        return "$argon2id$fake"


async def test_hashing_is_bounded_across_event_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three event loops (as three embedded servers in one process) hash at once: every check
    completes, at most MAX_CONCURRENT_HASHES run at any moment in the whole process, and a
    check without a stored hash (an unknown user) still runs one."""
    fake = _SlowHasher()
    monkeypatch.setattr(passwords, "_hasher", fake)
    outcomes: list[object] = []

    async def one_loop() -> list[object]:
        checks: list[Awaitable[object]] = [
            passwords.verify_password(None if n % 2 else "stored", "pw") for n in range(8)
        ]
        checks.append(passwords.hash_password("pw"))
        return await asyncio.wait_for(asyncio.gather(*checks), timeout=20)

    def in_a_thread() -> None:
        try:
            outcomes.append(asyncio.run(one_loop()))
        except BaseException as exc:  # reported below
            outcomes.append(exc)

    def run_loops() -> None:
        threads = [threading.Thread(target=in_a_thread) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    await anyio.to_thread.run_sync(run_loops)
    for outcome in outcomes:
        assert isinstance(outcome, list), repr(outcome)
        assert outcome[:8] == [n % 2 == 0 for n in range(8)]  # None never matches
    assert len(fake.checked) == 27
    assert 1 < fake.most <= passwords.MAX_CONCURRENT_HASHES
    assert fake.checked.count(passwords._DUMMY_HASH) == 12  # the unknown users' checks


async def test_sqlite_takes_the_write_lock_at_the_first_write_and_not_before(
    database_url: str | None, database: async_sessionmaker[AsyncSession]
) -> None:
    """What the login's re-read relies on there (no row locks in SQLite), with the server's own
    driver (aiosqlite, pysqlite's legacy transactions): a SELECT before any write runs outside a
    transaction (it pins no snapshot); the first write opens one and takes the database's write
    lock, so a read after it sees the latest commit, and no other writer commits until it ends."""
    if database_url is not None:
        pytest.skip("SQLite only: PostgreSQL locks the rows (FOR SHARE)")
    probe, other = f"probe-{uuid.uuid4().hex}", f"probe-{uuid.uuid4().hex}"
    now = datetime.now(timezone.utc)
    async with database() as setup:
        setup.add(LoginAttempts(key=probe, window_start=now, failures=1))
        await setup.commit()
    login, change = database(), database()
    try:
        assert await _failures_of(login, probe) == 1  # (outside a transaction)
        await change.execute(
            update(LoginAttempts).where(LoginAttempts.key == probe).values(failures=2)
        )
        await change.commit()
        login.add(LoginAttempts(key=other, window_start=now, failures=0))
        await login.flush()  # the first write: the transaction and the write lock start here
        assert await _failures_of(login, probe) == 2  # the latest commit, not a stale snapshot

        written = anyio.Event()

        async def write() -> None:
            statement = update(LoginAttempts).where(LoginAttempts.key == probe)
            await change.execute(statement.values(failures=3))
            await change.commit()
            written.set()

        async with anyio.create_task_group() as group:
            group.start_soon(write)
            await anyio.sleep(0.3)
            assert not written.is_set()  # the other writer waits for the lock...
            await login.rollback()
        assert written.is_set()  # ...until the transaction ends
        assert await _failures_of(login, probe) == 3
    finally:
        await login.close()
        await change.close()
        async with database() as cleanup:
            await cleanup.execute(
                delete(LoginAttempts).where(LoginAttempts.key.in_([probe, other]))
            )
            await cleanup.commit()


async def _failures_of(session: AsyncSession, key: str) -> int | None:
    found = await session.scalar(select(LoginAttempts.failures).where(LoginAttempts.key == key))
    return found
