"""Log forging: client-controlled text in the server's log lines is escaped, on one line."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from aiosdk.server import Server
from aiosdk.server.logs import escape_control_characters

from .wire import serving

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain /api/v1/tokens?x=1", "plain /api/v1/tokens?x=1"),
        ("non-ASCII letters stay: é, ß, 東京", "non-ASCII letters stay: é, ß, 東京"),
        ("a\nforged line", "a\\nforged line"),
        ("a\r\nforged line", "a\\r\\nforged line"),
        ("tab\there", "tab\\there"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("nul\x00 bell\x07 del\x7f", "nul\\x00 bell\\x07 del\\x7f"),
        ("C1: next line\x85 csi\x9b", "C1: next line\\x85 csi\\x9b"),
        ("separators\u2028\u2029", "separators\\u2028\\u2029"),
        ("bidi \u202eevil\u202c", "bidi \\u202eevil\\u202c"),
        ("a typed \\n stays apart", "a typed \\\\n stays apart"),
    ],
)
def test_escape_control_characters(text: str, escaped: str) -> None:
    assert escape_control_characters(text) == escaped


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the server's logger writes, through a real handler."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("aiosdk.server")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield output
    finally:
        logger.setLevel(previous)
        logger.removeHandler(handler)


def test_a_logged_exception_cannot_forge_a_line(log_lines: io.StringIO) -> None:
    """An exception's message may quote what a client sent (a database error shows the
    parameters): each line of the traceback is escaped, the traceback keeps its lines."""
    error = ValueError("bad value 'x\nERROR forged line'")
    logging.getLogger("aiosdk.server").error("Unhandled error", exc_info=error)
    lines = log_lines.getvalue().splitlines()
    assert lines[0] == "ERROR aiosdk.server: Unhandled error"
    assert lines[-1] == "ValueError: bad value 'x\\nERROR forged line'"
    assert not any(line.startswith("ERROR forged") for line in lines)


def test_every_record_of_the_server_logger_is_escaped(log_lines: io.StringIO) -> None:
    """The escaping sits on the logger, not at each call site: a module that just asks for the
    logger by name, as some server modules do, is covered too."""
    logging.getLogger("aiosdk.server").warning("token %s of %s", "x\nERROR forged", "y\r\n")
    assert log_lines.getvalue() == "WARNING aiosdk.server: token x\\nERROR forged of y\\r\\n\n"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with serving(tmp_path_factory.mktemp("data")) as running:
        yield running


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/x%0aINFO%20aiosdk.server:%20GET%20/api/v1/%20-%3E%20200",
        "/api/v1/x%0d%0aforged",
        "/api/v1/%1b%5b2J%1b%5bHcleared",
        "/api/v1/x%e2%80%a8separated",
    ],
)
async def test_a_request_path_cannot_forge_a_log_line(
    server: Server, log_lines: io.StringIO, target: str
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get(target)  # unauthenticated: 401, logged all the same
    assert response.status_code == 401
    lines = log_lines.getvalue().splitlines()
    assert len(lines) == 1  # str.splitlines also splits on \r, \x1c-\x1e, \x85, \u2028...
    assert lines[0].startswith("INFO aiosdk.server: GET /api/v1/")
    assert "-> 401" in lines[0]
    assert all(char.isprintable() for char in lines[0])
