"""Password hashing with Argon2id (memory-hard), off the event loop.

Hashing takes tens of milliseconds and 64 MiB by design, so it runs in a worker thread, a few at a
time: a burst of logins queues up rather than exhausting the server's memory.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["MAX_PASSWORD_LENGTH", "MIN_PASSWORD_LENGTH", "hash_password", "verify_password"]

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHasher()  # argon2-cffi's defaults: RFC 9106's low-memory profile, Argon2id
_limiter = anyio.CapacityLimiter(4)

_DUMMY_HASH = _hasher.hash("not a password of anyone")
"""Verified against when there is no user, so that an unknown name costs as long as a known one."""


async def hash_password(password: str) -> str:
    """The Argon2id hash (PHC string, salt included) to store for ``password``."""
    return await anyio.to_thread.run_sync(_hasher.hash, password, limiter=_limiter)


async def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches the ``stored`` hash; ``None`` (no user, or no password set)
    never matches but takes the same time as a real check."""
    return await anyio.to_thread.run_sync(_verify, stored, password, limiter=_limiter)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False
