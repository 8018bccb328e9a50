"""The retry decisions as pure logic: modes, what is retryable, Retry-After, backoff, budget.

No server and no network: errors are built directly, and the retry loop runs over a plain
coroutine that fails as told.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate

import pytest
from grpclib.const import Status

from aiosdk._core.errors import (
    AiosdkError,
    ConnectError,
    IdempotencyInProgressError,
    ProtocolError,
    ServiceUnavailableError,
    StatusError,
    TimeoutError,
    TransportError,
    error_for_grpc_status,
    error_for_http_status,
)
from aiosdk._core.retry import RetryBudget, RetryMode, RetryPolicy, parse_retry_after

MODES = list(RetryMode)
RETRYABLE_IN_DEFAULT = {408, 429, 502, 503, 504}
RETRYABLE_IN_FORCEFUL = RETRYABLE_IN_DEFAULT | {500}
NEVER_RETRIED = {400, 401, 403, 404, 409, 422}
STATUSES = sorted(RETRYABLE_IN_FORCEFUL | NEVER_RETRIED | {501, 505})


def policy(mode: RetryMode | str) -> RetryPolicy:
    return RetryPolicy(RetryMode.coerce(mode))


# -- RetryMode.coerce ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("default", RetryMode.DEFAULT),
        ("DEFAULT", RetryMode.DEFAULT),
        ("Forceful", RetryMode.FORCEFUL),
        ("forceFUL", RetryMode.FORCEFUL),
        ("disabled", RetryMode.DISABLED),
        (RetryMode.DISABLED, RetryMode.DISABLED),
    ],
)
def test_coerce_accepts_members_and_names_in_any_case(
    value: RetryMode | str, expected: RetryMode
) -> None:
    assert RetryMode.coerce(value) is expected


@pytest.mark.parametrize("value", ["", "none", "force", "retry", " default", 3, None])
def test_coerce_rejects_anything_else_and_lists_the_modes(value: object) -> None:
    with pytest.raises(ValueError, match="retry mode") as caught:
        RetryMode.coerce(value)  # type: ignore[arg-type]
    for mode in ("'default'", "'forceful'", "'disabled'"):
        assert mode in str(caught.value)


def test_max_retries_per_mode() -> None:
    assert {mode: policy(mode).max_retries for mode in MODES} == {
        RetryMode.DEFAULT: 3,
        RetryMode.FORCEFUL: 10,
        RetryMode.DISABLED: 0,
    }


# -- is_retryable ----------------------------------------------------------------------------


def expected_for_status(mode: RetryMode, status: int, idempotent: bool) -> bool:
    if mode is RetryMode.DEFAULT:
        return idempotent and status in RETRYABLE_IN_DEFAULT
    if mode is RetryMode.FORCEFUL:
        return status in RETRYABLE_IN_FORCEFUL
    return False


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("status", STATUSES)
def test_http_status_retryable_table(mode: RetryMode, status: int, idempotent: bool) -> None:
    error = error_for_http_status(status, "boom")
    assert policy(mode).is_retryable(error, idempotent=idempotent) is expected_for_status(
        mode, status, idempotent
    )


@pytest.mark.parametrize("status", sorted(NEVER_RETRIED))
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_client_errors_are_never_retried_even_with_retry_after(
    mode: RetryMode, status: int
) -> None:
    error = error_for_http_status(status, "no", retry_after=0)
    assert not policy(mode).is_retryable(error, idempotent=True)


@pytest.mark.parametrize(
    ("status", "retried_in"),
    [
        (Status.UNAVAILABLE, {"default", "forceful"}),
        (Status.RESOURCE_EXHAUSTED, {"default", "forceful"}),
        (Status.INTERNAL, {"forceful"}),
        (Status.UNKNOWN, {"forceful"}),
        (Status.INVALID_ARGUMENT, set()),
        (Status.NOT_FOUND, set()),
        (Status.ALREADY_EXISTS, set()),
        (Status.PERMISSION_DENIED, set()),
        (Status.UNAUTHENTICATED, set()),
        (Status.CANCELLED, set()),
        (Status.UNIMPLEMENTED, set()),
    ],
)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_grpc_status_retryable_table(mode: RetryMode, status: Status, retried_in: set[str]) -> None:
    error = error_for_grpc_status(status, "boom")
    assert policy(mode).is_retryable(error, idempotent=True) is (mode.value in retried_in)


def test_grpc_unavailable_of_a_non_idempotent_call_is_retried_only_when_forceful() -> None:
    error = error_for_grpc_status(Status.UNAVAILABLE, "down")
    assert not policy("default").is_retryable(error, idempotent=False)
    assert policy("forceful").is_retryable(error, idempotent=False)


TRANSPORT_ERRORS: list[Callable[[], TransportError]] = [
    lambda: ConnectError("refused", request_sent=False),
    lambda: TimeoutError("connect timeout", request_sent=False),
    lambda: TimeoutError("read timeout"),
    lambda: ProtocolError("reset"),
    lambda: TransportError("other"),
]


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("make", TRANSPORT_ERRORS, ids=lambda f: f().args[0].replace(" ", "-"))
def test_transport_error_retryable_table(
    make: Callable[[], TransportError], mode: RetryMode, idempotent: bool
) -> None:
    error = make()
    expected = {
        RetryMode.DEFAULT: idempotent or not error.request_sent,
        RetryMode.FORCEFUL: True,
        RetryMode.DISABLED: False,
    }[mode]
    assert policy(mode).is_retryable(error, idempotent=idempotent) is expected


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize(
    "error", [ValueError("bug"), KeyError("k"), OSError("raw"), AiosdkError("not a failure")]
)
def test_errors_outside_the_transport_and_status_families_are_never_retried(
    mode: RetryMode, error: BaseException
) -> None:
    assert not policy(mode).is_retryable(error, idempotent=True)


# -- parse_retry_after -----------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("1", 1.0), (" 120 ", 120.0)])
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date_is_the_time_until_it() -> None:
    assert parse_retry_after(formatdate(NOW + 30, usegmt=True), now=NOW) == 30.0


def test_retry_after_http_date_defaults_to_the_current_time() -> None:
    wait = parse_retry_after(formatdate(time.time() + 100, usegmt=True))
    assert wait is not None
    assert 98 <= wait <= 101


def test_retry_after_date_in_the_past_means_no_wait() -> None:
    assert parse_retry_after(formatdate(NOW - 3600, usegmt=True), now=NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "1e3", "Someday, 99 Foo 2024"])
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


# -- backoff and delay -----------------------------------------------------------------------


@pytest.mark.parametrize("retry_number", range(1, 16))
def test_backoff_stays_within_its_exponential_ceiling_and_the_cap(retry_number: int) -> None:
    settings = RetryPolicy(backoff_initial=0.2, backoff_max=8.0)
    ceiling = min(8.0, 0.2 * 2 ** (retry_number - 1))
    samples = [settings.backoff(retry_number) for _ in range(200)]
    assert all(0 <= sample <= ceiling for sample in samples)


def test_backoff_is_fully_jittered() -> None:
    samples = [RetryPolicy().backoff(5) for _ in range(500)]  # ceiling 3.2 s
    assert len(set(samples)) > 450
    assert min(samples) < 0.5
    assert max(samples) > 2.7


def test_delay_is_the_servers_retry_after_when_it_sent_one() -> None:
    settings = RetryPolicy()
    asked = error_for_http_status(503, "busy", retry_after=42.0)
    assert settings.delay(asked, 1) == 42.0  # honoured even beyond the backoff cap
    assert settings.delay(error_for_http_status(503, "busy", retry_after=0.0), 3) == 0.0
    assert 0 <= settings.delay(error_for_http_status(503, "busy"), 1) <= 0.2
    assert 0 <= settings.delay(ConnectError("refused", request_sent=False), 2) <= 0.4


# -- RetryBudget -----------------------------------------------------------------------------


def test_budget_starts_full_and_retries_spend_it() -> None:
    budget = RetryBudget()
    assert budget.tokens == budget.capacity == 500
    assert budget.spend(error_for_http_status(503, "busy")) == 5
    assert budget.spend(TimeoutError("slow")) == 10
    assert budget.tokens == 485


def test_empty_budget_refuses_and_keeps_what_is_left() -> None:
    budget = RetryBudget(capacity=12)
    error = ProtocolError("reset")
    assert [budget.spend(error) for _ in range(3)] == [5, 5, 0]
    assert budget.tokens == 2
    assert budget.spend(TimeoutError("slow")) == 0


def test_success_refunds_what_its_retries_spent_or_one_token() -> None:
    budget = RetryBudget(capacity=20)
    error = ServiceUnavailableError("down")
    spent = budget.spend(error) + budget.spend(error)
    assert budget.tokens == 10
    budget.refund(spent)
    assert budget.tokens == 20
    budget.refund(spent)  # never above capacity
    assert budget.tokens == 20
    budget.spend(error)
    budget.refund(0)  # a success without retries
    assert budget.tokens == 16


# -- the retry loop (tenacity, built per call), over a coroutine that fails as told ----------


class Flaky:
    """An attempt that raises ``errors`` in turn, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException, forever: BaseException | None = None) -> None:
        self.errors = list(errors)
        self.forever = forever
        self.attempts = 0

    async def __call__(self) -> str:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        if self.forever is not None:
            raise self.forever
        return "ok"


def unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("down", retry_after=0.0)  # retry at once: no test sleeps


async def run(
    flaky: Flaky,
    mode: RetryMode | str = "forceful",
    *,
    idempotent: bool = True,
    budget: RetryBudget | None = None,
    deadline: float | None = None,
    allow: Callable[[], bool] | None = None,
    spent: list[int] | None = None,
    settings: RetryPolicy | None = None,
) -> str:
    retrying = (settings or policy(mode)).retrying(
        idempotent=idempotent,
        budget=budget or RetryBudget(),
        deadline=deadline,
        spent=spent if spent is not None else [],
        allow=allow,
    )
    return await retrying(flaky)


@pytest.mark.anyio
@pytest.mark.parametrize(("mode", "attempts"), [("default", 4), ("forceful", 11), ("disabled", 1)])
async def test_loop_makes_one_attempt_plus_the_modes_retries(mode: str, attempts: int) -> None:
    flaky = Flaky(forever=unavailable())
    with pytest.raises(ServiceUnavailableError):
        await run(flaky, mode)
    assert flaky.attempts == attempts


@pytest.mark.anyio
async def test_loop_returns_once_an_attempt_succeeds_and_records_the_spend() -> None:
    flaky = Flaky(unavailable(), unavailable())
    spent: list[int] = []
    assert await run(flaky, spent=spent) == "ok"
    assert flaky.attempts == 3
    assert spent == [5, 5]


