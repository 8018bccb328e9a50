"""The bytes of the data nodes (arrays, tables, sparse arrays) and their structures.

:data:`STRUCTURE_VALIDATORS` maps each data family to the function that checks and normalises
a node's ``structure`` when the node is created (see
:attr:`~aiosdk.server.catalog.state.CatalogState.structures`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import sparse, tables
from .structures import validate_array_structure

__all__ = ["STRUCTURE_VALIDATORS"]

STRUCTURE_VALIDATORS: Mapping[str, Callable[[dict[str, Any] | None], dict[str, Any]]] = {
    "array": validate_array_structure,
    "table": tables.validate_structure,
    "sparse": sparse.validate_structure,
}
"""Structure family → its structure validator."""
