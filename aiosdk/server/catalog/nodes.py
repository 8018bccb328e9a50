"""Catalog nodes one at a time: reading, creating, changing, moving, deleting and sharing them.

Every write goes through the request's unit of work (flushed, never committed) and records one
event on the container it changes a child of (:func:`.events.record`). A change of a node
bumps its ``revision`` with ``UPDATE ... WHERE id = ? AND revision = ?``: of two writers that
read the same revision, exactly one succeeds, the other gets :class:`StaleRevisionError` (or,
when it named no revision, applies its change to what the first wrote).

A node the caller may not read is answered like a missing one (:class:`NodeNotFoundError`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import jsonpatch
import jsonpointer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import Row, Select, bindparam, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..accounts.models import Namespace
from ..authorization import ADMIN, READ, WRITE, Caller, ordered
from ..errors import (
    ApiError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from ..storage import utcnow
from ..tickets.resolve import is_ticket_path, read_ticket_path
from ..unit_of_work import UnitOfWork
from . import events
from .access import (
    ShareRow,
    actions_of,
    covering,
    covers,
    format_actions,
    in_subtree,
    parse_actions,
    shares_covering,
)
from .models import PUBLIC, CatalogEvent, EventKind, Node, NodeShare
from .paths import (
    MAX_DEPTH,
    MAX_PATH_LENGTH,
    ancestors,
    check_key,
    join,
    key_problem,
    parent_of,
    parse_path,
)
from .state import CatalogState, NodeReads

__all__ = [
    "CONTAINER",
    "InvalidContentError",
    "JSONObject",
    "Key",
    "Lock",
    "MAX_JSON_BYTES",
    "NODE_COLUMNS",
    "NodeCreate",
    "NodeMove",
    "NodeRead",
    "NodeNotFoundError",
    "NodeUpdate",
    "NodeView",
    "NotEmptyError",
    "ShareCreate",
    "StaleRevisionError",
    "Viewer",
    "create_child",
    "create_namespace_root",
    "delete_node",
    "get_node",
    "merge_patch",
    "move_node",
    "read_node",
    "remove_share",
    "require",
    "resolve",
    "set_public",
    "set_share",
    "update_node",
    "view_of",
]

CONTAINER = "container"
"""The structure family of containers (every other family is an asset's)."""

MAX_JSON_DEPTH = 32
"""How deeply metadata may nest (objects and arrays)."""
MAX_JSON_BYTES = 256 * 1024
"""The largest a node's metadata (or structure) may be, as compact UTF-8 JSON: what listings
of a thousand nodes hold in memory stays bounded. Larger is a 413, on creation and on every
change (checked after patches apply)."""


class NodeNotFoundError(NotFoundError):
    """No node at a path, or none the caller may read (404, the same answer for both)."""

    error_type = "node_not_found"  # type: ignore[assignment]  # a finer kind of not_found

    def __init__(self, path: str) -> None:
        super().__init__(f"No node at {path[:300]!r}")


class StaleRevisionError(ConflictError):
    """A write based on a revision that is no longer the node's (409)."""

    error_type = "stale_revision"  # type: ignore[assignment]  # a finer kind of conflict


class NotEmptyError(ConflictError):
    """Deleting a container that has children, without ``recursive`` (409)."""

    error_type = "not_empty"  # type: ignore[assignment]  # a finer kind of conflict


class InvalidContentError(ApiError):
    """Metadata, specs or a patch the server cannot accept: a patch that does not apply, a spec
    validator's refusal (422)."""

    status = 422
    error_type = "invalid_request"


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"metadata nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("metadata strings must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("metadata must be Unicode text (no lone surrogates)") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("metadata numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("metadata keys must be strings")  # noqa: TRY004 (a 422)
            _check_json(key, depth + 1)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
    elif value is not None and not isinstance(value, (bool, int)):
        raise ValueError("metadata must be JSON")


def _json_value(value: Any) -> Any:
    _check_json(value)
    return value


def _valid_key(key: str) -> str:
    problem = key_problem(key)
    if problem is not None:
        raise ValueError(problem)
    return key


JSONObject = Annotated[dict[str, Any], AfterValidator(_json_value)]
"""A JSON object a client sends (metadata, a merge patch): text without NUL, finite numbers."""
Key = Annotated[str, AfterValidator(_valid_key)]
"""A node's key, as a request field (see :mod:`.paths`)."""
_Label = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_valid_key)]
_Labels = Annotated[list[_Label], Field(max_length=100)]
StructureFamily = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
FileType = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_valid_key)]
_PatchOps = Annotated[list[JSONObject], Field(max_length=1000)]
Action = Literal["read", "write", "admin"]
READ_ACTION: Action = "read"


