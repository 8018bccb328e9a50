"""The public surface is deliberate: this pins it."""

from __future__ import annotations

import traceback

import aiosdk

EXPECTED = [
    "ASCENDING", "COO", "DESCENDING", "NOT_GIVEN", "Admin", "AiosdkError", "Application",
    "ApplicationField", "ApplicationTicket", "ArrayClient", "AsyncAdmin", "AsyncArrayClient",
    "AsyncChannelConnection", "AsyncChannels", "AsyncClient", "AsyncContainer",
    "AsyncContainerItems", "AsyncContainerKeys", "AsyncContainerValues", "AsyncDatasetClient",
    "AsyncNode", "AsyncObjects", "AsyncPager", "AsyncPluginObject", "AsyncSession",
    "AsyncSparseClient", "AsyncTableClient", "AsyncTokens", "AuthenticationError",
    "BadRequestError", "BucketInfo", "Cache", "CacheError", "CatalogEvent", "ChannelConnection",
    "ChannelFullError", "ChannelMessage", "ChannelPosition", "Channels", "Client",
    "ClientClosedError", "Comparison", "ConfigurationError", "ConflictError", "ConnectError",
    "Container", "ContainerItems", "ContainerKeys", "ContainerValues", "Contains",
    "ContinuityLostError", "DatasetClient", "DeadlineExceededError", "Eq", "ExportChange",
    "ExportInfo", "ExportTicket", "FullText", "IdempotencyInProgressError", "In",
    "InternalServerError", "InvalidChannelIdError", "InvalidTokenError", "Key", "KeyPresent",
    "Like", "MalformedTicketError", "Member", "MessageTooLargeError", "MissingDependencyError",
    "NewToken", "Node", "NodeNotFoundError", "NotEq", "NotFoundError", "NotGiven", "NotIn",
    "ObjectInfo", "Objects", "Organization", "OrganizationMembership", "Page", "Pager",
    "PermissionDeniedError", "PluginObject", "PresenceEvent", "ProtocolError", "Query",
    "RateLimitError", "Regex", "RequestOptions", "RequestTooLargeError", "RetryMode",
    "RetryPolicy", "ScopeTicket", "Secret", "ServerError", "ServerInfo", "ServerObject",
    "ServerStatus", "ServiceUnavailableError", "Session", "SessionClosedError",
    "SessionExpiredError", "Share", "SharedTicket", "SparseClient", "Specs", "StatusError",
    "StructureFamily", "TableClient", "Ticket", "TimeoutError", "TokenInfo", "TokenTimedOutError",
    "Tokens", "TransportError", "UnprocessableEntityError", "UnsupportedBackendError", "User",
    "WatchGapError", "__version__", "build_metadata_patches", "copy", "embedded", "save_profile",
]  # fmt: skip


def test_exported_names_are_pinned_and_sorted() -> None:
    assert aiosdk.__all__ == EXPECTED
    assert aiosdk.__all__ == sorted(aiosdk.__all__, key=lambda n: (not n.isupper(), n))
    for name in aiosdk.__all__:
        assert getattr(aiosdk, name) is not None


def test_errors_form_one_hierarchy() -> None:
    for name in aiosdk.__all__:
        obj = getattr(aiosdk, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, aiosdk.AiosdkError), name
    assert issubclass(aiosdk.DeadlineExceededError, aiosdk.TimeoutError)
    assert issubclass(aiosdk.ServiceUnavailableError, aiosdk.ServerError)
    assert not issubclass(aiosdk.TimeoutError, TimeoutError)  # ours, not the builtin


def test_public_classes_print_with_the_public_module() -> None:
    assert repr(aiosdk.NotFoundError) == "<class 'aiosdk.NotFoundError'>"
    for name in aiosdk.__all__:
        obj = getattr(aiosdk, name)
        if isinstance(obj, type) and obj is not aiosdk.ServerStatus:
            assert obj.__module__ == "aiosdk", name
    error = aiosdk.NotFoundError("no such thing", status_code=404)
    printed = "".join(traceback.format_exception(error))
    assert "aiosdk.NotFoundError: no such thing" in printed
