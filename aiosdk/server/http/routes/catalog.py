"""``/api/v1/catalog``: the tree of containers and assets, their metadata, search and sharing.

Paths in URLs are catalog paths (``alice/experiments/run42``), each key URL-encoded. A node the
caller may not read is answered 404 like a missing one. Every GET answers with an ``ETag`` (a
hash of the body) and answers 304, without a body, to an ``If-None-Match`` that names it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ...accounts.namespaces import NAME_PATTERN
from ...authorization import ADMIN, ordered
from ...catalog import listings, nodes
from ...catalog.access import ShareRow
from ...catalog.listings import (
    MAX_OFFSET,
    ChildrenQuery,
    DistinctQuery,
    Fields,
    ListingQuery,
    Page,
)
from ...catalog.models import PUBLIC
from ...catalog.nodes import (
    NodeCreate,
    NodeMove,
    NodeRead,
    NodeUpdate,
    NodeView,
    ShareCreate,
    Viewer,
)
from ...catalog.paths import MAX_PATH_LENGTH, parent_of
from ...errors import InvalidRequestError
from ..dependencies import Current, RequestCall, viewer_of
from ..encoding import named_etag
from ..openapi import documented_error
from ..pagination import MAX_PAGE_TOKEN_LENGTH
from .organizations import Action, conflict

__all__ = [
    "ChildrenPage",
    "CountAnswer",
    "DistinctAnswer",
    "ListingPage",
    "NodeModel",
    "router",
]

router = APIRouter(prefix="/catalog", tags=["catalog"])


_NOT_MODIFIED: dict[str, Any] = {
    "description": "Not modified: the If-None-Match named the current ETag (no body)",
}
_ETAG = {"description": "A hash of the answer, for If-None-Match.", "schema": {"type": "string"}}
_NODE_404 = documented_error("No node at the path, or none the caller may read")
_BAD_PATH = documented_error("Invalid path, filters, sort, page_token or offset")
_BAD_LISTING = documented_error(
    "Invalid parameters or page_token, or a page starting beyond"
    f" {MAX_OFFSET:,} items (page - 1) * per_page: use page_token"
)


def _get_responses(model: type[BaseModel], *, node: bool = True) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {
        200: {"model": model, "headers": {"ETag": _ETAG}},
        304: _NOT_MODIFIED,
        400: _BAD_PATH,
    }
    if node:
        responses[404] = _NODE_404
    return responses


class Share(BaseModel):
    """A namespace a node is shared with, and for what."""

    namespace: str
    actions: list[Action]


class NodeModel(BaseModel):
    """A node as the caller sees it. With ``fields=keys`` only ``id``, ``key``, ``path`` and
    ``structure_family`` are present; with ``fields=no_metadata`` all but ``metadata``."""

    model_config = ConfigDict(extra="forbid")

    id: str
    key: str
    path: str
    structure_family: str
    parent: str | None = None
    """The parent's path; null for a namespace's root node."""
    namespace: str | None = None
    metadata: dict[str, Any] | None = None
    specs: list[str] | None = None
    tags: list[str] | None = None
    file_type: str | None = None
    structure: dict[str, Any] | None = None
    public: bool | None = None
    """Whether the node itself is shared with everyone."""
    shares: list[Share] | None = None
    """Who the node itself is shared with: only for a caller with admin on it (else empty)."""
    allowed_actions: list[Action] | None = None
    revision: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, view: NodeView | NodeRead, fields: Fields = "full") -> NodeModel:
        """The answer for ``view`` (as a model; the routes send :func:`node_item` directly)."""
        return cls.model_validate(node_item(view.node, view.actions, view.shares, fields))


def _instant(moment: datetime) -> str:
    """A time as pydantic writes it (RFC 3339, ``Z`` for UTC)."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def node_item(
    node: Any, actions: Collection[str], shares: Sequence[ShareRow], fields: Fields = "full"
) -> dict[str, Any]:
    """The JSON of a :class:`NodeModel` (its fields in its order) for ``node`` (a
    :class:`~aiosdk.server.catalog.models.Node` or a row of
    :data:`~aiosdk.server.catalog.nodes.NODE_COLUMNS`), which the caller may do ``actions`` on
    and which carries ``shares`` itself: built directly, not validated again."""
    if fields == "keys":
        return {
            "id": node.id,
            "key": node.key,
            "path": node.path,
            "structure_family": node.structure_family,
        }
    path: str = node.path
    item: dict[str, Any] = {
        "id": node.id,
        "key": node.key,
        "path": path,
        "structure_family": node.structure_family,
        "parent": parent_of(path) or None,
        "namespace": node.namespace,
    }
    if fields == "full":
        item["metadata"] = node.node_metadata
    item["specs"] = node.specs
    item["tags"] = node.tags
    item["file_type"] = node.file_type
    item["structure"] = node.structure
    item["public"] = any(share.grantee == PUBLIC for share in shares)
    item["shares"] = (
        [
            {"namespace": share.grantee, "actions": ordered(share.actions)}
            for share in shares
            if share.grantee != PUBLIC
        ]
        if ADMIN in actions
        else []
    )
    item["allowed_actions"] = ordered(actions)
    item["revision"] = node.revision
    item["created_at"] = _instant(node.created_at)
    item["updated_at"] = _instant(node.updated_at)
    return item


