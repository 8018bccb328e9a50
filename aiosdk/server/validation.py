"""Field types shared by the request models of the routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

__all__ = ["Text"]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string a client sends that the server stores: it may not hold NUL characters.

PostgreSQL's text types cannot hold NUL, so one would fail in the database (SQLite would
store it): rejected up front, it is a 422 like any other invalid field, on every backend.
"""
