"""The smallest valid ``structure`` of each data family, for the tests of the catalog (listings,
access, filters, events, views, the CLI) that make array, table or sparse nodes only as
entries of the catalog: the server refuses (422) a node of a data family without a valid
structure (see ``aiosdk.server.data.STRUCTURE_VALIDATORS``).

:func:`structure` is what a test sends (a fresh copy each call, so that no test changes
another's); :func:`stored` is the same structure as the server normalises and returns it.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pyarrow

__all__ = ["ARRAY", "SPARSE", "TABLE", "stored", "structure"]

ARRAY: dict[str, Any] = {"data_type": "<f8", "shape": [2, 2], "chunks": [2, 2]}
"""A 2 x 2 array of float64, one block."""
TABLE: dict[str, Any] = {
    "arrow_schema": base64.b64encode(
        pyarrow.schema([pyarrow.field("x", pyarrow.float64())]).serialize().to_pybytes()
    ).decode()
}
"""A table of one float64 column ``x``, no partitions."""
SPARSE: dict[str, Any] = {"data_type": "<f8", "shape": [2, 2]}
"""A 2 x 2 COO sparse array of float64, no entries."""

_SENT = {"array": ARRAY, "table": TABLE, "sparse": SPARSE}
_STORED = {
    "array": {**ARRAY, "dims": None, "fill_value": 0},
    "table": {**TABLE, "columns": ["x"], "npartitions": 0, "nrows": []},
    "sparse": {"layout": "COO", **SPARSE, "nnz": 0, "dims": None},
}


def structure(family: str = "array") -> dict[str, Any]:
    """A minimal valid structure of ``family`` (``array``, ``table`` or ``sparse``)."""
    return copy.deepcopy(_SENT[family])


def stored(family: str = "array") -> dict[str, Any]:
    """:func:`structure` of ``family`` as the server keeps and returns it."""
    return copy.deepcopy(_STORED[family])