class ChildrenPage(BaseModel):
    """A page of a container's children; ``next_page_token`` is null on the last page,
    ``count`` is the total number matching (only with ``include_count``)."""

    items: list[NodeModel]
    next_page_token: str | None
    count: int | None


class CountAnswer(BaseModel):
    """How many children match."""

    count: int


class ValueCount(BaseModel):
    """A distinct value and how many children have it (null when counts were not asked)."""

    value: Any
    count: int | None


class DistinctTruncated(BaseModel):
    """Which lists of a distinct answer were cut at the server's cap (the most frequent kept)."""

    metadata: list[str] = []
    structure_families: bool = False
    specs: bool = False


class DistinctAnswer(BaseModel):
    """The distinct values among the matching children, most frequent first."""

    metadata: dict[str, list[ValueCount]]
    structure_families: list[ValueCount] | None = None
    specs: list[ValueCount] | None = None
    truncated: DistinctTruncated | None = None
    """Absent unless a list was cut at the cap."""


class Pagination(BaseModel):
    """Where a page of a listing is."""

    page: int
    per_page: int
    total_items: int
    total_pages: int


class ListingPage(BaseModel):
    """A page of a listing; ``next_page_token`` is null on the last page."""

    items: list[NodeModel]
    next_page_token: str | None
    pagination: Pagination


_REPEATABLE = frozenset(
    {"sort", "metadata_keys", "tag", "exclude_tag", "file_type", "exclude_file_type"}
)


def _single_values(request: Request) -> None:
    """Refuse a repeated parameter that takes one value (FastAPI would keep the last)."""
    params = request.query_params
    for name in params:
        if name not in _REPEATABLE and len(params.getlist(name)) > 1:
            raise InvalidRequestError(f"The parameter {name[:40]!r} takes one value")


async def _viewer(call: RequestCall, request: Request | None = None) -> Viewer:
    if request is not None:
        _single_values(request)
    return await viewer_of(call)


_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _answer(request: Request, body: dict[str, Any]) -> Response:
    """``body`` (the JSON of the route's response model, built directly) with its ETag, or
    304 when the client has it already."""
    content = _encode(body).encode()
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    headers = {"ETag": etag}
    if named_etag(request.headers, etag) is not None:
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)


def _written(view: NodeView, status_code: int = 200) -> Response:
    """The answer of a write: the node, as :class:`NodeModel`."""
    item = node_item(view.node, view.actions, view.shares)
    return Response(_encode(item).encode(), status_code, media_type="application/json")


