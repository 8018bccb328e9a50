"""Who may do what where: the one place that decides, for every route and gRPC method.

There are three actions, :data:`READ`, :data:`WRITE` and :data:`ADMIN`. A user may do all three
in their own namespace; in an organization's, what their role grants (:data:`ROLE_ACTIONS`). The
admin token may do everything everywhere. A token with the ``"read"`` scope is capped at
:data:`READ`, whatever its owner may do.

Every decision is a pure function of a :class:`Caller`: the principal, with the actions its
account may do in each of its namespaces. Namespaces are checked with :func:`actions_in` and
:func:`require`; assets with :func:`allowed`, over an :class:`Access` (who owns the asset,
whether it is public, which namespaces it is shared with for which actions). Anonymous callers
(``None``) may only read public assets, and only on a server that allows anonymous access.

A request gets its caller from :class:`Callers`, which keeps each account's namespaces in memory
(looking them up costs a query, :func:`caller_of`, which every authorized request would pay
otherwise). As with the principals of :mod:`.authenticator`, a change stays immediate: whatever
changes what a user may do (a membership added, removed or given another role, an organization
created, the user created, disabled or enabled) announces :meth:`Callers.changed` in its unit of
work, which drops the cached entry in this process before the change is answered, and in every
other process serving the database as soon as PostgreSQL delivers the notification (see
:mod:`.notify`). While notifications may be missed, nothing is cached. A token's scope is
applied on top of the cached grants, never cached into them.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .accounts.models import Membership, Organization, Role, User
from .auth import READ_SCOPE, Principal
from .errors import NotFoundError, PermissionDeniedError
from .notify import MISSED, Notifier
from .unit_of_work import UnitOfWork

__all__ = [
    "ACTIONS",
    "ADMIN",
    "ALL_ACTIONS",
    "NAMESPACES_CHANGED",
    "NO_ACTIONS",
    "READ",
    "READ_SCOPE",
    "ROLE_ACTIONS",
    "WRITE",
    "Access",
    "Caller",
    "Callers",
    "actions_in",
    "allowed",
    "asset_actions",
    "cap",
    "caller_of",
    "ordered",
    "require",
    "require_admin",
]

READ = "read"
WRITE = "write"
ADMIN = "admin"
ACTIONS = (READ, WRITE, ADMIN)
"""Every action, in their canonical order (the order answers list them in)."""
ALL_ACTIONS = frozenset(ACTIONS)
NO_ACTIONS: frozenset[str] = frozenset()
_READ_ONLY = frozenset({READ})

ROLE_ACTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        Role.OWNER: ALL_ACTIONS,
        Role.ADMIN: ALL_ACTIONS,
        Role.MEMBER: frozenset({READ, WRITE}),
        Role.READ_ONLY: _READ_ONLY,
    }
)
"""What each organization role may do in the organization's namespace."""


def ordered(actions: Iterable[str]) -> list[str]:
    """``actions`` in the canonical order of :data:`ACTIONS`."""
    present = set(actions)
    return [action for action in ACTIONS if action in present]


def cap(principal: Principal, actions: frozenset[str]) -> frozenset[str]:
    """``actions`` as far as ``principal``'s token scope lets it use them."""
    return actions & _READ_ONLY if principal.read_only else actions


def actions_in(caller: Caller | None, namespace: str) -> frozenset[str]:
    """What ``caller`` may do in ``namespace`` (a user's or an organization's).

    Its own namespace: everything; an organization's: what its role grants; the admin token:
    everything (even in a namespace that does not exist: the caller checks existence). A
    read-scoped token only reads; an anonymous caller (``None``) does nothing in a namespace.
    """
    if caller is None:
        return NO_ACTIONS
    granted = caller.granted(namespace)
    return granted & _READ_ONLY if caller.read_only else granted


