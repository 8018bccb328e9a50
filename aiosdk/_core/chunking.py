"""How a run of positions along an axis falls into that axis's chunks, shared by the client
(which fetches the blocks a selection touches) and the server (which reads the chunks a
selection touches). Pure: no import of the client's or the server's code."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["chunk_runs"]


def chunk_runs(start: int, step: int, count: int, chunk: int) -> Iterator[tuple[int, int, int]]:
    """For the ``count`` positions ``start``, ``start + step``... (``step`` > 0) along an axis of
    chunks of ``chunk``: each chunk holding some of them, as (chunk index, first, end), the
    positions ``first`` to ``end`` (of the ``count``) that fall in it. One step per chunk
    touched: a step larger than a chunk skips chunks without visiting them."""
    position = 0
    while position < count:
        index = (start + position * step) // chunk
        end = min(count, -(-((index + 1) * chunk - start) // step))
        yield index, position, end
        position = end