def _nodes_page(views: Sequence[NodeView | NodeRead], fields: Fields) -> list[dict[str, Any]]:
    return [node_item(view.node, view.actions, view.shares, fields) for view in views]


Filters = Annotated[
    str | None,
    Query(max_length=4096, description="A JSON array of filters (ANDed)"),
]
Sort = Annotated[
    list[str],
    Query(max_length=16, description="Sort fields, in order; a '-' prefix sorts descending"),
]
PageToken = Annotated[str | None, Query(max_length=MAX_PAGE_TOKEN_LENGTH * 8)]


# --- reading -------------------------------------------------------------------------------


@router.get(
    "/nodes/{path:path}",
    summary="Get a node",
    response_model=NodeModel,
    responses=_get_responses(NodeModel),
)
async def get_node(path: str, request: Request, call: Current) -> Response:
    """The node at ``path``."""
    view = await nodes.get_node(
        call.session, await _viewer(call, request), path, call.state.catalog.reads
    )
    return _answer(request, node_item(view.node, view.actions, view.shares))


async def _children(
    path: str,
    request: Request,
    call: RequestCall,
    filters: str | None,
    sort: list[str],
    reverse: bool,
    offset: int | None,
    page_size: int,
    page_token: str | None,
    fields: Fields,
    include_count: bool,
) -> Response:
    query = ChildrenQuery(
        filters=filters,
        sort=sort,
        reverse=reverse,
        offset=offset,
        page_size=page_size,
        page_token=page_token,
        include_count=include_count,
        fields=fields,
    )
    viewer = await _viewer(call, request)
    page: Page = await listings.children(
        call.session, viewer, path, query, call.state.catalog.reads
    )
    body = {
        "items": _nodes_page(page.views, fields),
        "next_page_token": page.next_page_token,
        "count": page.count,
    }
    return _answer(request, body)


_CHILDREN_DOC = (
    "A page of the children, in the order of ``sort`` (then key, then id), or its reverse;"
    " from ``offset`` or after ``page_token`` (not both)."
)


@router.get(
    "/children",
    summary="List the namespaces",
    response_model=ChildrenPage,
    responses=_get_responses(ChildrenPage, node=False),
)
async def list_roots(
    request: Request,
    call: Current,
    filters: Filters = None,
    sort: Sort = [],  # noqa: B006  (FastAPI copies defaults)
    reverse: bool = False,
    offset: Annotated[int | None, Query(ge=0, le=MAX_OFFSET)] = None,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: PageToken = None,
    fields: Fields = "full",
    include_count: bool = False,
) -> Response:
    """The catalog's root: the root nodes of the namespaces the caller may read."""
    return await _children(
        "",
        request,
        call,
        filters,
        sort,
        reverse,
        offset,
        page_size,
        page_token,
        fields,
        include_count,
    )


@router.get(
    "/children/{path:path}",
    summary="List a container's children",
    response_model=ChildrenPage,
    responses=_get_responses(ChildrenPage),
)
async def list_children(
    path: str,
    request: Request,
    call: Current,
    filters: Filters = None,
    sort: Sort = [],  # noqa: B006
    reverse: bool = False,
    offset: Annotated[int | None, Query(ge=0, le=MAX_OFFSET)] = None,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: PageToken = None,
    fields: Fields = "full",
    include_count: bool = False,
) -> Response:
    """A page of the children of the container at ``path`` that the caller may read."""
    return await _children(
        path,
        request,
        call,
        filters,
        sort,
        reverse,
        offset,
        page_size,
        page_token,
        fields,
        include_count,
    )


async def _count(path: str, request: Request, call: RequestCall, filters: str | None) -> Response:
    viewer = await _viewer(call, request)
    count = await listings.count(call.session, viewer, path, filters, call.state.catalog.reads)
    return _answer(request, {"count": count})


