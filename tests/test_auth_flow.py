"""Login sessions on the request path: renewal before expiry and on refusal, single-flight, for
HTTP and gRPC, against a real server whose access tokens live 1.2 s.

The server rounds a token's lifetime up to whole seconds (``expires_in`` 2), so for 0.6 s the
client holds a token it believes good and the server refuses: there, only the server's 401 (or
``UNAUTHENTICATED``) tells, as after a suspend or a server-side change. Past the client's own
renewal time (1.8 s), it renews before sending. Renewals are counted from the server's own
access log, not from anything in the client. The logged-in clients reach the server's HTTP
through a TCP proxy (``tests/faults``), which can answer late or lose an answer.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import httpx
import pytest

import aiosdk
from aiosdk._core import auth as flows
from aiosdk._core.auth import AuthRequest
from aiosdk._core.credentials import SessionCredential

if TYPE_CHECKING:
    from faults.proxy import TcpProxy

pytestmark = pytest.mark.anyio

TTL = 1.2  # the server's access-token lifetime; the client is told 2 s (rounded up)
REFUSED_WINDOW = 1.35  # past the server's expiry, before the client's own renewal time (1.8 s)
EXPIRED = 1.9  # past the client's renewal time too


class AccessLog(logging.Handler):
    """The server's access-log lines (logger ``aiosdk.server``), as ``(method path, status)``."""

    LINE = re.compile(r"^(\S+) (\S+) -> (\S+) in ")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = self.LINE.match(record.getMessage())
        if found:
            self.lines.append((f"{found[1]} {found[2]}", found[3]))

    def count(self, request: str, status: str | None = None) -> int:
        return sum(1 for r, s in self.lines if r == request and (status is None or s == status))

    async def settle(self, request: str, at_least: int, status: str | None = None) -> None:
        """Wait until the server has logged ``at_least`` of ``request`` (it logs after it
        answered, so the last lines may come a moment after the client has its answers)."""
        with anyio.fail_after(5):
            while self.count(request, status) < at_least:  # noqa: ASYNC110 - another thread logs
                await anyio.sleep(0.02)


REFRESH_PATH = "/api/v1/auth/refresh"
LOGIN_PATH = "/api/v1/auth/login"
REFRESH = f"POST {REFRESH_PATH}"
PROFILE = "GET /api/v1/user"


@pytest.fixture(scope="module")
def short_server() -> Iterator[object]:
    from aiosdk.server import ServerConfig, ServerThread
    from aiosdk.server.config import AccountSettings

    config = ServerConfig(accounts=AccountSettings(access_token_ttl=TTL))
    with ServerThread(config) as thread:
        yield thread


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    logger = logging.getLogger("aiosdk.server")
    handler, level = AccessLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
async def admin(short_server: object) -> AsyncIterator[aiosdk.AsyncClient]:
    async with aiosdk.AsyncClient(short_server.http_url, token=short_server.admin_token) as c:  # type: ignore[attr-defined]
        yield c


@pytest.fixture
async def user(admin: aiosdk.AsyncClient) -> tuple[str, str]:
    username, password = f"u-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    await admin.admin.create_user(username, password=password)
    return username, password


