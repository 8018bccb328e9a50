"""The catalog: containers and assets, their metadata, queries, listings, and watching."""

from .containers import AsyncContainer
from .metadata import build_metadata_patches
from .nodes import AsyncNode, Share
from .queries import (
    ASCENDING,
    DESCENDING,
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
    Specs,
    StructureFamily,
)
from .views import AsyncContainerItems, AsyncContainerKeys, AsyncContainerValues
from .watch import CatalogEvent

__all__ = [
    "ASCENDING",
    "DESCENDING",
    "AsyncContainer",
    "AsyncContainerItems",
    "AsyncContainerKeys",
    "AsyncNode",
    "AsyncContainerValues",
    "CatalogEvent",
    "Comparison",
    "Contains",
    "Eq",
    "FullText",
    "In",
    "Key",
    "KeyPresent",
    "Like",
    "NotEq",
    "NotIn",
    "Query",
    "Regex",
    "Share",
    "Specs",
    "StructureFamily",
    "build_metadata_patches",
]
