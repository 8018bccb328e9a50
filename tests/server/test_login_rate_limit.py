"""Failed logins are limited per account and per client address: 429 with Retry-After, counted
in the database even though the failing request rolls back, reset by a success (the account's
count only), over after the window; Basic credentials count too, on HTTP and gRPC. Concurrent
guesses get exactly as many checks as the limit allows. The counts are kept under HMACs keyed
by the server's keyring, which name nobody.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType

import anyio
import grpc
import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.server import Server, ServerConfig
from aiosdk.server.accounts.models import LoginAttempts
from aiosdk.server.accounts.ratelimit import ATTEMPT_KEY_PURPOSE, attempt_key
from aiosdk.server.config import AccountSettings

from .conftest import assert_error, create_token, make_client
from .grpcio_stubs import grpcio_stubs
from .test_sessions import PASSWORD, basic, grpc_code, new_user, whoami

pytestmark = pytest.mark.anyio

PER_ACCOUNT = 3
PER_ADDRESS = 8


@pytest.fixture(scope="module")
async def server(
    database_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    """The module's server: 3 failures per account, 8 per address, in 60 s windows."""
    accounts = AccountSettings(
        login_failures_per_account=PER_ACCOUNT, login_failures_per_address=PER_ADDRESS
    )
    config = ServerConfig(
        data_dir=tmp_path_factory.mktemp("data"), database_url=database_url, accounts=accounts
    )
    async with Server(config) as running:
        yield running


@pytest.fixture(autouse=True)
async def no_failures_yet(database: async_sessionmaker[AsyncSession]) -> None:
    """Every test starts with no failed logins counted (they all come from 127.0.0.1)."""
    async with database() as session:
        await session.execute(delete(LoginAttempts))
        await session.commit()


@pytest.fixture(scope="module")
def grpcio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    with grpcio_stubs(tmp_path_factory.mktemp("grpcio"), "status") as modules:
        yield modules


def key(server: Server, value: str) -> str:
    """The key of ``"user:<name>"`` or ``"addr:<ip>"``: an HMAC under the server's keyring."""
    kind, _, name = value.partition(":")
    return attempt_key(server.keyring.derive(ATTEMPT_KEY_PURPOSE)[0], kind, name)


async def failures(server: Server, database: async_sessionmaker[AsyncSession], value: str) -> int:
    """The failures counted under ``"user:<name>"`` or ``"addr:<ip>"``."""
    async with database() as session:
        found = await session.scalar(
            select(LoginAttempts.failures).where(LoginAttempts.key == key(server, value))
        )
    return found or 0