@pytest.fixture
def proxy(short_server: object) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the server's HTTP (its gRPC is reached directly: a client goes
    where ``GET /api/v1/`` says it listens)."""
    from urllib.parse import urlsplit

    from faults.proxy import TcpProxy  # (tests/faults: the fault-injection helpers)

    address = urlsplit(short_server.http_url)  # type: ignore[attr-defined]
    assert address.hostname is not None
    assert address.port is not None
    relay = TcpProxy(address.hostname, address.port).start()
    yield relay
    relay.stop()


@pytest.fixture
async def alice(
    proxy: TcpProxy,
    user: tuple[str, str],
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[aiosdk.AsyncClient]:
    """A client logged in as a user, through the proxy."""
    monkeypatch.setenv("AIOSDK_CONFIG_DIR", str(tmp_path))
    async with aiosdk.AsyncClient(proxy.url) as client:
        await client.login(username=user[0], password=user[1])
        yield client


@pytest.fixture
def lasting_renewals(alice: aiosdk.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The access tokens that renewals hand out from now on live a minute (``alice``'s login
    has its 1.2 s token already).

    For the tests of many calls that one renewal serves: all go out with the renewed token, and
    on a loaded machine those fifty requests took longer than the 1.2 s it lived on the server
    (found: the last of them were refused, ``expires_at < now`` in the server's lookup of the
    token, then sent again after a second renewal, or failed if already sent again once). What
    those tests are about is the login's token and the one renewal, not how long the next lasts.
    """
    import dataclasses

    from aiosdk.server.accounts import sessions

    issue = sessions._issue

    async def lasting(session: object, settings: object, *args: object, **kwargs: object) -> object:
        longer = dataclasses.replace(settings, access_token_ttl=60.0)  # type: ignore[type-var]
        return await issue(session, longer, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sessions, "_issue", lasting)


def _session(client: aiosdk.AsyncClient) -> SessionCredential:
    session = client._ctx.transport.auth.session
    assert session is not None
    return session


async def _concurrently(n: int, call: object) -> list[object]:
    results: list[object] = [None] * n

    async def one(i: int) -> None:
        results[i] = await call()  # type: ignore[operator]

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return results


async def _sleep_since_login(client: aiosdk.AsyncClient, seconds: float) -> None:
    issued = _session(client).expires_at - 2  # when the client received the token (expires_in 2)
    await anyio.sleep(max(0.0, issued + seconds - time.time()))


async def test_fifty_calls_on_a_token_known_to_be_expired_renew_it_once_before_sending(
    alice: aiosdk.AsyncClient, access_log: AccessLog, lasting_renewals: None
) -> None:
    before = _session(alice)
    await _sleep_since_login(alice, EXPIRED)
    profiles = await _concurrently(50, alice.user_profile)
    assert {p.username for p in profiles} == {before.username}  # type: ignore[attr-defined]
    await access_log.settle(PROFILE, 50, "200")
    await access_log.settle(REFRESH, 1)
    assert access_log.count(REFRESH) == 1
    await access_log.settle(REFRESH, 1, "200")
    assert access_log.count(REFRESH, "200") == 1
    assert access_log.count(PROFILE, "401") == 0  # renewed before sending: none was refused
    after = _session(alice)
    assert after.access_token != before.access_token
    assert after.refresh_token != before.refresh_token
    assert after.session_id == before.session_id


async def test_fifty_calls_refused_with_an_expired_token_renew_it_once(
    alice: aiosdk.AsyncClient, access_log: AccessLog, lasting_renewals: None
) -> None:
    before = _session(alice)
    budget = alice._ctx.transport.budget.tokens
    await _sleep_since_login(alice, REFUSED_WINDOW)
    profiles = await _concurrently(50, alice.user_profile)
    assert len({p.username for p in profiles}) == 1  # type: ignore[attr-defined]
    await access_log.settle(PROFILE, 50, "200")
    assert access_log.count(PROFILE, "401") >= 1  # the server refused the old token ...
    assert access_log.count(REFRESH) == 1  # ... and one renewal answered every refusal
    assert access_log.count(PROFILE, "200") == 50
    assert _session(alice).access_token != before.access_token
    # Sending a refused request once more is no retry: the budget did not pay for it.
    assert alice._ctx.transport.budget.tokens >= budget


async def test_a_refused_call_is_sent_again_even_with_retries_disabled(
    alice: aiosdk.AsyncClient, access_log: AccessLog
) -> None:
    once = alice.with_options(retry_mode="disabled")
    await _sleep_since_login(alice, REFUSED_WINDOW)
    assert (await once.user_profile()).username
    await access_log.settle(PROFILE, 1, "200")
    assert access_log.count(PROFILE, "401") == 1
    await access_log.settle(REFRESH, 1)
    assert access_log.count(REFRESH) == 1