def require(
    caller: Caller | None,
    namespace: str,
    action: str,
    *,
    not_found: str | None = None,
) -> frozenset[str]:
    """Check that ``caller`` may do ``action`` in ``namespace``; return all it may do there.

    Raises :class:`NotFoundError` (with ``not_found`` as its message) when the caller may not
    even read the namespace, so that a private name is indistinguishable from a missing one,
    and :class:`PermissionDeniedError` when it may read but not do ``action``.
    """
    if action not in ALL_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    granted = NO_ACTIONS if caller is None else caller.granted(namespace)
    if READ not in granted:
        raise NotFoundError(not_found or f"Namespace {namespace!r} not found")
    assert caller is not None
    actions = actions_in(caller, namespace)
    if action in actions:
        return actions
    if action in granted:
        raise PermissionDeniedError(
            f"This token is read-only: {action!r} on {namespace!r} is not allowed"
        )
    raise PermissionDeniedError(f"The {action!r} permission on {namespace!r} is required")


def require_admin(principal: Principal, action: str = READ) -> None:
    """Check that ``principal`` is the admin token (for :data:`READ`, even a read-scoped one);
    :class:`PermissionDeniedError` otherwise."""
    if not principal.is_admin:
        raise PermissionDeniedError("Only the admin token may do this")
    if action != READ and principal.read_only:
        raise PermissionDeniedError("This token is read-only")


@dataclass(frozen=True)
class Caller:
    """A principal, with what its account may do in each namespace it belongs to.

    Built once per request (by :meth:`Callers.caller`, or :func:`caller_of`), it lets
    :func:`require` and :func:`allowed` decide on any number of namespaces and assets without
    another query.
    """

    name: str
    is_admin: bool = False
    read_only: bool = False
    """Whether the token is read-scoped: capped at :data:`READ`."""
    namespaces: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Namespace -> the actions its account may do there, before the token's scope: its own
    namespace (all actions) and its organizations' (by role)."""

    def granted(self, namespace: str) -> frozenset[str]:
        """What the account may do in ``namespace``, before the token's scope."""
        if self.is_admin:
            return ALL_ACTIONS
        return self.namespaces.get(namespace, NO_ACTIONS)


async def caller_of(session: AsyncSession, principal: Principal) -> Caller:
    """The :class:`Caller` of ``principal``, as the database has it now, in one query (none for
    the admin token). Nothing is cached: see :meth:`Callers.caller` for that."""
    if principal.is_admin:
        return Caller(principal.name, is_admin=True, read_only=principal.read_only)
    namespaces = await _namespaces_of(session, principal.name)
    return Caller(principal.name, read_only=principal.read_only, namespaces=namespaces)


async def _namespaces_of(session: AsyncSession, username: str) -> Mapping[str, frozenset[str]]:
    """Namespace -> what the user ``username`` may do there, before any token's scope: its own
    namespace and its organizations'; nothing if it is no user, or a disabled one."""
    rows = await session.execute(
        select(User.id, Organization.name, Membership.role)
        .outerjoin(Membership, Membership.user_id == User.id)
        .outerjoin(Organization, Organization.id == Membership.organization_id)
        .where(User.username == username, User.disabled_at.is_(None))
    )
    namespaces: dict[str, frozenset[str]] = {}
    for _user_id, organization, role in rows:
        namespaces[username] = ALL_ACTIONS
        if organization is not None and role is not None:
            namespaces[organization] = ROLE_ACTIONS.get(role, NO_ACTIONS)
    return MappingProxyType(namespaces)


NAMESPACES_CHANGED = "namespaces_changed"
"""The notification channel of :meth:`Callers.changed`; the payload is the username."""

_CACHE_TTL = 60.0
_CACHE_SIZE = 10_000
_CHANGED_HERE = "aiosdk.namespaces_changed"
"""Key of a session's ``info``: the usernames the session's own (uncommitted) writes change."""


@dataclass(frozen=True)
class _Entry:
    namespaces: Mapping[str, frozenset[str]]
    cached_at: float