async def attempt(http: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await http.post("/auth/login", json={"username": username, "password": password})


def assert_limited(response: httpx.Response, window: float = 60) -> int:
    assert_error(response, 429, "rate_limited")
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window
    return retry_after


async def test_an_account_s_failures_answer_429_with_retry_after(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    database: async_sessionmaker[AsyncSession],
) -> None:
    alice, bob = await new_user(client), await new_user(client)
    for _ in range(PER_ACCOUNT):
        assert_error(await attempt(anonymous, alice, "wrong"), 401, "unauthenticated")
    # Counted, though each of those requests failed (and rolled its own work back).
    assert await failures(server, database, f"user:{alice}") == PER_ACCOUNT
    assert await failures(server, database, "addr:127.0.0.1") == PER_ACCOUNT
    # Now even the right password is refused, without being checked.
    assert_limited(await attempt(anonymous, alice, PASSWORD))
    assert_limited(await attempt(anonymous, alice, "wrong"))
    assert await failures(server, database, f"user:{alice}") == PER_ACCOUNT  # a 429 is no failure
    # Another account from the same address is not limited yet.
    assert (await attempt(anonymous, bob, PASSWORD)).status_code == 200


async def test_a_success_resets_the_account_s_count_not_the_address_s(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    database: async_sessionmaker[AsyncSession],
) -> None:
    alice = await new_user(client)
    for _ in range(2):
        for _ in range(PER_ACCOUNT - 1):
            assert_error(await attempt(anonymous, alice, "wrong"), 401, "unauthenticated")
        assert (await attempt(anonymous, alice, PASSWORD)).status_code == 200
        assert await failures(server, database, f"user:{alice}") == 0
    assert await failures(server, database, "addr:127.0.0.1") == 2 * (PER_ACCOUNT - 1)


async def test_an_address_s_failures_across_accounts_answer_429(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    database: async_sessionmaker[AsyncSession],
) -> None:
    alice = await new_user(client)
    api = await create_token(client, owner=alice)
    for number in range(PER_ADDRESS):  # one guess each at many (unknown) accounts
        response = await attempt(anonymous, f"guess-{number}", PASSWORD)
        assert_error(response, 401, "unauthenticated")
    assert await failures(server, database, "addr:127.0.0.1") == PER_ADDRESS
    assert_limited(await attempt(anonymous, alice, PASSWORD))
    assert_limited(await anonymous.post("/auth/login", json={"token": api["token"]}))


async def test_bad_tokens_count_toward_the_address_limit(
    anonymous: httpx.AsyncClient, database: async_sessionmaker[AsyncSession]
) -> None:
    for number in range(PER_ADDRESS):
        response = await anonymous.post("/auth/login", json={"token": f"aio_guess{number}"})
        assert_error(response, 401, "unauthenticated")
    assert_limited(await anonymous.post("/auth/login", json={"token": "aio_another"}))


async def _concurrently(count: int, attempt: Callable[[int], Awaitable[int]]) -> list[int]:
    statuses: list[int] = []

    async def one(number: int) -> None:
        statuses.append(await attempt(number))

    async with anyio.create_task_group() as group:
        for number in range(count):
            group.start_soon(one, number)
    return statuses


async def test_concurrent_guesses_get_exactly_the_limit_checked(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    database: async_sessionmaker[AsyncSession],
) -> None:
    """Each attempt is counted before its password is checked: of 12 concurrent guesses at
    one account, as many as its limit are checked (401), the rest refused unchecked (429)."""
    alice = await new_user(client)

    async def guess(number: int) -> int:
        return (await attempt(anonymous, alice, f"wrong-{number}")).status_code

    statuses = await _concurrently(12, guess)
    assert sorted(statuses) == [401] * PER_ACCOUNT + [429] * (12 - PER_ACCOUNT)
    assert await failures(server, database, f"user:{alice}") == PER_ACCOUNT
    assert await failures(server, database, "addr:127.0.0.1") == PER_ACCOUNT  # 429s uncounted
    assert_limited(await attempt(anonymous, alice, PASSWORD))


async def test_concurrent_guesses_from_one_address_get_exactly_its_limit_checked(
    server: Server, anonymous: httpx.AsyncClient, database: async_sessionmaker[AsyncSession]
) -> None:
    async def guess(number: int) -> int:  # one guess at each of many (unknown) accounts
        return (await attempt(anonymous, f"nobody-{number}", PASSWORD)).status_code

    statuses = await _concurrently(2 * PER_ADDRESS, guess)
    assert sorted(statuses) == [401] * PER_ADDRESS + [429] * PER_ADDRESS
    assert await failures(server, database, "addr:127.0.0.1") == PER_ADDRESS


async def test_concurrent_basic_guesses_get_exactly_the_limit_checked(
    server: Server,
    client: httpx.AsyncClient,
    database: async_sessionmaker[AsyncSession],
    grpcio: dict[str, ModuleType],
) -> None:
    alice = await new_user(client)

    async def guess(number: int) -> int:  # (different passwords: one check each)
        return (await whoami(server, basic(alice, f"wrong-{number}")))[0]

    statuses = await _concurrently(10, guess)
    assert sorted(statuses) == [401] * PER_ACCOUNT + [429] * (10 - PER_ACCOUNT)
    assert await failures(server, database, f"user:{alice}") == PER_ACCOUNT
    code = await grpc_code(server, grpcio, basic(alice, PASSWORD))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_success_gives_its_address_count_back(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    database: async_sessionmaker[AsyncSession],
) -> None:
    """Counted before it is checked, a login that succeeds counts nothing against its address
    (nor do successful Basic credentials or token logins)."""
    alice = await new_user(client)
    api = await create_token(client, owner=alice)
    assert_error(await attempt(anonymous, "nobody", PASSWORD), 401, "unauthenticated")
    for _ in range(PER_ADDRESS + 1):
        assert (await attempt(anonymous, alice, PASSWORD)).status_code == 200
        assert (
            await anonymous.post("/auth/login", json={"token": api["token"]})
        ).status_code == 200
    assert await whoami(server, basic(alice, PASSWORD)) == (200, alice)
    assert await failures(server, database, "addr:127.0.0.1") == 1
    assert await failures(server, database, f"user:{alice}") == 0


async def test_the_counts_are_kept_under_keyed_hashes_that_name_nobody(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    database: async_sessionmaker[AsyncSession],
) -> None:
    alice = await new_user(client)
    assert_error(await attempt(anonymous, alice, "wrong"), 401, "unauthenticated")
    async with database() as session:
        keys = set(await session.scalars(select(LoginAttempts.key)))
    # Not a plain hash anyone could compute from a list of names or addresses...
    for plain in (f"user:{alice}", "addr:127.0.0.1"):
        assert hashlib.sha256(plain.encode()).hexdigest() not in keys
    # ...but an HMAC under the server keyring's sub-key for the purpose.
    assert keys == {key(server, f"user:{alice}"), key(server, "addr:127.0.0.1")}


@pytest.mark.parametrize(
    "decoded",
    [b"alice:\xed\xa0\x80-lone-surrogate", b"alice:\x80-not-utf-8", b"\xed\xb2\x80:x"],
)
async def test_basic_credentials_that_are_no_text_are_401(
    server: Server, grpcio: dict[str, ModuleType], decoded: bytes
) -> None:
    credentials = "Basic " + base64.b64encode(decoded).decode()
    assert await whoami(server, credentials) == (401, None)
    assert await grpc_code(server, grpcio, credentials) == grpc.StatusCode.UNAUTHENTICATED


async def test_wrong_basic_credentials_count_on_http_and_grpc(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    database: async_sessionmaker[AsyncSession],
    grpcio: dict[str, ModuleType],
) -> None:
    alice = await new_user(client)
    assert await whoami(server, basic(alice, "wrong")) == (401, None)
    assert await whoami(server, basic(alice, "wrong again")) == (401, None)
    code = await grpc_code(server, grpcio, basic(alice, "wrong once more"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert await failures(server, database, f"user:{alice}") == PER_ACCOUNT
    async with make_client(server, None) as http:
        response = await http.get("/", headers={"Authorization": basic(alice, PASSWORD)})
    assert_limited(response)
    code = await grpc_code(server, grpcio, basic(alice, PASSWORD))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_limited(await attempt(anonymous, alice, PASSWORD))


async def test_names_no_user_can_have_are_refused_without_counting(
    server: Server, anonymous: httpx.AsyncClient, database: async_sessionmaker[AsyncSession]
) -> None:
    for name in ("admin", "public", "Alice", "-x", "x_", "a.b"):
        response = await attempt(anonymous, name, PASSWORD)
        assert assert_error(response, 401, "unauthenticated")["message"] == "Invalid credentials"
    assert await failures(server, database, "addr:127.0.0.1") == 0


WINDOW = 3
"""Seconds of :func:`short_window`'s login windows."""


@pytest.fixture
async def short_window(
    server: Server, database_url: str | None, tmp_path: Path
) -> AsyncIterator[Server]:
    """A server whose windows last 3 s (long enough for a busy machine to make three
    attempts within one), with 2 failures per account."""
    accounts = AccountSettings(login_failures_per_account=2, login_window_seconds=WINDOW)
    config = ServerConfig(
        data_dir=tmp_path,
        database_url=database_url,
        admin_token=server.admin_token,
        accounts=accounts,
    )
    async with Server(config) as running:
        yield running


async def test_the_limit_ends_with_its_window(short_window: Server) -> None:
    server = short_window
    async with make_client(server, server.admin_token) as admin, make_client(server, None) as anon:
        alice = await new_user(admin)
        for _ in range(2):
            assert_error(await attempt(anon, alice, "wrong"), 401, "unauthenticated")
        retry_after = assert_limited(await attempt(anon, alice, PASSWORD), window=WINDOW)
        await anyio.sleep(retry_after + 0.05)  # Retry-After: the window's rest, rounded up
        assert (await attempt(anon, alice, PASSWORD)).status_code == 200
        # A failure after the window starts a new one: counted from 1 again.
        assert_error(await attempt(anon, alice, "wrong"), 401, "unauthenticated")
        assert (await attempt(anon, alice, PASSWORD)).status_code == 200