async def test_grpc_calls_refused_as_unauthenticated_renew_once_and_use_the_new_token(
    alice: aiosdk.AsyncClient, access_log: AccessLog, lasting_renewals: None
) -> None:
    assert (await alice.get_status()).version  # the channel is open, with the first token
    await _sleep_since_login(alice, REFUSED_WINDOW)
    statuses = await _concurrently(20, alice.get_status)
    assert all(s.version for s in statuses)  # type: ignore[attr-defined]
    await access_log.settle(REFRESH, 1)
    assert access_log.count(REFRESH) == 1
    # The renewed token reaches HTTP too, with no renewal of its own.
    assert (await alice.user_profile()).username
    await access_log.settle(PROFILE, 1, "200")
    await access_log.settle(REFRESH, 1)
    assert access_log.count(REFRESH) == 1
    assert access_log.count(PROFILE, "401") == 0


async def test_http_and_grpc_calls_together_share_one_renewal(
    alice: aiosdk.AsyncClient, access_log: AccessLog, lasting_renewals: None
) -> None:
    assert (await alice.get_status()).version
    await _sleep_since_login(alice, REFUSED_WINDOW)
    async with anyio.create_task_group() as tg:
        for _ in range(15):
            tg.start_soon(alice.user_profile)
            tg.start_soon(alice.get_status)
    await access_log.settle(PROFILE, 15, "200")
    await access_log.settle(REFRESH, 1)
    assert access_log.count(REFRESH) == 1


async def test_a_grpc_stream_refused_at_its_start_renews_and_opens_again(
    alice: aiosdk.AsyncClient, access_log: AccessLog
) -> None:
    await _sleep_since_login(alice, REFUSED_WINDOW)
    updates = [s async for s in alice.watch_status(interval=0.05, max_updates=2)]
    assert len(updates) == 2
    await access_log.settle(REFRESH, 1)
    assert access_log.count(REFRESH) == 1


async def test_a_session_that_ended_fails_every_waiting_call_after_one_attempt(
    alice: aiosdk.AsyncClient, access_log: AccessLog, short_server: object
) -> None:
    # Its refresh token is used elsewhere: the server ends the session (a stolen token).
    stolen = _session(alice).refresh_token.reveal()
    url = f"{short_server.http_url}/api/v1/auth/refresh"  # type: ignore[attr-defined]
    async with httpx.AsyncClient() as raw:
        assert (await raw.post(url, json={"refresh_token": stolen})).status_code == 200
        assert (await raw.post(url, json={"refresh_token": stolen})).status_code == 401  # reuse
    await access_log.settle(REFRESH, 2)
    errors = []

    async def call() -> None:
        with pytest.raises(aiosdk.InvalidTokenError) as info:
            await alice.user_profile()
        errors.append(info.value)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(call)
    assert len(errors) == 20
    assert all("has ended" in str(e) and "log in again" in str(e) for e in errors)
    # The access tokens died with the session at once; the client tried to renew once.
    await access_log.settle(REFRESH, 3)
    assert access_log.count(REFRESH) == 3
    await access_log.settle(REFRESH, 2, "401")
    assert access_log.count(REFRESH, "401") == 2
    for error in errors:
        assert stolen not in str(error)
        assert stolen not in repr(error)


async def test_reusing_a_rotated_refresh_token_ends_the_session_on_http_and_grpc(
    alice: aiosdk.AsyncClient, short_server: object
) -> None:
    old = _session(alice).refresh_token.reveal()
    await alice.refresh()
    renewed = _session(alice)
    assert renewed.refresh_token.reveal() != old
    assert (await alice.user_profile()).username  # the renewed session works
    async with httpx.AsyncClient() as raw:
        url = f"{short_server.http_url}/api/v1/auth/refresh"  # type: ignore[attr-defined]
        assert (await raw.post(url, json={"refresh_token": old})).status_code == 401
    async with aiosdk.AsyncClient(alice.url, token=renewed.access_token.reveal()) as holder:
        with pytest.raises(aiosdk.InvalidTokenError):
            await holder.user_profile()
        with pytest.raises(aiosdk.InvalidTokenError):
            await holder.get_status()
    with pytest.raises(aiosdk.InvalidTokenError, match="log in again"):
        await alice.refresh()


