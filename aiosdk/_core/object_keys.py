"""The rules of an object key and a bucket name, shared by the client (checked before anything is
sent) and the server (which enforces them). Pure: no import of the client's or the server's code.

A bucket is named ``"<namespace>/<bucket>"``, each part a catalog key (see :mod:`.keys`).
An object key is 1 to :data:`MAX_OBJECT_KEY_BYTES` bytes of UTF-8, made of segments separated
by ``/``: no leading ``/``, no empty segment (so no ``//`` and no trailing ``/``), no ``.`` or
``..`` segment, and no control character (``Cc``: NUL, newlines, DEL...), nor line or paragraph
separators, nor lone surrogates.
"""

from __future__ import annotations

import unicodedata

from .keys import key_problem

__all__ = ["MAX_OBJECT_KEY_BYTES", "bucket_problem", "object_key_problem", "split_bucket"]

MAX_OBJECT_KEY_BYTES = 1024

_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def object_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid object key (``None``: it is)."""
    if not key:
        return "an object key is not empty"
    for character in key:
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            return (
                f"an object key holds no control characters, separators or lone surrogates"
                f" (found U+{ord(character):04X})"
            )
    if len(key.encode()) > MAX_OBJECT_KEY_BYTES:
        return f"an object key is at most {MAX_OBJECT_KEY_BYTES} bytes of UTF-8"
    if key.startswith("/"):
        return "an object key does not start with '/'"
    for segment in key.split("/"):
        if not segment:
            return "an object key has no empty segment ('//' or a trailing '/')"
        if segment in (".", ".."):
            return "an object key has no '.' or '..' segment"
    return None


def bucket_problem(namespace: str, bucket: str) -> str | None:
    """Why ``namespace``/``bucket`` does not name a bucket (``None``: it does)."""
    for part, what in ((namespace, "namespace"), (bucket, "bucket name")):
        problem = key_problem(part)
        if problem is not None:
            return f"the {what} {part[:80]!r} is invalid: {problem}"
    return None


def split_bucket(name: str) -> tuple[str, str] | None:
    """``"alice/uploads"`` as ``("alice", "uploads")``; ``None`` if it is not two parts."""
    namespace, slash, bucket = name.partition("/")
    if not slash or not namespace or not bucket or "/" in bucket:
        return None
    return namespace, bucket
