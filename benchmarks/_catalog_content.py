"""What benchmarks/bench_catalog.py puts in both catalogs, and what it looks up.

Plain Python with no dependencies: imported by bench_catalog.py (aiosdk's environment) and by
_tiled_side.py (run by Tiled's own interpreter), so that both sides get the same content.
"""

from __future__ import annotations

import random
from typing import Any

NAMESPACE = "bench"
CONTAINER = "big"  # the container under test: "bench/big" on both sides
ENTRIES = 10_000
LOOKUPS = 200  # (b) and (c)
INDEX = 5_000  # (d) values()[INDEX]
THREADS = 16  # (c) Tiled's blocking client from a thread pool of this size
CONTAINER_METADATA: dict[str, Any] = {"pi": "bench", "purpose": "catalog benchmark"}
_COLORS = ("red", "green", "blue")


def entry_key(i: int) -> str:
    """Keys sort in creation order, so that index ``i`` is the same entry on both sides."""
    return f"e{i:05d}"


def entry_metadata(i: int) -> dict[str, Any]:
    """Small metadata (about 100 bytes of JSON)."""
    return {
        "color": _COLORS[i % 3],
        "i": i,
        "temperature": 20 + (i % 50) / 10,
        "sample": f"s{i % 100:02d}",
        "tags": ["raw"] if i % 2 else ["raw", "calibrated"],
    }


def lookup_keys(entries: int = ENTRIES, count: int = LOOKUPS, seed: int = 9) -> list[str]:
    """The keys that (b) and (c) look up, spread over the whole container."""
    return [entry_key(i) for i in random.Random(seed).sample(range(entries), count)]