async def test_logout_revokes_the_session_at_once_on_http_and_grpc(
    alice: aiosdk.AsyncClient,
) -> None:
    token = _session(alice).access_token.reveal()
    async with aiosdk.AsyncClient(alice.url, token=token) as holder:
        assert (await holder.get_status()).version
        assert (await holder.user_profile()).username
        await alice.logout()
        with pytest.raises(aiosdk.InvalidTokenError):
            await holder.user_profile()
        with pytest.raises(aiosdk.InvalidTokenError):
            await holder.get_status()
    with pytest.raises(aiosdk.AuthenticationError, match="login"):
        await alice.user_profile()
    await alice.logout()  # twice is once


async def test_logging_out_of_an_expired_session_renews_it_to_revoke_it(
    alice: aiosdk.AsyncClient, access_log: AccessLog, short_server: object
) -> None:
    await _sleep_since_login(alice, EXPIRED)
    refresh_token = _session(alice).refresh_token.reveal()
    await alice.logout()
    await access_log.settle(REFRESH, 1, "200")
    assert access_log.count(REFRESH, "200") == 1
    async with httpx.AsyncClient() as raw:  # nothing of the session works any more
        url = f"{short_server.http_url}/api/v1/auth/refresh"  # type: ignore[attr-defined]
        assert (await raw.post(url, json={"refresh_token": refresh_token})).status_code == 401


async def test_cancelling_the_call_that_renews_does_not_lose_the_session(
    alice: aiosdk.AsyncClient, access_log: AccessLog
) -> None:
    auth = alice._ctx.transport.auth
    await _sleep_since_login(alice, EXPIRED)
    async with anyio.create_task_group() as tg:
        tg.start_soon(alice.user_profile)
        with anyio.fail_after(5):
            while auth._flight is None:  # the renewal is on the wire
                await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    # The renewal ran to its end: its answer (the only valid refresh token now) was kept.
    assert (await alice.user_profile()).username
    await alice.refresh()
    assert (await alice.user_profile()).username
    await access_log.settle(REFRESH, 2, "200")
    assert access_log.count(REFRESH, "200") == 2
    assert access_log.count(REFRESH, "401") == 0


@pytest.mark.parametrize("how", ["task.cancel()", "asyncio.timeout"])
async def test_asyncio_s_own_cancellation_of_the_call_that_renews_does_not_lose_the_session(
    alice: aiosdk.AsyncClient,
    access_log: AccessLog,
    proxy: TcpProxy,
    how: str,
    lasting_renewals: None,  # (answered 0.8 s late, as below)
) -> None:
    """Found (the blocking facade's Ctrl-C, which is ``Task.cancel()`` on its loop): an anyio
    shield does not hold off asyncio's own cancellation. Cancelled after the server had renewed
    the session, the renewal lost its answer; the next call sent the spent refresh token, and
    the server, taking that for a stolen token's reuse, ended the session (401 on refresh)."""
    import asyncio
    import sys

    if how == "asyncio.timeout" and sys.version_info < (3, 11):
        pytest.skip("asyncio.timeout is Python 3.11+")
    auth = alice._ctx.transport.auth
    proxy.delay_responses_to(REFRESH_PATH, 0.8)  # renewed at once, answered 0.8 s late
    await _sleep_since_login(alice, EXPIRED)
    if how == "task.cancel()":
        task = asyncio.ensure_future(alice.user_profile())
        with anyio.fail_after(5):
            await access_log.settle(REFRESH, 1, "200")  # the refresh token is spent now
        assert auth._flight is not None  # ... and its answer on the way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:

        async def renewed_then_timed_out() -> None:
            with anyio.fail_after(5):
                while auth._flight is None:  # the renewal is on the wire
                    await anyio.lowlevel.checkpoint()
            await access_log.settle(REFRESH, 1, "200")

        watcher = asyncio.ensure_future(renewed_then_timed_out())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):  # type: ignore[attr-defined]
                await alice.user_profile()
        await watcher
    assert auth._flight is None
    assert auth.session is not None
    assert proxy.delayed == 1
    # The renewal ran to its end: its answer (the only valid refresh token now) was kept.
    assert (await alice.user_profile()).username
    await alice.refresh()
    assert (await alice.user_profile()).username
    await access_log.settle(REFRESH, 2, "200")
    assert access_log.count(REFRESH, "401") == 0  # no refresh token was ever sent twice


