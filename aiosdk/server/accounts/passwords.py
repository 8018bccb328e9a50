"""Password hashing with Argon2id (memory-hard), off the event loop.

Hashing takes tens of milliseconds and 64 MiB by design, so it runs in a worker thread, a few at a
time in the whole process: a burst of logins queues up rather than exhausting the server's memory.
The bound is a :class:`threading.BoundedSemaphore` taken inside the worker thread, so it holds
across every event loop of the process (several embedded servers, each on a loop of its own); each
loop also lends at most as many of its worker threads to hashing, so that the others queue in the
loop rather than in blocked threads.
"""

from __future__ import annotations

import threading

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "MAX_CONCURRENT_HASHES",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "hash_password",
    "verify_password",
]

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_CONCURRENT_HASHES = 4
"""Argon2 runs at most this many at once in the process, whichever event loop asks."""

_hasher = PasswordHasher()  # argon2-cffi's defaults: RFC 9106's low-memory profile, Argon2id
_running = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)
_threads: RunVar[CapacityLimiter] = RunVar("aiosdk_password_threads")

_DUMMY_HASH = _hasher.hash("not a password of anyone")
"""Verified against when there is no user, so that an unknown name costs as long as a known one."""


async def hash_password(password: str) -> str:
    """The Argon2id hash (PHC string, salt included) to store for ``password``."""
    return await anyio.to_thread.run_sync(_hash, password, limiter=_loop_threads())


async def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches the ``stored`` hash; ``None`` (no user, or no password set)
    never matches but takes the same time as a real check. Text no password can hold (lone
    surrogates) never matches either, and costs the same."""
    return await anyio.to_thread.run_sync(_verify, stored, password, limiter=_loop_threads())


def _loop_threads() -> CapacityLimiter:
    """The worker threads this event loop lends to hashing (one limiter per loop: anyio's
    primitives belong to the loop that made them)."""
    try:
        return _threads.get()
    except LookupError:
        limiter = CapacityLimiter(MAX_CONCURRENT_HASHES)
        _threads.set(limiter)
        return limiter


def _hash(password: str) -> str:
    with _running:
        return _hasher.hash(password)


def _verify(stored: str | None, password: str) -> bool:
    # Encoded so that any text can be checked: stored hashes are of valid UTF-8 only.
    secret = password.encode("utf-8", "surrogatepass")
    with _running:
        try:
            return _hasher.verify(stored or _DUMMY_HASH, secret) and stored is not None
        except (VerificationError, InvalidHashError):
            return False