class NodeCreate(BaseModel):
    """A new child of a container."""

    model_config = ConfigDict(extra="forbid")

    key: Key
    structure_family: StructureFamily = CONTAINER
    metadata: JSONObject = Field(default_factory=dict)
    specs: _Labels = Field(default_factory=list)
    tags: _Labels = Field(default_factory=list)
    file_type: FileType | None = None
    structure: JSONObject | None = None


class NodeUpdate(BaseModel):
    """Changes to a node: only the fields given change. At most one of ``metadata`` (the new
    metadata), ``metadata_merge`` (an RFC 7386 merge patch) and ``metadata_patch`` (RFC 6902
    operations); ``revision``, when given, must be the node's current one."""

    model_config = ConfigDict(extra="forbid")

    revision: Annotated[int, Field(ge=1)] | None = None
    metadata: JSONObject | None = None
    metadata_merge: JSONObject | None = None
    metadata_patch: _PatchOps | None = None
    specs: _Labels | None = None
    specs_patch: _PatchOps | None = None
    tags: _Labels | None = None
    file_type: FileType | None = None


class NodeMove(BaseModel):
    """Where to move a node (and everything below it): its new path, parent and key."""

    model_config = ConfigDict(extra="forbid")

    to: Annotated[str, Field(min_length=1, max_length=MAX_PATH_LENGTH)]
    revision: Annotated[int, Field(ge=1)] | None = None


class ShareCreate(BaseModel):
    """A share of a node (and everything below it) with a namespace; ``read`` is always
    granted."""

    model_config = ConfigDict(extra="forbid")

    namespace: Annotated[str, Field(min_length=1, max_length=64)]
    actions: Annotated[list[Action], Field(max_length=3)] = Field(
        default_factory=lambda: [READ_ACTION]
    )


@dataclass(frozen=True)
class Viewer:
    """Who asks, and whether the server lets anonymous callers read public nodes."""

    caller: Caller | None
    allow_anonymous: bool = False

    def actions(self, namespace: str, shares: Sequence[ShareRow]) -> frozenset[str]:
        """What the viewer may do on a node of ``namespace`` covered by ``shares``."""
        return actions_of(self.caller, namespace, shares, allow_anonymous=self.allow_anonymous)


@dataclass(frozen=True)
class NodeView:
    """A node as one caller sees it."""

    node: Node
    actions: frozenset[str]
    """What the caller may do on it."""
    shares: list[ShareRow] = field(default_factory=list)
    """The shares on the node itself (:data:`~.models.PUBLIC` included)."""
    covering: list[ShareRow] = field(default_factory=list)
    """The shares on the node and on its ancestors (what its access comes from)."""

    @property
    def public(self) -> bool:
        """Whether the node itself is shared with everyone."""
        return any(share.grantee == PUBLIC for share in self.shares)


def view_of(viewer: Viewer, node: Node, shares: Sequence[ShareRow]) -> NodeView:
    """``node`` as ``viewer`` sees it, given shares that include those covering it."""
    covers = covering(shares, node.path)
    own = sorted((s for s in covers if s.node_id == node.id), key=lambda s: s.grantee)
    return NodeView(node, viewer.actions(node.namespace, covers), own, covers)


async def create_namespace_root(session: AsyncSession, name: str) -> Node:
    """Create the root node of the new namespace ``name`` (with the user or organization)."""
    now = utcnow()
    node = Node(
        parent_id=None,
        namespace=name,
        key=name,
        path=name,
        depth=1,
        structure_family=CONTAINER,
        node_metadata={},
        specs=[],
        tags=[],
        file_type=None,
        structure=None,
        revision=1,
        child_sequence=0,
        created_at=now,
        updated_at=now,
    )
    session.add(node)
    await session.flush()
    return node


