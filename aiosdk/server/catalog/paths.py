"""Catalog paths: keys joined by ``/``, the first one a namespace's name.

A key follows the rules of :mod:`aiosdk._core.keys` (shared with the client): 1 to 255
characters, neither ``.`` nor ``..``, without ``/`` or leading and trailing whitespace, in
Unicode NFC, without control, format (zero-width, bidirectional) or unassigned characters; a
path is at most :data:`MAX_PATH_LENGTH` characters and :data:`MAX_DEPTH` keys. The empty path
is the catalog's root, which holds the namespaces' root nodes and is not stored.
"""

from __future__ import annotations

from ..._core.keys import MAX_KEY_LENGTH, key_problem
from ..errors import InvalidRequestError

__all__ = [
    "MAX_DEPTH",
    "MAX_KEY_LENGTH",
    "MAX_PATH_LENGTH",
    "ancestors",
    "check_key",
    "key_problem",
    "join",
    "parent_of",
    "parse_path",
]

MAX_PATH_LENGTH = 1024
MAX_DEPTH = 32


def check_key(key: str) -> str:
    """``key``, if it is a valid key; :class:`InvalidRequestError` naming the problem if not."""
    problem = key_problem(key)
    if problem is not None:
        raise InvalidRequestError(f"Invalid key {key[:80]!r}: {problem}")
    return key


def parse_path(path: str) -> list[str]:
    """The keys of ``path`` (``[]`` for the root, ``""``); :class:`InvalidRequestError` for a
    path that is not valid. One trailing ``/`` is allowed (``alice/x/`` is ``alice/x``)."""
    if path.endswith("/") and not path.endswith("//"):
        path = path[:-1]
    if not path:
        return []
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidRequestError(f"Invalid path: a path is at most {MAX_PATH_LENGTH} characters")
    keys = path.split("/")
    if len(keys) > MAX_DEPTH:
        raise InvalidRequestError(f"Invalid path: a path has at most {MAX_DEPTH} keys")
    for key in keys:
        problem = key_problem(key)
        if problem is not None:
            raise InvalidRequestError(f"Invalid path {path[:200]!r}: {problem}")
    return keys


def join(*keys: str) -> str:
    """The path of ``keys``."""
    return "/".join(keys)


def parent_of(path: str) -> str:
    """The path of the container holding ``path`` (``""``, the root, for a namespace's)."""
    return path.rpartition("/")[0]


def ancestors(path: str) -> list[str]:
    """``path`` and the path of every container above it, shortest first (not the root)."""
    keys = path.split("/")
    return ["/".join(keys[: i + 1]) for i in range(len(keys))]
