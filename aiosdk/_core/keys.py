"""The rules of a catalog key, shared by the client (checked before anything is sent) and the
server (which enforces them). Pure: no import of the client's or the server's code.

A key is 1 to :data:`MAX_KEY_LENGTH` characters, neither ``.`` nor ``..``, without ``/``, and
without leading or trailing whitespace. It is in Unicode normalization form NFC, so that two
keys that look the same are the same string (``"café"`` typed with a combining accent is
refused: normalize it with ``unicodedata.normalize("NFC", key)``). It holds none of these
characters, which are invisible, reorder the text around them, or mean nothing yet:

- control characters (``Cc``, NUL included) and line or paragraph separators (``Zl``, ``Zp``);
- format characters (``Cf``): zero-width spaces and joiners, bidirectional overrides and
  isolates, the byte order mark, the soft hyphen...;
- lone surrogates (``Cs``);
- unassigned code points (``Cn``, the noncharacters included), as known to this Python's
  :mod:`unicodedata`. Refusing them is what makes the NFC rule stable: normalization of an
  assigned character never changes between Unicode versions.

Private-use characters (``Co``) are allowed: they are visible, and some fonts give them meaning.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_KEY_LENGTH", "key_problem"]

MAX_KEY_LENGTH = 255

_REFUSED = {
    "Cc": "control characters",
    "Zl": "line separators",
    "Zp": "paragraph separators",
    "Cf": "invisible format characters (such as zero-width spaces or bidirectional controls)",
    "Cn": "unassigned code points",
}


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid catalog key (``None``: it is)."""
    if not key:
        return "a key must not be empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"a key is at most {MAX_KEY_LENGTH} characters"
    if key in (".", ".."):
        return f"{key!r} is not a key"
    if "/" in key:
        return "a key must not contain '/'"
    if key != key.strip():
        return "a key must not begin or end with whitespace"
    for character in key:
        category = unicodedata.category(character)
        if category == "Cs":
            return "a key must be Unicode text (no lone surrogates)"
        refused = _REFUSED.get(category)
        if refused is not None:
            return f"a key must not contain {refused} (U+{ord(character):04X})"
    # After the surrogate check: normalizing a lone surrogate would raise.
    if not unicodedata.is_normalized("NFC", key):
        return (
            "a key must be in Unicode normalization form NFC "
            "(unicodedata.normalize('NFC', key) gives the same key, written the canonical way)"
        )
    return None