class Callers:
    """The :class:`Caller` of each request, with every account's namespaces cached in memory.

    Entries are kept by username for at most a minute, and dropped at once by :meth:`changed`
    (in every server process of a PostgreSQL database, through ``notifier``). Nothing is
    cached without a notifier, nor while it is not listening (notifications could be missed).
    """

    def __init__(self, notifier: Notifier | None = None) -> None:
        self._notifier = notifier
        self._cache: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._generation = 0  # bumped by every invalidation: a lookup racing one is not cached
        if notifier is not None:
            notifier.subscribe(NAMESPACES_CHANGED, self._on_changed)

    @property
    def caching(self) -> bool:
        """Whether entries may be served and kept now (a notifier, and it is listening)."""
        return self._notifier is not None and self._notifier.listening

    async def caller(self, session: AsyncSession, principal: Principal) -> Caller:
        """The :class:`Caller` of ``principal``: from memory, or looked up in ``session`` (one
        query, none for the admin token) and kept for the next requests."""
        if principal.is_admin:
            return Caller(principal.name, is_admin=True, read_only=principal.read_only)
        name = principal.name
        entry = self._cache.get(name) if self.caching else None
        if entry is not None and time.monotonic() - entry.cached_at < _CACHE_TTL:
            self._cache.move_to_end(name)
            namespaces = entry.namespaces
        else:
            generation = self._generation
            namespaces = await _namespaces_of(session, name)
            # Not what a change announced meanwhile may have made stale, nor what this session's
            # own writes show (they may yet roll back).
            if (
                generation == self._generation
                and self.caching
                and name not in session.info.get(_CHANGED_HERE, ())
            ):
                self._remember(name, _Entry(namespaces, time.monotonic()))
        return Caller(name, read_only=principal.read_only, namespaces=namespaces)

    def changed(self, work: UnitOfWork, username: str) -> None:
        """Announce, when ``work`` commits, that what ``username`` may do has changed (call it
        with the change, before any lookup in ``work``): its cached namespaces are dropped in
        every server process, and ``work``'s own lookups of it are never cached."""
        changed_here: set[str] = work.session.info.setdefault(_CHANGED_HERE, set())
        changed_here.add(username)
        if self._notifier is not None:
            self._notifier.publish(work, NAMESPACES_CHANGED, username)

    def _on_changed(self, username: str) -> None:
        self._generation += 1
        if username == MISSED:
            self._cache.clear()
        else:
            self._cache.pop(username, None)

    def _remember(self, name: str, entry: _Entry) -> None:
        self._cache[name] = entry
        self._cache.move_to_end(name)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)


@dataclass(frozen=True)
class Access:
    """Who may use an asset: its owner's namespace, whether it is public, and its shares."""

    owner_namespace: str
    public: bool = False
    """Whether every authenticated caller (and, where allowed, anonymous ones) may read it."""
    shares: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Namespace -> the actions it is shared for. A share with an organization gives each
    member what the share grants *and* their role allows (a read-only member of an
    organization an asset is shared read-write with only reads it)."""


def asset_actions(
    caller: Caller | None, access: Access, *, allow_anonymous: bool = False
) -> frozenset[str]:
    """Every action ``caller`` may do on the asset of ``access``."""
    if caller is None:
        return _READ_ONLY if access.public and allow_anonymous else NO_ACTIONS
    actions = caller.granted(access.owner_namespace)
    for namespace, shared in access.shares.items():
        actions |= shared & caller.granted(namespace)
    if access.public:
        actions |= _READ_ONLY
    return actions & _READ_ONLY if caller.read_only else actions


def allowed(
    caller: Caller | None, access: Access, action: str, *, allow_anonymous: bool = False
) -> bool:
    """Whether ``caller`` (``None``: anonymous) may do ``action`` on the asset of ``access``.

    ``allow_anonymous`` is the server's setting (``state.accounts.allow_anonymous``): without
    it, anonymous callers may do nothing, not even read public assets.
    """
    if action not in ALL_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return action in asset_actions(caller, access, allow_anonymous=allow_anonymous)
