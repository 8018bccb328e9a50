"""The public surface is deliberate: this pins it."""

from __future__ import annotations

import aiosdk

EXPECTED = [
    "NOT_GIVEN", "AiosdkError", "AsyncClient", "AsyncPager", "AsyncTokens", "AuthenticationError",
    "BadRequestError", "Client", "ConfigurationError", "ConflictError", "ConnectError",
    "DeadlineExceededError", "IdempotencyInProgressError", "InternalServerError",
    "InvalidTokenError", "NewToken", "NotFoundError", "NotGiven", "Page", "Pager",
    "PermissionDeniedError", "ProtocolError",
    "RateLimitError", "RequestOptions", "RetryMode", "RetryPolicy", "Secret", "ServerError",
    "ServerInfo", "ServerStatus", "ServiceUnavailableError", "StatusError", "TimeoutError",
    "TokenInfo", "Tokens", "TransportError", "UnprocessableEntityError",
    "UnsupportedBackendError", "__version__", "embedded",
]  # fmt: skip


def test_exported_names_are_pinned_and_sorted() -> None:
    assert aiosdk.__all__ == EXPECTED
    assert aiosdk.__all__ == sorted(aiosdk.__all__, key=lambda n: (not n.isupper(), n))
    for name in aiosdk.__all__:
        assert getattr(aiosdk, name) is not None


def test_errors_form_one_hierarchy() -> None:
    for name in aiosdk.__all__:
        obj = getattr(aiosdk, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, aiosdk.AiosdkError), name
    assert issubclass(aiosdk.DeadlineExceededError, aiosdk.TimeoutError)
    assert issubclass(aiosdk.ServiceUnavailableError, aiosdk.ServerError)
    assert not issubclass(aiosdk.TimeoutError, TimeoutError)  # ours, not the builtin