@router.get(
    "/count",
    summary="Count the namespaces",
    response_model=CountAnswer,
    responses=_get_responses(CountAnswer, node=False),
)
async def count_roots(request: Request, call: Current, filters: Filters = None) -> Response:
    """How many namespace root nodes the caller may read (matching ``filters``)."""
    return await _count("", request, call, filters)


@router.get(
    "/count/{path:path}",
    summary="Count a container's children",
    response_model=CountAnswer,
    responses=_get_responses(CountAnswer),
)
async def count_children(
    path: str, request: Request, call: Current, filters: Filters = None
) -> Response:
    """How many children of the container at ``path`` the caller may read (matching
    ``filters``)."""
    return await _count(path, request, call, filters)


async def _distinct(
    path: str, request: Request, call: RequestCall, query: DistinctQuery
) -> Response:
    viewer = await _viewer(call, request)
    found = await listings.distinct(call.session, viewer, path, query, call.state.catalog.reads)
    answer = DistinctAnswer.model_validate(found)
    return _answer(request, answer.model_dump(mode="json", exclude_unset=True))


MetadataKeys = Annotated[list[str], Query(max_length=32)]


@router.get(
    "/distinct",
    summary="Distinct values among the namespaces",
    response_model=DistinctAnswer,
    responses=_get_responses(DistinctAnswer, node=False),
)
async def distinct_roots(
    request: Request,
    call: Current,
    filters: Filters = None,
    metadata_keys: MetadataKeys = [],  # noqa: B006
    structure_families: bool = False,
    specs: bool = False,
    counts: bool = False,
) -> Response:
    """The distinct values of metadata keys, structure families and specs among the namespace
    root nodes the caller may read."""
    query = DistinctQuery(filters, metadata_keys, structure_families, specs, counts)
    return await _distinct("", request, call, query)


@router.get(
    "/distinct/{path:path}",
    summary="Distinct values among a container's children",
    response_model=DistinctAnswer,
    responses=_get_responses(DistinctAnswer),
)
async def distinct_children(
    path: str,
    request: Request,
    call: Current,
    filters: Filters = None,
    metadata_keys: MetadataKeys = [],  # noqa: B006
    structure_families: bool = False,
    specs: bool = False,
    counts: bool = False,
) -> Response:
    """The distinct values of metadata keys, structure families and specs among the children
    of the container at ``path`` that the caller may read (and that match ``filters``)."""
    query = DistinctQuery(filters, metadata_keys, structure_families, specs, counts)
    return await _distinct(path, request, call, query)


# --- writing -------------------------------------------------------------------------------

_TOO_LARGE = documented_error(
    f"The request body exceeds limits.max_request_body_bytes, or the node's metadata or"
    f" structure would exceed {nodes.MAX_JSON_BYTES // 1024} KiB as JSON (after patches apply)"
)
_WRITE_403 = documented_error(
    "The caller may not do this here (write needed; admin to share), or its token is read-only"
)


@router.post(
    "/children/{path:path}",
    status_code=201,
    summary="Create a child",
    response_model=NodeModel,
    responses={
        400: _BAD_PATH,
        403: documented_error(
            "The caller may not write in the container, its token is read-only, or the path is"
            " the root (namespaces come with their user or organization)"
        ),
        404: _NODE_404,
        409: conflict("A child with that key exists, or the parent is not a container"),
        413: _TOO_LARGE,
        422: documented_error("Invalid body, or a spec validator refused the node."),
    },
)
async def create_child(path: str, body: NodeCreate, call: Current) -> Response:
    """Create a container or an asset in the container at ``path``."""
    view = await nodes.create_child(call.work, call.state.catalog, await _viewer(call), path, body)
    return _written(view, 201)


