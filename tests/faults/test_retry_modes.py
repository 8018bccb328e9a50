"""Which calls each retry mode retries, and how many attempts reach the server.

The scripted server answers 503s and 500s with ``Retry-After: 0`` where only the attempt count
matters, so that ten forceful retries take milliseconds instead of ~20 s of real backoff.
"""

from __future__ import annotations

import anyio
import pytest

import aiosdk

from .conftest import RetryLog
from .scripted import HANGUP, RESET, Action, Respond, ScriptedServer, fail

pytestmark = pytest.mark.anyio

MODES = ["default", "forceful", "disabled"]
ATTEMPTS_WHEN_ALWAYS_FAILING = {"default": 4, "forceful": 11, "disabled": 1}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client_of(server: ScriptedServer, mode: str = "default") -> aiosdk.AsyncClient:
    return aiosdk.AsyncClient(server.url, token="t", retry_mode=mode)


def always(status: int) -> Respond:
    return fail(status, retry_after="0")


# -- idempotent calls (GET) ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_get_on_persistent_503_makes_the_modes_attempts(
    scripted: ScriptedServer, mode: str
) -> None:
    scripted.script(then=always(503))
    async with client_of(scripted, mode) as client:
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await client.server_info()
    assert len(scripted.seen("GET")) == ATTEMPTS_WHEN_ALWAYS_FAILING[mode]


async def test_get_recovers_from_503s_with_real_backoff(scripted: ScriptedServer) -> None:
    scripted.script(fail(503), fail(503))
    async with client_of(scripted) as client:
        info = await client.server_info()
    assert info.name == "scripted"
    assert len(scripted.requests) == 3


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
async def test_get_retries_each_transient_status_in_default_mode(
    scripted: ScriptedServer, status: int
) -> None:
    scripted.script(fail(status, retry_after="0"))
    async with client_of(scripted) as client:
        await client.server_info()
    assert len(scripted.requests) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_500_is_retried_only_in_forceful_mode(scripted: ScriptedServer, mode: str) -> None:
    scripted.script(then=always(500))
    async with client_of(scripted, mode) as client:
        with pytest.raises(aiosdk.InternalServerError):
            await client.server_info()
    assert len(scripted.requests) == {"default": 1, "forceful": 11, "disabled": 1}[mode]


# -- mutating calls --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_post_on_persistent_503_is_retried_only_in_forceful_mode(
    scripted: ScriptedServer, mode: str
) -> None:
    scripted.script(then=always(503))
    async with client_of(scripted, mode) as client:
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await client.tokens.create("ci")
    assert len(scripted.seen("POST")) == {"default": 1, "forceful": 11, "disabled": 1}[mode]


async def test_forceful_post_recovers_from_503s(scripted: ScriptedServer) -> None:
    scripted.script(always(503), always(503))
    async with client_of(scripted, "forceful") as client:
        token = await client.tokens.create("ci")
    assert token.label == "ci"
    assert len(scripted.seen("POST")) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_delete_is_idempotent_so_default_mode_retries_it(
    scripted: ScriptedServer, mode: str
) -> None:
    scripted.script(then=always(503))
    async with client_of(scripted, mode) as client:
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await client.tokens.revoke("tok-1")
    assert len(scripted.seen("DELETE")) == ATTEMPTS_WHEN_ALWAYS_FAILING[mode]


# asyncio only: under trio the retry works too, but httpx's own transport leaves its body
# generators unfinalized when decoding fails (Response.aread without aclosing), and trio reports
# them as a ResourceWarning at garbage collection, which -W error turns into a failure.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_503_with_an_undecodable_body_is_still_retried(scripted: ScriptedServer) -> None:
    corrupt = Respond(503, {"Content-Encoding": "gzip", "Retry-After": "0"}, body=b"not gzip")
    scripted.script(corrupt)
    async with client_of(scripted) as client:
        await client.server_info()
    assert len(scripted.requests) == 2


# -- never retried ---------------------------------------------------------------------------

