"""Field types shared by the request models of the routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

__all__ = ["Text"]


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON can escape one)
        raise ValueError("must be Unicode text (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_storable)]
"""A string a client sends that the server stores: Unicode text without NUL characters.

PostgreSQL's text types cannot hold NUL, and no database driver can encode a lone surrogate
(``"\ud800"`` is valid JSON), so either would fail in the database: rejected up front, they are
a 422 like any other invalid field, on every backend.
"""