_NODES = Node.__table__
_SHARES = NodeShare.__table__
NODE_COLUMNS = (
    _NODES.c.id,
    _NODES.c.parent_id,
    _NODES.c.namespace,
    _NODES.c.key,
    _NODES.c.path,
    _NODES.c.depth,
    _NODES.c.structure_family,
    _NODES.c.metadata.label("node_metadata"),
    _NODES.c.specs,
    _NODES.c.tags,
    _NODES.c.file_type,
    _NODES.c.structure,
    _NODES.c.revision,
    _NODES.c.created_at,
    _NODES.c.updated_at,
)
"""A node's columns, named as :class:`~.models.Node`'s attributes: rows of them read like
nodes (without the ORM's cost: for reading only)."""
_SHARE_COLUMNS = (
    _SHARES.c.node_id.label("share_node_id"),
    _SHARES.c.path.label("share_path"),
    _SHARES.c.grantee.label("share_grantee"),
    _SHARES.c.actions.label("share_actions"),
)
_COVERING = _SHARES.c.path.in_(bindparam("ancestors", expanding=True))


def _with_shares(columns: Sequence[Any]) -> Select[Any]:
    """The node at ``:path`` with each share covering it, one row per share (one row with
    NULL shares when there is none): the node and its access in one statement."""
    return (
        select(*columns, *_SHARE_COLUMNS)
        .select_from(_NODES.outerjoin(_SHARES, _COVERING))
        .where(_NODES.c.path == bindparam("path"))
    )


_READ_NODE = _with_shares(NODE_COLUMNS)
_RESOLVE = _with_shares([Node])


def _shares_of(rows: Sequence[Row[Any]]) -> list[ShareRow]:
    return [
        ShareRow(r.share_node_id, r.share_path, r.share_grantee, parse_actions(r.share_actions))
        for r in rows
        if r.share_grantee is not None
    ]


def _canonical(path: str) -> str:
    keys = parse_path(path)
    if not keys:
        raise InvalidRequestError("The catalog's root is not a node: give a path")
    return join(*keys)


_EXPORT_ACTIONS = frozenset({READ})
"""What anyone may do on an export read by ticket path: read it."""


@dataclass(frozen=True)
class NodeRead:
    """A node as one caller sees it, read for answering only (see :func:`read_node`)."""

    node: Any
    """The node's row: :data:`NODE_COLUMNS`, read like a :class:`~.models.Node`."""
    actions: frozenset[str]
    shares: list[ShareRow]
    """The shares on the node itself (:data:`~.models.PUBLIC` included), by grantee."""
    covering: list[ShareRow]
    """The shares on the node and on its ancestors."""


async def read_node(
    session: AsyncSession, viewer: Viewer, path: str, reads: NodeReads | None = None
) -> NodeRead:
    """The node at ``path`` as ``viewer`` sees it, in one statement (node and shares), for
    answering: like :func:`resolve`, without an ORM object; from ``reads`` when it has the
    path's rows (a request that writes must not pass it: it would miss its own writes).

    A ticket path (``~session/<session_id>/<number>``) is the export's data, which the
    caller may only read (see :mod:`..tickets.resolve`): never from ``reads``."""
    path = _canonical(path)
    if is_ticket_path(path):
        exported = await read_ticket_path(session, viewer, path)
        if exported is None:
            raise NodeNotFoundError(path)
        return NodeRead(exported[0], _EXPORT_ACTIONS, [], exported[1])

    async def read() -> Sequence[Row[Any]]:
        parameters = {"path": path, "ancestors": ancestors(path)}
        rows: Sequence[Row[Any]] = (await session.execute(_READ_NODE, parameters)).all()
        return rows

    rows = await read() if reads is None else await reads.rows(path, read)
    if not rows:
        raise NodeNotFoundError(path)
    node = rows[0]
    covering = _shares_of(rows)
    actions = viewer.actions(node.namespace, covering)
    if READ not in actions:
        raise NodeNotFoundError(path)
    own = sorted((s for s in covering if s.node_id == node.id), key=lambda s: s.grantee)
    return NodeRead(node, actions, own, covering)


Lock = Literal["child", "update"]
"""How :func:`resolve` locks the node's row (PostgreSQL; SQLite's writers take turns anyway):
``child`` (``FOR NO KEY UPDATE``) for a container getting a child, which keeps it from moving
or going away until the transaction ends (not ``FOR SHARE``: the child's event updates the
container's row, and two creates holding it shared would wait for each other), ``update``
(``FOR UPDATE``) for changing, moving or deleting the node."""