CLIENT_ERRORS: dict[int, type[aiosdk.StatusError]] = {
    400: aiosdk.BadRequestError,
    401: aiosdk.AuthenticationError,
    403: aiosdk.PermissionDeniedError,
    404: aiosdk.NotFoundError,
    409: aiosdk.ConflictError,
    422: aiosdk.UnprocessableEntityError,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", sorted(CLIENT_ERRORS))
async def test_client_errors_are_never_retried_and_raise_their_class(
    scripted: ScriptedServer, mode: str, status: int
) -> None:
    scripted.script(then=fail(status, retry_after="0"))
    async with client_of(scripted, mode) as client:
        with pytest.raises(CLIENT_ERRORS[status]) as get_error:
            await client.server_info()
        with pytest.raises(CLIENT_ERRORS[status]):
            await client.tokens.create("ci")
    assert [r.method for r in scripted.requests] == ["GET", "POST"]
    error = get_error.value
    assert error.status_code == status
    assert error.message == f"scripted {status}"
    assert error.request_id == "req-1"


# -- the connection breaks -------------------------------------------------------------------


@pytest.mark.parametrize("fault", [RESET, HANGUP], ids=["reset", "hangup"])
async def test_broken_connection_get_is_retried_in_default_mode(
    scripted: ScriptedServer, fault: Action
) -> None:
    scripted.script(fault)
    async with client_of(scripted) as client:
        await client.server_info()
    assert len(scripted.requests) == 2


async def test_broken_connection_get_is_not_retried_when_disabled(
    scripted: ScriptedServer,
) -> None:
    scripted.script(RESET)
    async with client_of(scripted, "disabled") as client:
        with pytest.raises(aiosdk.ProtocolError):
            await client.server_info()
    assert len(scripted.requests) == 1


@pytest.mark.parametrize("fault", [RESET, HANGUP], ids=["reset", "hangup"])
async def test_broken_connection_post_that_reached_the_server_is_not_retried_in_default_mode(
    scripted: ScriptedServer, fault: Action
) -> None:
    scripted.script(fault)
    async with client_of(scripted) as client:
        with pytest.raises(aiosdk.ProtocolError) as caught:
            await client.tokens.create("ci")
    assert caught.value.request_sent
    assert len(scripted.requests) == 1


@pytest.mark.parametrize("fault", [RESET, HANGUP], ids=["reset", "hangup"])
async def test_broken_connection_post_is_retried_in_forceful_mode(
    scripted: ScriptedServer, fault: Action
) -> None:
    scripted.script(fault)
    async with client_of(scripted, "forceful") as client:
        token = await client.tokens.create("ci")
    assert token.label == "ci"
    assert len(scripted.seen("POST")) == 2


# A transport may send a request again by itself when a reused keep-alive connection closes
# before any byte of the response (a stale idle connection), but never a POST: the server may
# have read it, and only the retry mode decides whether to risk that.
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("mode", ["default", "disabled"])
@pytest.mark.parametrize("fault", [RESET, HANGUP], ids=["reset", "hangup"])
async def test_post_on_reused_connection_that_breaks_is_not_resent(
    scripted: ScriptedServer, mode: str, fault: Action
) -> None:
    async with client_of(scripted, mode) as client:
        await client.server_info()  # leaves a keep-alive connection in the pool
        scripted.script(fault)
        with pytest.raises(aiosdk.ProtocolError):
            await client.tokens.create("ci")
    assert len(scripted.seen("POST")) == 1


async def test_forceful_post_on_reused_connection_that_breaks_is_retried(
    scripted: ScriptedServer,
) -> None:
    async with client_of(scripted, "forceful") as client:
        await client.server_info()
        scripted.script(RESET)
        await client.tokens.create("ci")
    assert len(scripted.seen("POST")) == 2


# -- the connection is refused: the request never reached the server ------------------------


async def test_post_on_refused_connection_is_retried_in_default_mode(
    not_listening: ScriptedServer, retry_log: RetryLog
) -> None:
    # The port refuses until the SDK logs its first retry; then it accepts, queued by the kernel.
    retry_log.on_first_retry = not_listening.listen
    async with client_of(not_listening) as client:
        token = await client.tokens.create("ci")
    assert token.label == "ci"
    assert len(retry_log.retries) == 1
    assert len(not_listening.requests) == 1


# Forceful mode is left out: ten retries of real backoff (no Retry-After to shorten it) take ~20 s.
@pytest.mark.parametrize("mode", ["default", "disabled"])
async def test_post_on_refused_connection_attempts_per_mode(
    refused_url: str, retry_log: RetryLog, mode: str
) -> None:
    async with aiosdk.AsyncClient(refused_url, token="t", retry_mode=mode) as client:
        with pytest.raises(aiosdk.ConnectError) as caught:
            await client.tokens.create("ci")
    assert not caught.value.request_sent
    assert len(retry_log.retries) == ATTEMPTS_WHEN_ALWAYS_FAILING[mode] - 1


# -- where the mode is set -------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["FORCEFUL", "Forceful", aiosdk.RetryMode.FORCEFUL])
async def test_mode_accepts_any_case_and_the_enum(
    scripted: ScriptedServer, spelling: str | aiosdk.RetryMode
) -> None:
    scripted.script(then=always(503))
    async with aiosdk.AsyncClient(scripted.url, token="t", retry_mode=spelling) as client:
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await client.tokens.create("ci")
    assert len(scripted.requests) == 11


async def test_retry_mode_method_changes_the_client_and_its_services(
    scripted: ScriptedServer,
) -> None:
    scripted.script(then=always(503))
    async with client_of(scripted, "forceful") as client:
        tokens = client.tokens  # a service object handed out before the change
        client.retry_mode("disabled")
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await tokens.create("ci")
        assert len(scripted.requests) == 1
        client.retry_mode()  # back to the default mode
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await client.server_info()
    assert len(scripted.requests) == 1 + 4


async def test_with_options_changes_the_mode_of_the_copy_only(scripted: ScriptedServer) -> None:
    scripted.script(then=always(503))
    async with client_of(scripted) as client:
        forceful = client.with_options(retry_mode="forceful")
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await forceful.tokens.create("ci")
        assert len(scripted.requests) == 11
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await client.tokens.create("ci")
        assert len(scripted.requests) == 12
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await client.with_options(retry_mode="disabled").server_info()
    assert len(scripted.requests) == 13


async def test_a_retry_policy_sets_the_backoff(scripted: ScriptedServer) -> None:
    scripted.script(then=fail(503))  # no Retry-After: the policy's own backoff applies
    quick = aiosdk.RetryPolicy(aiosdk.RetryMode.FORCEFUL, backoff_initial=0.001, backoff_max=0.01)
    async with client_of(scripted) as client:
        started = anyio.current_time()
        with pytest.raises(aiosdk.ServiceUnavailableError):
            await client.with_options(retry=quick).server_info()
        assert anyio.current_time() - started < 3  # the default backoff would take ~10 s
    assert len(scripted.requests) == ATTEMPTS_WHEN_ALWAYS_FAILING["forceful"]


def in_progress() -> Respond:
    """The reference server's answer while an earlier attempt with the same key still runs."""
    body = b'{"error": {"type": "idempotency_in_progress", "message": "busy", "request_id": "r"}}'
    return Respond(409, {"Retry-After": "0", "Content-Type": "application/json"}, body=body)


@pytest.mark.parametrize("mode", MODES)
async def test_a_key_still_in_progress_is_retried_when_the_call_is(
    scripted: ScriptedServer, mode: str
) -> None:
    scripted.script(in_progress())
    async with client_of(scripted, mode) as client:
        if mode == "forceful":
            assert (await client.tokens.create("ci")).label == "ci"
        else:  # a POST is not retried in these modes: the conflict is the caller's to handle
            with pytest.raises(aiosdk.IdempotencyInProgressError) as caught:
                await client.tokens.create("ci")
            assert caught.value.retry_after == 0
    posts = scripted.seen("POST")
    assert len(posts) == (2 if mode == "forceful" else 1)
    assert len({p.headers["idempotency-key"] for p in posts}) == 1
