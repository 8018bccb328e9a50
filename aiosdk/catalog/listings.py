"""Listings across namespaces, as TileDB names them: the caller's arrays and groups, the public
ones, and those shared with the caller, filtered and paged (:class:`~aiosdk.AsyncPager`).

"Arrays" are every node that is not a container; "groups" are the containers below the
namespaces' root nodes. Listings are ordered by path and page by keyset cursor; ``page``
starts the pager at that page (``await pager`` is that page), and iterating goes on from there.
Only what the caller may read is ever listed or counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .._core.context import ClientContext
from .._core.errors import ConfigurationError
from .._core.paging import AsyncPager, Page
from .containers import node_from_item
from .nodes import AsyncNode

__all__ = ["Permission", "Scope", "Strings", "listing"]

Scope = Literal["owned", "public", "shared"]
Permission = Literal["read", "write", "admin"]
Strings = str | Sequence[str] | None


def _strings(value: Strings, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    out = list(value)
    if not all(isinstance(v, str) for v in out):
        raise ConfigurationError(f"{what} must be a string or a list of strings, not {value!r}")
    return out


def _positive(value: int | None, what: str, most: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{what} must be a positive integer, not {value!r}")
    if most is not None and value > most:
        raise ConfigurationError(f"{what} is at most {most}, not {value!r}")
    return value


_STRINGS = ("tag", "exclude_tag", "file_type", "exclude_file_type")
_ARRAY_FILTERS = frozenset(
    {"namespace", "permissions", "search", "page", "per_page", "with_metadata", *_STRINGS}
)
_FILTERS = {
    "arrays": _ARRAY_FILTERS | {"structure_family"},
    "groups": _ARRAY_FILTERS | {"group_type", "flat", "parent"},
}


def _params(scope: Scope, filters: Mapping[str, Any]) -> dict[str, Any]:
    """The query parameters of a listing of ``scope`` with ``filters`` (the client method's
    arguments, by name: what is ``None`` or ``False`` is left out)."""
    permissions = filters.get("permissions")
    if permissions is not None and permissions not in ("read", "write", "admin"):
        raise ConfigurationError(
            f"permissions must be 'read', 'write' or 'admin', not {permissions!r}"
        )
    _positive(filters.get("page"), "page")
    _positive(filters.get("per_page"), "per_page", 1000)
    params: dict[str, Any] = {"scope": scope}
    for name, value in filters.items():
        if name in _STRINGS:
            value = _strings(value, name) or None
        if value is not None and value is not False:
            params[name] = value
    return params


def _pager(ctx: ClientContext, path: str, params: dict[str, Any]) -> AsyncPager[AsyncNode]:
    def decode(data: Any) -> Page[AsyncNode]:
        items = [node_from_item(ctx, item) for item in data["items"]]
        return Page(items=items, next_page_token=data.get("next_page_token"))

    async def fetch(cursor: str | None) -> Page[AsyncNode]:
        sent = dict(params)
        if cursor is not None:
            sent.pop("page", None)  # the cursor says where the next page is
            sent["page_token"] = cursor
        return await ctx.fetch("GET", path, decode, params=sent)

    return AsyncPager(fetch)


def listing(
    ctx: ClientContext, kind: Literal["arrays", "groups"], scope: Scope, filters: Mapping[str, Any]
) -> AsyncPager[AsyncNode]:
    """The ``kind`` ("arrays": every node that is not a container; "groups": containers below
    the namespaces' root nodes) in ``scope``, with ``filters`` (see the client's methods)."""
    unknown = set(filters) - _FILTERS[kind]
    if unknown:
        raise TypeError(f"unknown filters of a listing of {kind}: {', '.join(sorted(unknown))}")
    return _pager(ctx, f"/catalog/listings/{kind}", _params(scope, filters))