@router.patch(
    "/nodes/{path:path}",
    summary="Change a node",
    response_model=NodeModel,
    responses={
        400: _BAD_PATH,
        403: _WRITE_403,
        404: _NODE_404,
        409: conflict(
            "The revision given is not the node's current one (error type stale_revision)"
        ),
        413: _TOO_LARGE,
        422: documented_error(
            "Invalid body, a patch that does not apply, or a spec validator refused the node."
        ),
    },
)
async def update_node(path: str, body: NodeUpdate, call: Current) -> Response:
    """Change a node's metadata (replaced, merge-patched or JSON-patched), specs, tags or file
    type; with ``revision``, only if it is still the node's."""
    view = await nodes.update_node(call.work, call.state.catalog, await _viewer(call), path, body)
    return _written(view)


@router.post(
    "/move/{path:path}",
    summary="Move or rename a node",
    response_model=NodeModel,
    responses={
        400: documented_error("Invalid path, or a move into the node's own subtree"),
        403: documented_error(
            "The caller may not write the node or the new parent, its token is read-only, the"
            " node is a namespace's root, or the move needs admin on the node: it leaves the"
            " node's namespace, or it would give the caller more on the node than it has"
        ),
        404: _NODE_404,
        409: conflict(
            "The destination exists, is not in a container, or the revision given is not the"
            " node's current one (stale_revision)"
        ),
    },
)
async def move_node(path: str, body: NodeMove, call: Current) -> Response:
    """Move the node at ``path``, with everything below it, to the path ``to``."""
    view = await nodes.move_node(call.work, call.state.catalog, await _viewer(call), path, body)
    return _written(view)


@router.delete(
    "/nodes/{path:path}",
    status_code=204,
    summary="Delete a node",
    responses={
        400: _BAD_PATH,
        403: documented_error(
            "The caller may not write the node, its token is read-only, or it is a namespace's root"
        ),
        404: _NODE_404,
        409: conflict(
            "The container has children and recursive is false (not_empty), or the revision"
            " given is not the node's current one (stale_revision)"
        ),
    },
)
async def delete_node(
    path: str,
    request: Request,
    call: Current,
    recursive: bool = False,
    revision: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    """Delete the node at ``path`` (a container with children only ``recursive``ly)."""
    await nodes.delete_node(
        call.work,
        call.state.catalog,
        await _viewer(call, request),
        path,
        recursive=recursive,
        revision=revision,
    )
    return Response(status_code=204)


_SHARE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _BAD_PATH,
    403: documented_error("The caller does not have admin on the node, or its token is read-only"),
    404: documented_error(
        "No node at the path (or none the caller may read), no such namespace, or no such share"
    ),
    409: conflict("The node is being shared concurrently"),
}


@router.put(
    "/shares/{path:path}",
    summary="Share a node",
    response_model=NodeModel,
    responses=_SHARE_ERRORS,
)
async def share_node(path: str, body: ShareCreate, call: Current) -> Response:
    """Share the node at ``path``, and everything below it, with a namespace."""
    view = await nodes.set_share(call.work, call.state.catalog, await _viewer(call), path, body)
    return _written(view)


@router.delete(
    "/shares/{path:path}",
    summary="Stop sharing a node",
    response_model=NodeModel,
    responses=_SHARE_ERRORS,
)
async def unshare_node(
    path: str,
    namespace: Annotated[str, Query(min_length=1, max_length=64)],
    request: Request,
    call: Current,
) -> Response:
    """Stop sharing the node at ``path`` with ``namespace``."""
    view = await nodes.remove_share(
        call.work, call.state.catalog, await _viewer(call, request), path, namespace
    )
    return _written(view)


class PublicUpdate(BaseModel):
    """Whether a node (and everything below it) is readable by everyone."""

    model_config = ConfigDict(extra="forbid")

    public: bool = Field(strict=True)


@router.put(
    "/public/{path:path}",
    summary="Make a node public or private",
    response_model=NodeModel,
    responses=_SHARE_ERRORS,
)
async def set_public(path: str, body: PublicUpdate, call: Current) -> Response:
    """Make the node at ``path`` readable by everyone, or no longer."""
    view = await nodes.set_public(
        call.work, call.state.catalog, await _viewer(call), path, body.public
    )
    return _written(view)


