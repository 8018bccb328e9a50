"""aiosdk: an async-first Python SDK for a data platform.

``AsyncClient`` is the async API; ``Client`` is its generated blocking twin. Both share one
connection pool per client, retry under a :class:`RetryMode`, and raise the errors below.
"""

from ._client import AsyncClient, ServerInfo
from ._core.cache import Cache, CacheError
from ._core.config import save_profile
from ._core.errors import (
    AiosdkError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    ConnectError,
    DeadlineExceededError,
    IdempotencyInProgressError,
    InternalServerError,
    InvalidTokenError,
    NodeNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
    ServiceUnavailableError,
    StatusError,
    TimeoutError,
    TransportError,
    UnprocessableEntityError,
    UnsupportedBackendError,
    WatchGapError,
)
from ._core.options import NOT_GIVEN, NotGiven, RequestOptions
from ._core.paging import AsyncPager, Page
from ._core.retry import RetryMode, RetryPolicy
from ._core.secrets import Secret
from ._sync import (
    Admin,
    Client,
    Container,
    ContainerItems,
    ContainerKeys,
    ContainerValues,
    Node,
    Pager,
    Tokens,
)
from ._version import __version__
from .accounts import (
    AsyncAdmin,
    AsyncTokens,
    Member,
    NewToken,
    Organization,
    OrganizationMembership,
    TokenInfo,
    User,
)
from .catalog import (
    ASCENDING,
    DESCENDING,
    AsyncContainer,
    AsyncContainerItems,
    AsyncContainerKeys,
    AsyncContainerValues,
    AsyncNode,
    CatalogEvent,
    Comparison,
    Contains,
    Eq,
    FullText,
    In,
    Key,
    KeyPresent,
    Like,
    NotEq,
    NotIn,
    Query,
    Regex,
    Share,
    Specs,
    StructureFamily,
    build_metadata_patches,
)
from .proto import ServerStatus

embedded = AsyncClient.embedded
"""Shorthand for :meth:`AsyncClient.embedded`: ``async with aiosdk.embedded() as client``."""

__all__ = [
    "ASCENDING",
    "DESCENDING",
    "NOT_GIVEN",
    "Admin",
    "AiosdkError",
    "AsyncAdmin",
    "AsyncClient",
    "AsyncContainer",
    "AsyncContainerItems",
    "AsyncContainerKeys",
    "AsyncContainerValues",
    "AsyncNode",
    "AsyncPager",
    "AsyncTokens",
    "AuthenticationError",
    "BadRequestError",
    "Cache",
    "CacheError",
    "CatalogEvent",
    "Client",
    "ClientClosedError",
    "Comparison",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "Container",
    "ContainerItems",
    "ContainerKeys",
    "ContainerValues",
    "Contains",
    "DeadlineExceededError",
    "Eq",
    "FullText",
    "IdempotencyInProgressError",
    "In",
    "InternalServerError",
    "InvalidTokenError",
    "Key",
    "KeyPresent",
    "Like",
    "Member",
    "NewToken",
    "Node",
    "NodeNotFoundError",
    "NotEq",
    "NotFoundError",
    "NotGiven",
    "NotIn",
    "Organization",
    "OrganizationMembership",
    "Page",
    "Pager",
    "PermissionDeniedError",
    "ProtocolError",
    "Query",
    "RateLimitError",
    "Regex",
    "RequestOptions",
    "RequestTooLargeError",
    "RetryMode",
    "RetryPolicy",
    "Secret",
    "ServerError",
    "ServerInfo",
    "ServerStatus",
    "ServiceUnavailableError",
    "Share",
    "Specs",
    "StatusError",
    "StructureFamily",
    "TimeoutError",
    "TokenInfo",
    "Tokens",
    "TransportError",
    "UnprocessableEntityError",
    "UnsupportedBackendError",
    "User",
    "WatchGapError",
    "__version__",
    "build_metadata_patches",
    "embedded",
    "save_profile",
]

# Public classes print as aiosdk.NotFoundError, not aiosdk._core.errors.NotFoundError (as httpx
# does). Wire messages keep their own module: betterproto2 finds them by it.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and not _obj.__module__.startswith("aiosdk.proto"):
        _obj.__module__ = __name__
del _name, _obj
