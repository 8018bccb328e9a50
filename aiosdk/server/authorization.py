"""Who may do what where: the one place that decides, for every route and gRPC method.

There are three actions, :data:`READ`, :data:`WRITE` and :data:`ADMIN`. A user may do all three
in their own namespace; in an organization's, what their role grants (:data:`ROLE_ACTIONS`). The
admin token may do everything everywhere. A token with the ``"read"`` scope is capped at
:data:`READ`, whatever its owner may do.

Namespaces are checked with :func:`actions_in` and :func:`require` (one query each). Assets are
checked with :func:`allowed`, a pure function over an :class:`Access` (who owns the asset, whether
it is public, which namespaces it is shared with for which actions) and a :class:`Caller` (the
principal with the actions it has in each of its namespaces, loaded once by :func:`caller_of`).
Anonymous callers (``None``) may only read public assets, and only on a server that allows
anonymous access.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .accounts.models import Membership, Organization, Role, User
from .auth import READ_SCOPE, Principal
from .errors import NotFoundError, PermissionDeniedError

__all__ = [
    "ACTIONS",
    "ADMIN",
    "ALL_ACTIONS",
    "NO_ACTIONS",
    "READ",
    "READ_SCOPE",
    "ROLE_ACTIONS",
    "WRITE",
    "Access",
    "Caller",
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


async def _granted(session: AsyncSession, principal: Principal, namespace: str) -> frozenset[str]:
    """What ``principal``'s account may do in ``namespace``, before its token's scope."""
    if principal.is_admin:
        return ALL_ACTIONS
    if namespace == principal.name:
        # Only a user owns the namespace of its name: a token whose owner is no (enabled) user
        # gets nothing, even if an organization of that name exists.
        user_id = await session.scalar(
            select(User.id).where(User.username == namespace, User.disabled_at.is_(None))
        )
        return NO_ACTIONS if user_id is None else ALL_ACTIONS
    role = await session.scalar(
        select(Membership.role)
        .join(Organization, Organization.id == Membership.organization_id)
        .join(User, User.id == Membership.user_id)
        .where(
            Organization.name == namespace,
            User.username == principal.name,
            User.disabled_at.is_(None),
        )
    )
    return NO_ACTIONS if role is None else ROLE_ACTIONS.get(role, NO_ACTIONS)


async def actions_in(
    session: AsyncSession, principal: Principal | None, namespace: str
) -> frozenset[str]:
    """What ``principal`` may do in ``namespace`` (a user's or an organization's).

    Its own namespace: everything; an organization's: what its role grants; the admin token:
    everything (even in a namespace that does not exist: the caller checks existence). A
    read-scoped token only reads; an anonymous caller (``None``) does nothing in a namespace.
    """
    if principal is None:
        return NO_ACTIONS
    return cap(principal, await _granted(session, principal, namespace))


async def require(
    session: AsyncSession,
    principal: Principal | None,
    namespace: str,
    action: str,
    *,
    not_found: str | None = None,
) -> frozenset[str]:
    """Check that ``principal`` may do ``action`` in ``namespace``; return all it may do there.

    Raises :class:`NotFoundError` (with ``not_found`` as its message) when the caller may not
    even read the namespace, so that a private name is indistinguishable from a missing one,
    and :class:`PermissionDeniedError` when it may read but not do ``action``.
    """
    if action not in ALL_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    granted = NO_ACTIONS if principal is None else await _granted(session, principal, namespace)
    if READ not in granted:
        raise NotFoundError(not_found or f"Namespace {namespace!r} not found")
    assert principal is not None
    actions = cap(principal, granted)
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

    Built once per request by :func:`caller_of`, it lets :func:`allowed` decide on any number
    of assets without another query.
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
    """The :class:`Caller` of ``principal``, in one query (none for the admin token)."""
    read_only = principal.read_only
    if principal.is_admin:
        return Caller(principal.name, is_admin=True, read_only=read_only)
    rows = await session.execute(
        select(User.id, Organization.name, Membership.role)
        .outerjoin(Membership, Membership.user_id == User.id)
        .outerjoin(Organization, Organization.id == Membership.organization_id)
        .where(User.username == principal.name, User.disabled_at.is_(None))
    )
    namespaces: dict[str, frozenset[str]] = {}
    for _user_id, organization, role in rows:
        namespaces[principal.name] = ALL_ACTIONS
        if organization is not None and role is not None:
            namespaces[organization] = ROLE_ACTIONS.get(role, NO_ACTIONS)
    return Caller(principal.name, read_only=read_only, namespaces=MappingProxyType(namespaces))


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