async def resolve(
    session: AsyncSession, viewer: Viewer, path: str, *, lock: Lock | None = None
) -> NodeView:
    """The node at ``path`` as ``viewer`` sees it; :class:`NodeNotFoundError` if there is none
    or the viewer may not read it, :class:`~..errors.InvalidRequestError` for an invalid path
    (the root, ``""``, is no node). One statement: the node and the shares covering it.

    With ``lock``, the row is locked. A lock waited for finds the row as the other writer left
    it (read committed): a node moved or deleted meanwhile is no longer at ``path``, a 404.

    A ticket path (``~session/...``) is refused (:class:`~..errors.PermissionDeniedError`):
    exports are read-only."""
    path = _canonical(path)
    if is_ticket_path(path):
        raise PermissionDeniedError(f"{path[:300]!r} is an export: exports are read-only")
    query = _RESOLVE
    if lock is not None:
        # The row as the lock found it, not the identity map's.
        query = query.with_for_update(of=_NODES, key_share=lock == "child").execution_options(
            populate_existing=True
        )
    rows = (await session.execute(query, {"path": path, "ancestors": ancestors(path)})).all()
    if not rows:
        raise NodeNotFoundError(path)
    view = view_of(viewer, rows[0][0], _shares_of(rows))
    if READ not in view.actions:
        raise NodeNotFoundError(path)
    return view


def require(viewer: Viewer, view: NodeView | NodeRead, action: str) -> None:
    """:class:`~..errors.PermissionDeniedError` unless ``viewer`` may do ``action`` on the
    node it sees as ``view`` (saying so when its token is read-only)."""
    if action in view.actions:
        return
    caller = viewer.caller
    if caller is not None and caller.read_only:
        raise PermissionDeniedError(
            f"This token is read-only: {action!r} on {view.node.path!r} is not allowed"
        )
    raise PermissionDeniedError(f"The {action!r} permission on {view.node.path!r} is required")


async def get_node(
    session: AsyncSession, viewer: Viewer, path: str, reads: NodeReads | None = None
) -> NodeRead:
    """The node at ``path``, for answering (see :func:`read_node`)."""
    return await read_node(session, viewer, path, reads)


def _validate(
    catalog: CatalogState, metadata: dict[str, Any], structure_family: str, specs: list[str]
) -> None:
    for spec in specs:
        validator = catalog.validators.get(spec)
        if validator is None:
            continue
        try:
            validator(metadata, structure_family, specs)
        except ValueError as exc:
            raise InvalidContentError(
                f"The node does not satisfy the spec {spec!r}: {exc}"
            ) from None


def _valid_structure(
    catalog: CatalogState, structure_family: str, structure: dict[str, Any] | None
) -> dict[str, Any] | None:
    """``structure`` as the validator of ``structure_family`` normalises it (a data family's
    node cannot be made without a valid one); as given for a family without a validator."""
    validator = catalog.structures.get(structure_family)
    if validator is None:
        return structure
    try:
        normal = validator(structure)
    except ValueError as exc:
        raise InvalidContentError(f"Invalid {structure_family} structure: {exc}") from None
    _check_size("structure", normal)
    return normal


def _check_labels(specs: list[str]) -> list[str]:
    if len(set(specs)) != len(specs):
        raise InvalidContentError("specs must not repeat")
    return specs


async def create_child(
    work: UnitOfWork, catalog: CatalogState, viewer: Viewer, parent_path: str, request: NodeCreate
) -> NodeView:
    """Create ``request`` in the container at ``parent_path``: the caller needs ``write`` on
    it. :class:`~..errors.ConflictError` if the key is taken or the parent is no container;
    :class:`~..errors.PermissionDeniedError` at the root (namespaces come with their user or
    organization)."""
    session = work.session
    if not parse_path(parent_path):
        raise PermissionDeniedError(
            "Nodes cannot be created at the catalog's root: its entries are the namespaces,"
            " made with their user or organization; create under 'namespace/...'"
        )
    _check_size("metadata", request.metadata)
    _check_size("structure", request.structure)
    await work.begin_write()
    # Locked until the transaction ends: the parent can neither move (which would leave the
    # child at a path under its old one) nor go away; the path is built from the locked row.
    parent = await resolve(session, viewer, parent_path, lock="child")
    require(viewer, parent, WRITE)
    container = parent.node
    if container.structure_family != CONTAINER:
        raise ConflictError(f"{container.path!r} is not a container")
    key = check_key(request.key)
    path = join(container.path, key)
    if len(path) > MAX_PATH_LENGTH or container.depth + 1 > MAX_DEPTH:
        raise InvalidRequestError(
            f"Invalid path: a path is at most {MAX_PATH_LENGTH} characters and {MAX_DEPTH} keys"
        )
    specs = _check_labels(request.specs)
    _validate(catalog, request.metadata, request.structure_family, specs)
    structure = _valid_structure(catalog, request.structure_family, request.structure)
    taken = await session.scalar(select(exists().where(Node.path == path)))
    if taken:
        raise ConflictError(f"{path!r} exists already")
    now = utcnow()
    node = Node(
        parent_id=container.id,
        namespace=container.namespace,
        key=key,
        path=path,
        depth=container.depth + 1,
        structure_family=request.structure_family,
        node_metadata=request.metadata,
        specs=specs,
        tags=sorted(set(request.tags)),
        file_type=request.file_type,
        structure=structure,
        revision=1,
        child_sequence=0,
        created_at=now,
        updated_at=now,
    )
    session.add(node)
    try:
        await session.flush()
    except IntegrityError as exc:
        if _violates_foreign_key(exc):  # the parent was deleted meanwhile
            raise NodeNotFoundError(container.path) from None
        raise ConflictError(f"{path!r} exists already") from None  # created meanwhile
    await events.record(work, catalog.wakeups, container.id, EventKind.CREATED, node)
    # Its own shares: none yet; those above it: its parent's.
    return NodeView(node, parent.actions, [], parent.covering)