@pytest.mark.parametrize("wire", ["http", "grpc"])
async def test_a_renewal_has_the_clients_timeout_not_the_calls(
    alice: aiosdk.AsyncClient,
    access_log: AccessLog,
    proxy: TcpProxy,
    wire: str,
    lasting_renewals: None,  # (answered 0.8 s late, a 1.2 s token would leave 0.4 s to use it)
) -> None:
    quick = alice.with_options(timeout=0.4)  # fine for the call; too short for this renewal
    call = quick.user_profile if wire == "http" else quick.get_status
    if wire == "grpc":
        assert (await alice.get_status()).version  # the channel is open, with the first token
    # The server renews at once (spending the refresh token) and its answer comes 0.8 s late,
    # as from a loaded server. On both wires the renewal is this HTTP request.
    proxy.delay_responses_to(REFRESH_PATH, 0.8)
    await _sleep_since_login(alice, REFUSED_WINDOW)
    assert await call()  # refused, renewed (in 0.8 s), sent again
    assert proxy.delayed == 1
    await access_log.settle(REFRESH, 1)
    assert access_log.count(REFRESH) == 1
    assert access_log.count(REFRESH, "200") == 1
    assert (await alice.user_profile()).username  # the session lives on


async def test_a_login_has_the_clients_timeout_not_the_calls(
    proxy: TcpProxy, user: tuple[str, str]
) -> None:
    proxy.delay_responses_to(LOGIN_PATH, 0.8)  # logged in at once, answered 0.8 s late
    async with aiosdk.AsyncClient(proxy.url) as client:
        await client.with_options(timeout=0.4).login(username=user[0], password=user[1])
        assert proxy.delayed == 1
        assert (await client.user_profile()).username == user[0]


