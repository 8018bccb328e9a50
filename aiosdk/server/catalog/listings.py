"""Catalog nodes many at a time: a container's children (filtered, sorted, paged by keyset
cursor), their count and distinct values, and the listings of assets and groups across
namespaces.

Everything is decided in the database, visibility included: what a caller may not read is never
counted, listed or summarized. A container's children need no visibility condition of their own
(they belong to the container's namespace and are under every share that covers it: whoever
reads a container reads its children); the catalog's root and the listings do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    bindparam,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from ..authorization import READ
from ..errors import InvalidRequestError
from . import filters as query_filters
from . import ordering
from .access import ShareRow, parse_actions, permitted, share_covers, shares_covering, visible
from .models import PUBLIC, Node, NodeShare
from .nodes import CONTAINER, NODE_COLUMNS, NodeRead, NodeView, Viewer, read_node
from .paths import join, parse_path
from .state import NodeReads

__all__ = [
    "MAX_OFFSET",
    "ChildrenQuery",
    "Fields",
    "DistinctQuery",
    "ListingPage",
    "ListingQuery",
    "Page",
    "children",
    "count",
    "distinct",
    "listing",
]

MAX_OFFSET = 1_000_000
"""The furthest a page may start by position (``offset``, or a listing's ``page``): skipping
rows costs the database reading them; beyond it, page tokens."""


Fields = Literal["keys", "full", "no_metadata"]
"""What of each child a listing answers: id, key, path and family only, all, all but metadata."""
_NODES = Node.__table__
_KEY_COLUMNS = (_NODES.c.id, _NODES.c.key, _NODES.c.path, _NODES.c.structure_family)


@dataclass(frozen=True)
class ChildrenQuery:
    """What a children listing asks for (see ``GET /catalog/children``)."""

    filters: str | None = None
    sort: Sequence[str] = ()
    reverse: bool = False
    offset: int | None = None
    page_size: int = 100
    page_token: str | None = None
    include_count: bool = False
    fields: Fields = "full"


@dataclass(frozen=True)
class Page:
    """A page of nodes; the token of the next (``None``: the last); the total, if asked."""

    views: Sequence[NodeView | NodeRead]
    next_page_token: str | None
    count: int | None = None


@dataclass(frozen=True)
class _Container:
    """Where children are listed: a condition on them, how they inherit access, a scope for
    page tokens."""

    condition: ColumnElement[bool]
    covering: list[ShareRow]
    """The shares covering the container (none at the root)."""
    scope: str


async def _container(
    session: AsyncSession, viewer: Viewer, path: str, reads: NodeReads | None
) -> _Container:
    keys = parse_path(path)
    if not keys:
        condition = and_(
            Node.parent_id.is_(None),
            visible(viewer.caller, allow_anonymous=viewer.allow_anonymous),
        )
        return _Container(condition, [], "")
    view = await read_node(session, viewer, join(*keys), reads)
    return _Container(Node.parent_id == view.node.id, view.covering, view.node.id)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def _views(
    session: AsyncSession, viewer: Viewer, found: Sequence[Any], covering: list[ShareRow] | None
) -> list[NodeRead]:
    """``found`` (nodes or rows of :data:`~.nodes.NODE_COLUMNS`) as ``viewer`` sees them: with
    the shares of the container they are all in (``covering``), or, for nodes from anywhere
    (``None``), those of all their ancestors."""
    if not found:
        return []
    if covering is None:
        shares = await shares_covering(session, [node.path for node in found])
    else:
        ids = [node.id for node in found]
        rows = await session.execute(
            select(NodeShare.node_id, NodeShare.path, NodeShare.grantee, NodeShare.actions).where(
                NodeShare.node_id.in_(ids)
            )
        )
        shares = covering + [ShareRow(n, p, g, parse_actions(a)) for n, p, g, a in rows]
    by_path: dict[str, list[ShareRow]] = {}
    for share in shares:
        by_path.setdefault(share.path, []).append(share)
    views = []
    for node in found:
        keys = node.path.split("/")
        relevant = [
            share
            for depth in range(1, len(keys) + 1)
            for share in by_path.get("/".join(keys[:depth]), ())
        ]
        own = sorted((s for s in relevant if s.node_id == node.id), key=lambda s: s.grantee)
        views.append(NodeRead(node, viewer.actions(node.namespace, relevant), own, relevant))
    return views


_NO_ACCESS: frozenset[str] = frozenset()


async def children(
    session: AsyncSession,
    viewer: Viewer,
    path: str,
    query: ChildrenQuery,
    reads: NodeReads | None = None,
) -> Page:
    """A page of the children of the container at ``path`` (``""``: the namespaces' root
    nodes) that match ``query``, in its order: one statement for the page (and one for the
    container, one for the children's own shares unless only keys are asked)."""
    if query.offset is not None and query.page_token is not None:
        raise InvalidRequestError("Give offset or page_token, not both")
    dialect = _dialect(session)
    parsed = query_filters.parse_filters(query.filters)
    await query_filters.bound_regex_time(session, parsed)
    order = ordering.order_columns(ordering.parse_sort(query.sort), dialect, query.reverse)
    container = await _container(session, viewer, path, reads)
    matching = and_(container.condition, query_filters.where(parsed, dialect))
    columns = _KEY_COLUMNS if query.fields == "keys" else NODE_COLUMNS
    values = ordering.select_values(order)
    select_query: Select[Any] = select(*columns, *values).where(matching)
    if query.page_token is not None:
        cursor = ordering.decode_cursor(
            query.page_token, order, filters=parsed, scope=container.scope
        )
        select_query = select_query.where(ordering.after_cursor(order, cursor))
    select_query = select_query.order_by(*ordering.order_by(order)).limit(query.page_size + 1)
    if query.offset:
        select_query = select_query.offset(query.offset)
    rows = (await session.execute(select_query)).all()
    token = None
    if len(rows) > query.page_size:
        rows = rows[: query.page_size]
        last = rows[-1]
        token = ordering.encode_cursor(
            order,
            ordering.cursor_of(order, list(last[len(columns) :])),
            filters=parsed,
            scope=container.scope,
        )
    total = None
    if query.include_count:
        total = await session.scalar(select(func.count()).select_from(Node).where(matching))
    views: Sequence[NodeRead]
    if query.fields == "keys":  # no access to answer: the listing's own is checked
        views = [NodeRead(row, _NO_ACCESS, [], []) for row in rows]
    else:
        views = await _views(session, viewer, rows, container.covering)
    return Page(views, token, total)


async def count(
    session: AsyncSession,
    viewer: Viewer,
    path: str,
    filters: str | None,
    reads: NodeReads | None = None,
) -> int:
    """How many children of the container at ``path`` match ``filters``."""
    parsed = query_filters.parse_filters(filters)
    await query_filters.bound_regex_time(session, parsed)
    container = await _container(session, viewer, path, reads)
    condition = and_(container.condition, query_filters.where(parsed, _dialect(session)))
    return int(await session.scalar(select(func.count()).select_from(Node).where(condition)) or 0)


@dataclass(frozen=True)
class DistinctQuery:
    """What ``GET /catalog/distinct`` asks for."""

    filters: str | None
    metadata_keys: Sequence[str]
    structure_families: bool = False
    specs: bool = False
    counts: bool = False


async def distinct(
    session: AsyncSession,
    viewer: Viewer,
    path: str,
    query: DistinctQuery,
    reads: NodeReads | None = None,
) -> dict[str, Any]:
    """The distinct values of metadata keys, structure families and specs among the children
    of the container at ``path`` that match ``query.filters`` (``GROUP BY`` in the database),
    in the API's shape (see :func:`.filters.distinct`)."""
    dialect = _dialect(session)
    parsed = query_filters.parse_filters(query.filters)
    await query_filters.bound_regex_time(session, parsed)
    container = await _container(session, viewer, path, reads)
    condition = and_(container.condition, query_filters.where(parsed, dialect))
    return await query_filters.distinct(
        session,
        condition,
        dialect,
        metadata_keys=query.metadata_keys,
        structure_families=query.structure_families,
        specs=query.specs,
        counts=query.counts,
    )


# --- listings across namespaces --------------------------------------------------------------


@dataclass(frozen=True)
class ListingQuery:
    """What ``GET /catalog/listings/arrays`` or ``.../groups`` asks for."""

    kind: Literal["arrays", "groups"]
    scope: Literal["owned", "public", "shared"] = "owned"
    namespace: str | None = None
    permissions: str | None = None
    tags: Sequence[str] = ()
    exclude_tags: Sequence[str] = ()
    search: str | None = None
    file_types: Sequence[str] = ()
    exclude_file_types: Sequence[str] = ()
    structure_family: str | None = None
    group_type: str | None = None
    flat: bool = False
    parent: str | None = None
    page: int = 1
    per_page: int = 100
    page_token: str | None = None
    with_metadata: bool = False

    def fingerprint(self) -> str:
        """What a page token of this listing is bound to (all but the page's position)."""
        described = {
            name: value
            for name, value in self.__dict__.items()
            if name not in ("page", "page_token", "with_metadata")
        }
        canonical = json.dumps(described, sort_keys=True, default=list)
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class ListingPage:
    """A page of a listing, the token of the next page, and how many match in all."""

    views: list[NodeRead]
    next_page_token: str | None
    total: int


def _contains(column: Any, value: str, dialect: str) -> ColumnElement[bool]:
    """The JSON array ``column`` holds the string ``value``."""
    if dialect == "postgresql":
        return type_coerce(column, JSONB).contains(bindparam(None, [value], type_=JSONB))
    each = func.json_each(column).table_valued("value").alias()
    return exists(select(1).select_from(each).where(each.c.value == bindparam(None, value, String)))


def _encode_listing_token(path: str, fingerprint: str) -> str:
    raw = json.dumps({"p": path, "q": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_listing_token(token: str, fingerprint: str) -> str:
    invalid = InvalidRequestError("Invalid page_token: it is malformed or from another listing")
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise invalid from None
    if not (
        isinstance(body, dict)
        and set(body) == {"p", "q"}
        and isinstance(body["p"], str)
        and body["q"] == fingerprint
        and ordering.text_problem(body["p"]) is None
    ):
        raise invalid
    return body["p"]


async def _listing_condition(
    session: AsyncSession, viewer: Viewer, query: ListingQuery
) -> ColumnElement[bool]:
    dialect = _dialect(session)
    caller = viewer.caller
    allow = viewer.allow_anonymous
    conditions: list[ColumnElement[bool]] = [visible(caller, allow_anonymous=allow)]
    own = sorted(
        ns
        for ns, actions in (caller.namespaces.items() if caller is not None else ())
        if READ in actions
    )
    if query.kind == "arrays":
        conditions.append(Node.structure_family != CONTAINER)
        if query.structure_family is not None:
            conditions.append(Node.structure_family == query.structure_family)
    else:
        conditions.append(Node.structure_family == CONTAINER)
        if query.parent is not None:
            parent = await read_node(session, viewer, query.parent)
            conditions.append(Node.parent_id == parent.node.id)
        elif query.flat:
            conditions.append(Node.depth >= 2)
        else:
            conditions.append(Node.depth == 2)
        if query.group_type is not None:
            conditions.append(_contains(Node.specs, query.group_type, dialect))
    if query.scope == "owned":
        if caller is None or not caller.is_admin:
            conditions.append(Node.namespace.in_(own))
    elif query.scope == "public":
        conditions.append(exists().where(NodeShare.grantee == PUBLIC, share_covers()))
    else:  # shared: readable through a share with one of the caller's namespaces
        grantees = own
        conditions.append(Node.namespace.not_in(own))
        conditions.append(
            exists().where(NodeShare.grantee.in_(grantees), share_covers()) if grantees else false()
        )
    if query.namespace is not None:
        conditions.append(Node.namespace == query.namespace)
    if query.permissions is not None and query.permissions != READ:
        conditions.append(permitted(caller, query.permissions, allow_anonymous=allow))
    for tag in query.tags:
        conditions.append(_contains(Node.tags, tag, dialect))
    for tag in query.exclude_tags:
        conditions.append(not_(_contains(Node.tags, tag, dialect)))
    if query.search:
        conditions.append(Node.key.icontains(query.search, autoescape=True))
    if query.file_types:
        conditions.append(Node.file_type.in_(list(query.file_types)))
    if query.exclude_file_types:
        conditions.append(
            or_(Node.file_type.is_(None), Node.file_type.not_in(list(query.exclude_file_types)))
        )
    return and_(*conditions)


async def listing(session: AsyncSession, viewer: Viewer, query: ListingQuery) -> ListingPage:
    """A page of assets or groups (``query.kind``) across namespaces, by path: the page
    ``query.page``, or the one after ``query.page_token``."""
    if query.page_token is not None and query.page != 1:
        raise InvalidRequestError("Give page or page_token, not both")
    for value in (query.search, *query.tags, *query.exclude_tags, *query.file_types):
        if value is not None and ordering.text_problem(value) is not None:
            raise InvalidRequestError("Listing parameters must be text without NUL characters")
    fingerprint = query.fingerprint()
    condition = await _listing_condition(session, viewer, query)
    path = Node.path.collate("C") if _dialect(session) == "postgresql" else Node.path
    select_query = select(*NODE_COLUMNS).where(condition)
    if query.page_token is not None:
        after = _decode_listing_token(query.page_token, fingerprint)
        select_query = select_query.where(path > after)
    else:
        offset = (query.page - 1) * query.per_page
        if offset > MAX_OFFSET:
            raise InvalidRequestError(
                f"page {query.page} with per_page {query.per_page} starts beyond {MAX_OFFSET:,}"
                " items: use page_token to go further"
            )
        select_query = select_query.offset(offset)
    rows = (await session.execute(select_query.order_by(path).limit(query.per_page + 1))).all()
    token = None
    if len(rows) > query.per_page:
        rows = rows[: query.per_page]
        token = _encode_listing_token(rows[-1].path, fingerprint)
    total = int(await session.scalar(select(func.count()).select_from(Node).where(condition)) or 0)
    return ListingPage(await _views(session, viewer, rows, None), token, total)
