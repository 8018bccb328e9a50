"""The suite's own guards are on: blocking calls in an event loop and ResourceWarnings fail."""

from __future__ import annotations

import time
import warnings

import pytest
from blockbuster import BlockingError

pytestmark = pytest.mark.anyio


# blockbuster watches asyncio loops only; the code the trio runs exercise is the same HTTP path
# the asyncio runs check.
async def test_a_blocking_call_inside_the_event_loop_fails() -> None:
    with pytest.raises(BlockingError):
        time.sleep(0.001)  # noqa: ASYNC251 - the blocking call this test is about


def test_resource_warnings_are_errors() -> None:
    with pytest.raises(ResourceWarning):
        warnings.warn("unclosed thing", ResourceWarning, stacklevel=1)