@pytest.mark.parametrize("when", ["before sending", "after a refusal"])
async def test_a_refresh_whose_answer_was_lost_is_never_sent_again(
    proxy: TcpProxy,
    user: tuple[str, str],
    access_log: AccessLog,
    when: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    monkeypatch.setenv("AIOSDK_CONFIG_DIR", str(tmp_path))
    async with aiosdk.AsyncClient(proxy.url) as client:
        await client.login(username=user[0], password=user[1])
        spent = _session(client).refresh_token.reveal()
        await _sleep_since_login(client, EXPIRED if when == "before sending" else REFUSED_WINDOW)
        # The server renews the session, and the proxy loses its answer (the client sees its
        # connection reset); no other answer is lost.
        proxy.drop_response_to(REFRESH_PATH)
        with pytest.raises(aiosdk.InvalidTokenError, match=r"was lost.*log in again") as info:
            await client.user_profile()
        assert isinstance(info.value.__cause__, aiosdk.TransportError)
        assert proxy.dropped == 1
        await access_log.settle(REFRESH, 1, "200")  # the server did renew the session
        with pytest.raises(aiosdk.InvalidTokenError, match="log in again"):
            await client.user_profile()  # ... and the spent refresh token is not sent again
        with pytest.raises(aiosdk.InvalidTokenError, match="log in again"):
            await client.refresh()
        await anyio.sleep(0.2)  # (anything sent would be logged by now)
        assert access_log.count(REFRESH) == 1
        await client.login(username=user[0], password=user[1])  # logging in again is the way
        assert (await client.user_profile()).username == user[0]
    for text in (str(info.value), repr(info.value)):
        assert spent not in text


async def test_each_call_that_waited_gets_an_error_of_its_own(
    alice: aiosdk.AsyncClient, access_log: AccessLog, short_server: object
) -> None:
    stolen = _session(alice).refresh_token.reveal()
    url = f"{short_server.http_url}/api/v1/auth/refresh"  # type: ignore[attr-defined]
    async with httpx.AsyncClient() as raw:  # used elsewhere twice: the server ends the session
        assert (await raw.post(url, json={"refresh_token": stolen})).status_code == 200
        assert (await raw.post(url, json={"refresh_token": stolen})).status_code == 401
    errors: list[aiosdk.InvalidTokenError] = []

    async def call() -> None:
        try:
            await alice.user_profile()
        except aiosdk.InvalidTokenError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(call)
    with pytest.raises(aiosdk.InvalidTokenError) as later:  # after the renewal, too
        await alice.user_profile()
    errors.append(later.value)
    assert len(errors) == 21
    assert len({id(e) for e in errors}) == 21  # no object shared by two tasks
    assert len({(type(e), str(e), e.status_code, e.request_id) for e in errors}) == 1
    renewal = [e for e in errors if e.__cause__ is None or not isinstance(e.__cause__, type(e))]
    assert len(renewal) == 1  # the renewal's own error; every other one is raised from it
    for error in errors:
        if error is not renewal[0]:
            assert error.__cause__ is renewal[0]
    depths = {len(traceback.extract_tb(e.__traceback__)) for e in errors if e is not renewal[0]}
    assert max(depths) <= 40  # each traceback is one task's: it did not grow with the others'


# -- the sans-I/O flows, driven without a server ---------------------------------------------


def _grant(**changes: object) -> dict[str, object]:
    answer: dict[str, object] = {
        "access_token": "aio_access",
        "refresh_token": "aio_refresh",
        "token_type": "bearer",
        "expires_in": 900,
        "expires_at": "2030-01-01T00:00:00+00:00",
        "session_id": "s1",
        "username": "alice",
    }
    return {**answer, **changes}


async def test_the_password_flow_asks_for_one_login_and_hides_the_password() -> None:
    sent: list[AuthRequest] = []

    async def send(request: AuthRequest) -> object:
        sent.append(request)
        return _grant()

    session = await flows.run(flows.password_login("alice", aiosdk.Secret("hunter2!")), send)
    assert [(r.method, r.path) for r in sent] == [("POST", "/auth/login")]
    assert sent[0].body == {"username": "alice", "password": "hunter2!"}
    assert "hunter2" not in repr(sent[0])
    assert session.username == "alice"
    assert session.session_id == "s1"
    assert session.access_token.reveal() == "aio_access"
    assert "aio_access" not in repr(session)
    assert "aio_refresh" not in repr(session)
    assert session.refresh_at < session.expires_at <= time.time() + 900


async def test_the_refresh_flow_says_the_session_ended_when_refused() -> None:
    session = SessionCredential.from_answer(_grant())

    async def refuse(request: AuthRequest) -> object:
        assert request.body == {"refresh_token": "aio_refresh"}
        raise aiosdk.AuthenticationError("Invalid refresh token", status_code=401)

    with pytest.raises(aiosdk.InvalidTokenError, match="session of 'alice' has ended"):
        await flows.run(flows.refresh(session), refuse)


@pytest.mark.parametrize(
    "answer", [_grant(expires_in="soon"), {"access_token": "aio_x"}, _grant(expires_in=-1)]
)
def test_an_unusable_login_answer_is_a_protocol_error_that_shows_no_token(
    answer: dict[str, object],
) -> None:
    with pytest.raises(aiosdk.ProtocolError) as info:
        SessionCredential.from_answer(answer)
    assert "aio_" not in str(info.value)


def test_renewal_is_due_shortly_before_expiry() -> None:
    long = SessionCredential.from_answer(_grant(expires_in=900), now=1000.0)
    assert (long.refresh_at, long.expires_at) == (1870.0, 1900.0)  # 30 s ahead
    short = SessionCredential.from_answer(_grant(expires_in=2), now=1000.0)
    assert (short.refresh_at, short.expires_at) == (1001.8, 1002.0)  # a tenth of its life
