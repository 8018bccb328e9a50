"""The server's logger: every record escaped against log forging, and warnings at a bounded rate.

Paths, methods, ids and messages that clients control end up in log lines. A CR or LF in one
would start a forged line, and an ANSI escape could rewrite the terminal showing the log, so
:class:`EscapingFilter`, installed on the ``aiosdk.server`` logger, escapes every formatted
message that goes through it: a single place, so that no call site can forget it.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
import uuid

__all__ = [
    "EscapingFilter",
    "RateLimitedWarning",
    "escape_control_characters",
    "logger",
    "choose_request_id",
]

logger = logging.getLogger("aiosdk.server")
"""The logger of every server module."""

# C0 and C1 controls (CR, LF, ESC and its ANSI sequences...), DEL, the Unicode line and
# paragraph separators and the bidirectional overrides that reorder what a reader sees; and the
# backslash, so that an escaped sequence cannot be told from one a client typed.
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control_characters(text: str) -> str:
    """``text`` on one line and inert: control characters and backslashes escaped, as ``\\n``,
    ``\\x1b``, ``\\u2028``, ``\\\\``; printable text, non-ASCII letters included, unchanged."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)


_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def choose_request_id(given: object) -> str:
    """The id to log a request under: the client's own (an ``X-Request-ID`` header, an
    ``x-request-id`` gRPC metadata entry) when it is 1 to 128 URL-safe characters, else a new
    one; either way it is echoed back to the client."""
    if isinstance(given, str) and _SANE_REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


class EscapingFilter(logging.Filter):
    """Escapes each record's formatted message with :func:`escape_control_characters`.

    The message is formatted here, once, and stored with no arguments left. A traceback keeps
    its lines (it is multi-line by nature), each of them escaped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape_control_characters(message)
        if escaped is not message or record.args:
            record.msg, record.args = escaped, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = _escaped_traceback(record.exc_info[1])
        return True


def _escaped_traceback(error: BaseException) -> str:
    """The traceback of ``error`` as logging prints it, with the exceptions' own messages (a
    database error quoting a parameter may carry what a client sent) escaped; the frames,
    the server's own code, keep their lines."""
    formatted = traceback.TracebackException.from_exception(error)
    messages: set[str] = set()
    seen: set[int] = set()
    pending: list[traceback.TracebackException | None] = [formatted]
    while pending:  # the exception and its chain of causes and contexts
        current = pending.pop()
        if current is not None and id(current) not in seen:
            seen.add(id(current))
            messages.update(current.format_exception_only())
            pending += [current.__cause__, current.__context__]
    chunks = formatted.format()
    text = "".join(
        escape_control_characters(chunk[:-1]) + "\n" if chunk in messages else chunk
        for chunk in chunks
    )
    return text.removesuffix("\n")


class RateLimitedWarning:
    """A warning logged at most once per ``interval`` seconds, with how often it was held back.

    For conditions that can repeat thousands of times a second (a full descriptor table makes
    every ``accept()`` fail): the first occurrence is logged at once, the next ones are counted
    and reported with the first occurrence after the interval.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._next_log_at = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        """Log ``message % args`` as a warning, unless one was logged less than ``interval`` ago."""
        now = time.monotonic()
        if now < self._next_log_at:
            self._suppressed += 1
            return
        self._next_log_at = now + self.interval
        suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            message += " (and %d more times since the last report)"
            args = (*args, suppressed)
        logger.warning(message, *args)


logger.addFilter(EscapingFilter())