@pytest.mark.anyio
async def test_loop_does_not_retry_what_is_not_retryable() -> None:
    flaky = Flaky(forever=error_for_http_status(404, "gone"))
    with pytest.raises(StatusError):
        await run(flaky)
    assert flaky.attempts == 1


@pytest.mark.anyio
async def test_loop_gives_up_at_once_when_the_budget_is_drained() -> None:
    budget = RetryBudget()
    for _ in range(10):  # 10 calls x 10 retries x 5 tokens = the whole 500
        with pytest.raises(ServiceUnavailableError):
            await run(Flaky(forever=unavailable()), budget=budget)
    assert budget.tokens == 0
    flaky = Flaky(forever=unavailable())
    with pytest.raises(ServiceUnavailableError):
        await run(flaky, budget=budget)
    assert flaky.attempts == 1


@pytest.mark.anyio
async def test_loop_fails_fast_when_retry_after_exceeds_the_cap() -> None:
    flaky = Flaky(forever=error_for_http_status(429, "slow down", retry_after=61.0))
    started = time.monotonic()
    with pytest.raises(StatusError) as caught:
        await run(flaky, settings=RetryPolicy(RetryMode.FORCEFUL, max_retry_after=60.0))
    assert time.monotonic() - started < 1.0
    assert caught.value.retry_after == 61.0
    assert flaky.attempts == 1


@pytest.mark.anyio
async def test_loop_does_not_start_a_wait_that_would_end_past_the_deadline() -> None:
    flaky = Flaky(forever=ServiceUnavailableError("down", retry_after=5.0))
    with pytest.raises(ServiceUnavailableError):
        await run(flaky, deadline=time.monotonic() + 1.0)
    assert flaky.attempts == 1


@pytest.mark.anyio
async def test_loop_retry_can_be_vetoed() -> None:
    flaky = Flaky(forever=unavailable())
    with pytest.raises(ServiceUnavailableError):
        await run(flaky, allow=lambda: False)
    assert flaky.attempts == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("idempotent", [True, False])
def test_a_key_in_progress_is_retried_wherever_the_call_is(
    mode: RetryMode, idempotent: bool
) -> None:
    busy = error_for_http_status(409, "busy", error_type="idempotency_in_progress")
    assert isinstance(busy, IdempotencyInProgressError)
    expected = mode is RetryMode.FORCEFUL or (idempotent and mode is RetryMode.DEFAULT)
    assert policy(mode).is_retryable(busy, idempotent=idempotent) is expected
    plain = error_for_http_status(409, "conflict", error_type="conflict")
    assert not policy(mode).is_retryable(plain, idempotent=idempotent)
