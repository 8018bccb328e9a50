"""The catalog: containers and assets, their metadata, queries, listings, and watching; the
data of arrays, tables, sparse arrays and datasets; copying between catalogs."""

from .arrays import AsyncArrayClient
from .containers import AsyncContainer
from .copy import copy
from .datasets import AsyncDatasetClient
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
from .sparse import COO, AsyncSparseClient
from .tables import AsyncTableClient
from .views import AsyncContainerItems, AsyncContainerKeys, AsyncContainerValues
from .watch import CatalogEvent

__all__ = [
    "ASCENDING",
    "COO",
    "DESCENDING",
    "AsyncArrayClient",
    "AsyncContainer",
    "AsyncContainerItems",
    "AsyncContainerKeys",
    "AsyncNode",
    "AsyncContainerValues",
    "AsyncDatasetClient",
    "AsyncSparseClient",
    "AsyncTableClient",
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
    "copy",
]