async def _announce_update(work: UnitOfWork, catalog: CatalogState, node: Node) -> None:
    """Announce that ``node`` changed: an event of its container; for a namespace's root,
    which has none, a wake-up of its own watchers. Either empties every process's cache of
    node reads when ``work`` commits."""
    if node.parent_id is None:
        catalog.wakeups.wake(work, node.id)
    else:
        await events.record(work, catalog.wakeups, node.parent_id, EventKind.UPDATED, node)


def _violates_foreign_key(exc: IntegrityError) -> bool:
    """Whether ``exc`` is a foreign key's refusal (not a unique constraint's)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23503":  # asyncpg: foreign_key_violation
        return True
    return "FOREIGN KEY" in str(orig).upper()


def _check_size(what: str, value: Any) -> None:
    """:class:`~..errors.PayloadTooLargeError` (413) if ``value`` is larger than
    :data:`MAX_JSON_BYTES` as JSON."""
    if value is None:
        return
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_JSON_BYTES:
        raise PayloadTooLargeError(
            f"A node's {what} is at most {MAX_JSON_BYTES // 1024} KiB as JSON;"
            f" this would be {size:,} bytes"
        )


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with the RFC 7386 merge patch ``patch`` applied (neither is changed)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _json_patch(document: Any, operations: list[dict[str, Any]], what: str) -> Any:
    try:
        return jsonpatch.apply_patch(document, operations, in_place=False)
    except (
        jsonpatch.JsonPatchException,
        jsonpointer.JsonPointerException,
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
    ) as exc:
        raise InvalidContentError(f"The {what} patch does not apply: {exc}") from None


def _updated_fields(node: Node, request: NodeUpdate) -> dict[Any, Any]:
    """The columns ``request`` changes on ``node`` (as it is now), with their new values."""
    forms = [request.metadata, request.metadata_merge, request.metadata_patch]
    if sum(form is not None for form in forms) > 1:
        raise InvalidRequestError("Give at most one of metadata, metadata_merge and metadata_patch")
    if request.specs is not None and request.specs_patch is not None:
        raise InvalidRequestError("Give at most one of specs and specs_patch")
    values: dict[Any, Any] = {}
    metadata: Any = None
    if request.metadata is not None:
        metadata = request.metadata
    elif request.metadata_merge is not None:
        metadata = merge_patch(node.node_metadata, request.metadata_merge)
    elif request.metadata_patch is not None:
        metadata = _json_patch(node.node_metadata, request.metadata_patch, "metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise InvalidContentError("Metadata must stay a JSON object")
        try:
            _check_json(metadata)
        except ValueError as exc:
            raise InvalidContentError(str(exc)) from None
        _check_size("metadata", metadata)
        if metadata != node.node_metadata:
            values[Node.node_metadata] = metadata
    specs: Any = None
    if request.specs is not None:
        specs = request.specs
    elif request.specs_patch is not None:
        specs = _json_patch(node.specs, request.specs_patch, "specs")
        if not (
            isinstance(specs, list)
            and len(specs) <= 100
            and all(isinstance(s, str) and key_problem(s) is None for s in specs)
        ):
            raise InvalidContentError("specs must stay a list of at most 100 valid names")
    if specs is not None and specs != node.specs:
        values[Node.specs] = _check_labels(specs)
    if request.tags is not None and sorted(set(request.tags)) != node.tags:
        values[Node.tags] = sorted(set(request.tags))
    if "file_type" in request.model_fields_set and request.file_type != node.file_type:
        values[Node.file_type] = request.file_type
    return values


def _stale(path: str, current: int) -> StaleRevisionError:
    return StaleRevisionError(
        f"{path!r} has changed since it was read: its current revision is {current}"
    )


async def _bump(session: AsyncSession, node: Node, expected: int, values: dict[Any, Any]) -> bool:
    """Apply ``values`` to ``node`` and bump its revision, if it is still ``expected``;
    whether it was (``node`` is then refreshed)."""
    result = await session.execute(
        update(Node)
        .where(Node.id == node.id, Node.revision == expected)
        .values({**values, Node.revision: Node.revision + 1, Node.updated_at: utcnow()})
        .execution_options(synchronize_session=False)
    )
    changed = bool(getattr(result, "rowcount", 0) == 1)
    await session.refresh(node)
    return changed


_ATTEMPTS = 5  # writers without a revision retry what a concurrent writer got to first


async def update_node(
    work: UnitOfWork, catalog: CatalogState, viewer: Viewer, path: str, request: NodeUpdate
) -> NodeView:
    """Apply ``request`` to the node at ``path`` (the caller needs ``write`` on it)."""
    session = work.session
    await work.begin_write()
    for _attempt in range(_ATTEMPTS):
        view = await resolve(session, viewer, path, lock="update")
        require(viewer, view, WRITE)
        node = view.node
        read_at = node.revision
        if request.revision is not None and request.revision != read_at:
            raise _stale(node.path, read_at)
        values = _updated_fields(node, request)
        if not values:
            return view
        _validate(
            catalog,
            values.get(Node.node_metadata, node.node_metadata),
            node.structure_family,
            values.get(Node.specs, node.specs),
        )
        if await _bump(session, node, read_at, values):
            await _announce_update(work, catalog, node)
            return view
        if request.revision is not None:
            raise _stale(node.path, node.revision)
    raise ConflictError(f"{path[:300]!r} is changing too often: retry")


def _check_move_grants(viewer: Viewer, view: NodeView, target: NodeView) -> None:
    """Refuse a move that would give the caller more on the node than it has (without
    ``admin`` on it, which has everything already).

    Moving to another namespace needs ``admin``: the node's owners lose it, the destination's
    gain it. Within one namespace its grants stay; the shares above the node change (those of
    the old place go, those of the new one come), and the caller may not gain an action that way
    either (say, a ``write`` share on the source and an ``admin`` share on the destination)."""
    node = view.node
    if ADMIN in view.actions:
        return
    if target.node.namespace != node.namespace:
        raise PermissionDeniedError(
            f"Moving {node.path!r} out of the namespace {node.namespace!r} needs the 'admin'"
            " permission on it ('write' is not enough: it changes who owns it)"
        )
    after = viewer.actions(node.namespace, [*target.covering, *view.shares])
    gained = after - view.actions
    if gained:
        raise PermissionDeniedError(
            f"Moving {node.path!r} under {target.node.path!r} would give you"
            f" {', '.join(ordered(gained))} on it: that needs the 'admin' permission on it"
        )


async def _lock_subtree(session: AsyncSession, path: str) -> list[tuple[int, int]]:
    """Lock the rows of the node at ``path`` and of every node below it (``FOR UPDATE`` on
    PostgreSQL; its creates lock their parent, so they wait, or are done and seen by the
    statements after this one); the depth and path length of each."""
    rows = await session.execute(
        select(Node.depth, func.length(Node.path))
        .where(in_subtree(Node.path, path))
        .with_for_update()
    )
    return [(depth, length) for depth, length in rows]


async def move_node(
    work: UnitOfWork, catalog: CatalogState, viewer: Viewer, path: str, request: NodeMove
) -> NodeView:
    """Move the node at ``path``, and everything below it, to ``request.to`` (a rename when
    the parent stays). The caller needs ``write`` on the node and on the new parent, and
    ``admin`` on the node to move it to another namespace or to where it would get more on it
    (:func:`_check_move_grants`)."""
    session = work.session
    await work.begin_write()
    view = await resolve(session, viewer, path, lock="update")
    require(viewer, view, WRITE)
    node = view.node
    if node.parent_id is None:
        raise PermissionDeniedError("A namespace's root node cannot be moved or renamed")
    keys = parse_path(request.to)
    if len(keys) < 2:
        raise PermissionDeniedError("Nodes cannot be moved to the catalog's root")
    to = join(*keys)
    if covers(node.path, to):
        raise InvalidRequestError(f"{node.path!r} cannot be moved into itself")
    if request.revision is not None and request.revision != node.revision:
        raise _stale(node.path, node.revision)
    # Locked like a create's parent: it cannot move or go away under the node.
    target = await resolve(session, viewer, parent_of(to), lock="child")
    require(viewer, target, WRITE)
    parent = target.node
    if parent.structure_family != CONTAINER:
        raise ConflictError(f"{parent.path!r} is not a container")
    _check_move_grants(viewer, view, target)
    # The deepest node below must stay within the limits.
    subtree = await _lock_subtree(session, node.path)
    deepest = max((depth for depth, _ in subtree), default=node.depth)
    longest = max((length for _, length in subtree), default=len(node.path))
    depth_change = parent.depth + 1 - node.depth
    if deepest + depth_change > MAX_DEPTH or longest - len(node.path) + len(to) > MAX_PATH_LENGTH:
        raise InvalidRequestError(
            f"Invalid path: a path is at most {MAX_PATH_LENGTH} characters and {MAX_DEPTH} keys"
        )
    if await session.scalar(select(exists().where(Node.path == to))):
        raise ConflictError(f"{to!r} exists already")
    old_path, old_parent, read_at = node.path, node.parent_id, node.revision
    await events.record(work, catalog.wakeups, old_parent, EventKind.DELETED, node)
    new_key = keys[-1]
    # The subtree first (the node's own path with it), then the node itself, guarded. Each
    # statement sees what committed before it began: a child created below a node that no
    # statement so far saw (its parent was created while the subtree was being locked) is
    # moved by the next one, which repeats until none is left at the old path.
    moved = {
        Node.path: to + func.substr(Node.path, len(old_path) + 1),
        Node.depth: Node.depth + depth_change,
        Node.namespace: parent.namespace,
    }
    try:
        while True:
            result = await session.execute(
                update(Node)
                .where(in_subtree(Node.path, old_path))
                .values(moved)
                .execution_options(synchronize_session=False)
            )
            if not getattr(result, "rowcount", 0):
                break
        await session.execute(
            update(NodeShare)
            .where(in_subtree(NodeShare.path, old_path))
            .values({NodeShare.path: to + func.substr(NodeShare.path, len(old_path) + 1)})
            .execution_options(synchronize_session=False)
        )
    except IntegrityError:
        raise ConflictError(f"{to!r} exists already") from None
    if not await _bump(session, node, read_at, {Node.key: new_key, Node.parent_id: parent.id}):
        raise _stale(old_path, node.revision)
    await events.record(work, catalog.wakeups, parent.id, EventKind.CREATED, node)
    shares = await shares_covering(session, [node.path])
    return view_of(viewer, node, shares)


async def delete_node(
    work: UnitOfWork,
    catalog: CatalogState,
    viewer: Viewer,
    path: str,
    *,
    recursive: bool = False,
    revision: int | None = None,
) -> None:
    """Delete the node at ``path`` (the caller needs ``write`` on it); a container with
    children only when ``recursive`` (:class:`NotEmptyError` otherwise), with all of them.
    The data of the deleted data nodes goes once the delete commits
    (:attr:`~.state.CatalogState.remove_data`)."""
    session = work.session
    await work.begin_write()
    view = await resolve(session, viewer, path, lock="update")
    require(viewer, view, WRITE)
    node = view.node
    if node.parent_id is None:
        raise PermissionDeniedError(
            "A namespace's root node cannot be deleted (it goes with its user or organization)"
        )
    if revision is not None and revision != node.revision:
        raise _stale(node.path, node.revision)
    # Checked once the node is locked: a create in it has committed (and is seen) or waits
    # (and finds no parent).
    if not recursive and await session.scalar(select(exists().where(Node.parent_id == node.id))):
        raise NotEmptyError(
            f"{node.path!r} has children: delete them first, or delete it recursively"
        )
    if recursive:
        await _lock_subtree(session, node.path)
    await events.record(work, catalog.wakeups, node.parent_id, EventKind.DELETED, node)
    remove_data = catalog.remove_data
    if remove_data is not None:
        data_nodes = list(
            await session.scalars(
                select(Node.id).where(
                    in_subtree(Node.path, node.path), Node.structure_family != CONTAINER
                )
            )
        )
        if data_nodes:
            work.after_commit(lambda: remove_data(data_nodes))
    # Children before parents (no reliance on the foreign keys' cascade); shares and events
    # go with their nodes. (A child created below a node the lock did not see, see
    # move_node, goes by the cascade.)
    subtree = select(Node.id).where(in_subtree(Node.path, node.path)).scalar_subquery()
    await session.execute(
        delete(NodeShare)
        .where(NodeShare.node_id.in_(subtree))
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(CatalogEvent)
        .where(CatalogEvent.container_id.in_(subtree))
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(
        delete(Node)
        .where(in_subtree(Node.path, node.path))
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        raise NodeNotFoundError(node.path)  # deleted concurrently
    session.expunge(node)


async def _share_target(session: AsyncSession, viewer: Viewer, path: str) -> NodeView:
    view = await resolve(session, viewer, path, lock="update")
    require(viewer, view, ADMIN)
    return view


async def _shared(
    work: UnitOfWork, catalog: CatalogState, viewer: Viewer, view: NodeView
) -> NodeView:
    """Bump the revision of a node whose shares changed, record it, and see it again."""
    session = work.session
    node = view.node
    await session.execute(
        update(Node)
        .where(Node.id == node.id)
        .values({Node.revision: Node.revision + 1, Node.updated_at: utcnow()})
        .execution_options(synchronize_session=False)
    )
    await session.refresh(node)
    await _announce_update(work, catalog, node)
    shares = await shares_covering(session, [node.path])
    return view_of(viewer, node, shares)


async def set_share(
    work: UnitOfWork, catalog: CatalogState, viewer: Viewer, path: str, request: ShareCreate
) -> NodeView:
    """Share the node at ``path`` with a namespace (the caller needs ``admin`` on it),
    replacing the actions of an earlier share with it."""
    session = work.session
    await work.begin_write()
    view = await _share_target(session, viewer, path)
    grantee = request.namespace
    if grantee == PUBLIC or not await session.scalar(
        select(exists().where(Namespace.name == grantee))
    ):
        raise NotFoundError(f"Namespace {grantee!r} not found")
    if grantee == view.node.namespace:
        raise InvalidRequestError(f"{view.node.path!r} belongs to {grantee!r} already")
    actions = format_actions(request.actions)
    existing = await session.get(NodeShare, (view.node.id, grantee))
    if existing is not None and existing.actions == actions:
        return view
    if existing is None:
        session.add(
            NodeShare(
                node_id=view.node.id,
                grantee=grantee,
                path=view.node.path,
                actions=actions,
                created_at=utcnow(),
            )
        )
    else:
        existing.actions = actions
    try:
        await session.flush()
    except IntegrityError:  # shared by a concurrent request meanwhile
        raise ConflictError(f"{view.node.path!r} is being shared concurrently: retry") from None
    return await _shared(work, catalog, viewer, view)


async def remove_share(
    work: UnitOfWork, catalog: CatalogState, viewer: Viewer, path: str, grantee: str
) -> NodeView:
    """Stop sharing the node at ``path`` with ``grantee`` (the caller needs ``admin`` on it);
    :class:`~..errors.NotFoundError` if it is not shared with it."""
    session = work.session
    await work.begin_write()
    view = await _share_target(session, viewer, path)
    if grantee == PUBLIC:
        raise InvalidRequestError("To make a node private again, use /catalog/public")
    result = await session.execute(
        delete(NodeShare)
        .where(NodeShare.node_id == view.node.id, NodeShare.grantee == grantee)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        raise NotFoundError(f"{view.node.path!r} is not shared with {grantee[:64]!r}")
    return await _shared(work, catalog, viewer, view)


async def set_public(
    work: UnitOfWork, catalog: CatalogState, viewer: Viewer, path: str, public: bool
) -> NodeView:
    """Make the node at ``path`` (and everything below it) readable by everyone, or no longer
    (the caller needs ``admin`` on it)."""
    session = work.session
    await work.begin_write()
    view = await _share_target(session, viewer, path)
    if view.public == public:
        return view
    if public:
        session.add(
            NodeShare(
                node_id=view.node.id,
                grantee=PUBLIC,
                path=view.node.path,
                actions=format_actions([READ]),
                created_at=utcnow(),
            )
        )
        try:
            await session.flush()
        except IntegrityError:
            raise ConflictError(f"{view.node.path!r} is being shared concurrently: retry") from None
    else:
        await session.execute(
            delete(NodeShare)
            .where(NodeShare.node_id == view.node.id, NodeShare.grantee == PUBLIC)
            .execution_options(synchronize_session=False)
        )
    return await _shared(work, catalog, viewer, view)
