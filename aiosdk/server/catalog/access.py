"""Who may do what on a catalog node, for one node (:func:`node_actions`) and in SQL, for
queries over many (:func:`visible`, :func:`permitted`).

A node's access is its namespace's grants (:class:`~..authorization.Caller`) and the shares on
the node and on every container above it: a share covers a whole subtree. A share with
:data:`~.models.PUBLIC` makes the subtree readable by everyone. Shares are read with each
request (one query), so a change of sharing is seen at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, String, and_, exists, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import coercions, roles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from ..authorization import ACTIONS, READ, Access, Caller, asset_actions, ordered
from .models import PUBLIC, Node, NodeShare
from .paths import ancestors

__all__ = [
    "ShareRow",
    "actions_of",
    "covering",
    "covers",
    "format_actions",
    "in_subtree",
    "node_actions",
    "parse_actions",
    "permitted",
    "share_covers",
    "shares_covering",
    "visible",
]

_IN_CHUNK = 2000  # bound parameters per IN (...): well under SQLite's and asyncpg's limits


@dataclass(frozen=True)
class ShareRow:
    """A share as access decisions need it."""

    node_id: str
    path: str
    grantee: str
    actions: frozenset[str]


def format_actions(actions: Iterable[str]) -> str:
    """``actions`` as stored: comma-separated, canonical order, always with ``read``."""
    return ",".join(ordered({READ, *actions}))


def parse_actions(stored: str) -> frozenset[str]:
    """The actions of a stored share."""
    return frozenset(action for action in stored.split(",") if action in ACTIONS)


async def shares_covering(session: AsyncSession, paths: Iterable[str]) -> list[ShareRow]:
    """Every share on the nodes at ``paths`` and their ancestors."""
    wanted = sorted({ancestor for path in paths if path for ancestor in ancestors(path)})
    found: list[ShareRow] = []
    for start in range(0, len(wanted), _IN_CHUNK):
        rows = await session.execute(
            select(NodeShare.node_id, NodeShare.path, NodeShare.grantee, NodeShare.actions).where(
                NodeShare.path.in_(wanted[start : start + _IN_CHUNK])
            )
        )
        found.extend(ShareRow(n, p, g, parse_actions(a)) for n, p, g, a in rows)
    return found


def covers(root: str, path: str) -> bool:
    """Whether ``path`` is ``root`` or below it (what :func:`in_subtree` decides in SQL)."""
    return path == root or path.startswith(root + "/")


def covering(shares: Sequence[ShareRow], path: str) -> list[ShareRow]:
    """The shares among ``shares`` that cover the node at ``path``."""
    return [s for s in shares if covers(s.path, path)]


class _CodePoints(ColumnElement[str]):
    """A string compared by code point: ``COLLATE "C"`` on PostgreSQL (whose default collation
    may be a language's, in which ``/`` sorts anywhere), as is on SQLite (``BINARY``, UTF-8
    bytes: code-point order)."""

    inherit_cache = True
    type = String()
    _traverse_internals = [("element", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, element: Any) -> None:
        self.element = coercions.expect(roles.ExpressionElementRole, element)


@compiles(_CodePoints)
def _compile_code_points(element: _CodePoints, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.element, **kw)


@compiles(_CodePoints, "postgresql")
def _compile_code_points_pg(element: _CodePoints, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(element.element, **kw)}) COLLATE "C"'


def in_subtree(path: Any, root: Any) -> ColumnElement[bool]:
    """``path`` (a column) is ``root`` (a path, or a column of paths) or below it, in SQL.

    A range, not ``substr()``: ``path = root OR (path >= root || '/' AND path < root || '0')``
    (``0`` is the character after ``/``), which an index on ``path`` can serve. Compared by code
    point (:class:`_CodePoints`), the order in which the range is exactly the paths starting
    with ``root/``; on PostgreSQL an index serves it when it is in the ``"C"`` collation too.
    """
    column = _CodePoints(path)
    # Equality means the same in every (deterministic) collation: the default one's index
    # serves it.
    return or_(path == root, and_(column >= root + "/", column < root + "0"))


def actions_of(
    caller: Caller | None,
    namespace: str,
    shares: Iterable[ShareRow],
    *,
    allow_anonymous: bool,
) -> frozenset[str]:
    """What ``caller`` may do on a node of ``namespace`` covered by ``shares``."""
    public = False
    granted: dict[str, frozenset[str]] = {}
    for share in shares:
        if share.grantee == PUBLIC:
            public = True
        else:
            granted[share.grantee] = granted.get(share.grantee, frozenset()) | share.actions
    access = Access(owner_namespace=namespace, public=public, shares=granted)
    return asset_actions(caller, access, allow_anonymous=allow_anonymous)


async def node_actions(
    session: AsyncSession, caller: Caller | None, node: Node, *, allow_anonymous: bool
) -> tuple[frozenset[str], list[ShareRow]]:
    """What ``caller`` may do on ``node``, and the shares covering it (one query)."""
    shares = await shares_covering(session, [node.path])
    return actions_of(caller, node.namespace, shares, allow_anonymous=allow_anonymous), shares


def share_covers(share: type[NodeShare] = NodeShare) -> ColumnElement[bool]:
    """A share's path is the node's or one of its ancestors' (in SQL; see :func:`in_subtree`)."""
    return in_subtree(Node.path, share.path)


def _namespaces_with(caller: Caller, action: str) -> list[str]:
    return sorted(ns for ns, actions in caller.namespaces.items() if action in actions)


def visible(caller: Caller | None, *, allow_anonymous: bool) -> ColumnElement[bool]:
    """The nodes ``caller`` may read, as a condition on :class:`~.models.Node` (``true()`` for
    the admin token): in one of its namespaces, or covered by a share with one of them or
    with everyone."""
    return permitted(caller, READ, allow_anonymous=allow_anonymous)


def permitted(caller: Caller | None, action: str, *, allow_anonymous: bool) -> ColumnElement[bool]:
    """The nodes on which ``caller`` may do ``action``, as a condition on
    :class:`~.models.Node` (what :func:`actions_of` decides for one node, in SQL)."""
    if caller is None:
        if action != READ or not allow_anonymous:
            return false()
        return exists().where(NodeShare.grantee == PUBLIC, share_covers())
    if caller.read_only and action != READ:
        return false()
    if caller.is_admin:
        return true()
    # A share grants each member of its grantee what the share and the member's role allow:
    # the namespaces where the caller may do ``action`` are those a share must name.
    owned = grantees = _namespaces_with(caller, action)
    conditions: list[ColumnElement[bool]] = []
    if owned:
        conditions.append(Node.namespace.in_(owned))
    share_grantees: list[ColumnElement[bool]] = []
    if grantees:
        share_grantees.append(NodeShare.grantee.in_(grantees))
    if action == READ:
        share_grantees.append(NodeShare.grantee == PUBLIC)
    if share_grantees:
        share_condition = and_(or_(*share_grantees), share_covers())
        if action != READ:
            share_condition = and_(share_condition, NodeShare.actions.contains(action))
        conditions.append(exists().where(share_condition))
    return or_(*conditions) if conditions else false()
