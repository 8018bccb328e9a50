"""The suite's own guards are on: blocking calls in an event loop and ResourceWarnings fail."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

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


def test_a_token_in_a_log_line_is_caught(pytester: pytest.Pytester) -> None:
    # The session-wide recorder lives in tests/conftest.py; run it on a suite that leaks one.
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(
        test_leak="import logging\n\n"
        "def test_logs_a_token():\n"
        "    logging.getLogger('aiosdk.transport').debug('sent %s', 'aio_' + 'x' * 43)\n"
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:aiosdk")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*log lines showed a token*"])