# --- listings ------------------------------------------------------------------------------


Scope = Literal["owned", "public", "shared"]
NamespaceName = Annotated[
    str | None, Query(max_length=64, pattern=NAME_PATTERN, description="A namespace's name")
]
Labels = Annotated[list[str], Query(max_length=100)]


async def _listing(request: Request, call: RequestCall, query: ListingQuery) -> Response:
    page = await listings.listing(call.session, await _viewer(call, request), query)
    fields: Fields = "full" if query.with_metadata else "no_metadata"
    body = {
        "items": _nodes_page(page.views, fields),
        "next_page_token": page.next_page_token,
        "pagination": {
            "page": query.page,
            "per_page": query.per_page,
            "total_items": page.total,
            "total_pages": -(-page.total // query.per_page),
        },
    }
    return _answer(request, body)


@router.get(
    "/listings/arrays",
    summary="List assets",
    response_model=ListingPage,
    responses={**_get_responses(ListingPage, node=False), 400: _BAD_LISTING},
)
async def list_arrays(
    request: Request,
    call: Current,
    scope: Scope = "owned",
    namespace: NamespaceName = None,
    permissions: Action | None = None,
    tag: Labels = [],  # noqa: B006
    exclude_tag: Labels = [],  # noqa: B006
    search: Annotated[str | None, Query(max_length=255)] = None,
    file_type: Labels = [],  # noqa: B006
    exclude_file_type: Labels = [],  # noqa: B006
    structure_family: Annotated[str | None, Query(max_length=32)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: PageToken = None,
    with_metadata: bool = False,
) -> Response:
    """Every asset (any family but container) the caller may read in ``scope``, by path."""
    query = ListingQuery(
        kind="arrays",
        scope=scope,
        namespace=namespace,
        permissions=permissions,
        tags=tag,
        exclude_tags=exclude_tag,
        search=search,
        file_types=file_type,
        exclude_file_types=exclude_file_type,
        structure_family=structure_family,
        page=page,
        per_page=per_page,
        page_token=page_token,
        with_metadata=with_metadata,
    )
    return await _listing(request, call, query)


@router.get(
    "/listings/groups",
    summary="List groups",
    response_model=ListingPage,
    responses={
        **_get_responses(ListingPage, node=False),
        400: _BAD_LISTING,
        404: documented_error("No node at parent, or none the caller may read"),
    },
)
async def list_groups(
    request: Request,
    call: Current,
    scope: Scope = "owned",
    namespace: NamespaceName = None,
    permissions: Action | None = None,
    tag: Labels = [],  # noqa: B006
    exclude_tag: Labels = [],  # noqa: B006
    search: Annotated[str | None, Query(max_length=255)] = None,
    file_type: Labels = [],  # noqa: B006
    exclude_file_type: Labels = [],  # noqa: B006
    group_type: Annotated[str | None, Query(max_length=255)] = None,
    flat: bool = False,
    parent: Annotated[str | None, Query(max_length=MAX_PATH_LENGTH)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: PageToken = None,
    with_metadata: bool = False,
) -> Response:
    """Every group (container below a namespace's root) the caller may read in ``scope``, by
    path: only those directly in a namespace's root unless ``flat``, only the children of
    ``parent`` when given."""
    query = ListingQuery(
        kind="groups",
        scope=scope,
        namespace=namespace,
        permissions=permissions,
        tags=tag,
        exclude_tags=exclude_tag,
        search=search,
        file_types=file_type,
        exclude_file_types=exclude_file_type,
        group_type=group_type,
        flat=flat,
        parent=parent,
        page=page,
        per_page=per_page,
        page_token=page_token,
        with_metadata=with_metadata,
    )
    return await _listing(request, call, query)
