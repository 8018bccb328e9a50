"""Arrow tables as pandas DataFrames, numeric columns without a copy.

A table read from the server is decoded in place from the one buffer its body was received
into, which belongs to that read alone (see :class:`~aiosdk.catalog.tables.fetch_arrow`).
pyarrow's ``to_pandas`` copies every column, or, asked not to, hands out read-only arrays (a
frame that refuses ``df.iloc[0, 0] = 1``). Here each numeric column without nulls becomes a
writable numpy view of that buffer, and pyarrow converts the rest (the index, strings,
timestamps, categoricals, booleans, columns with nulls or a pandas extension type), so the frame
is what ``to_pandas`` would give, as writable, for the cost of the other columns alone. A table
whose buffers are not such a receive buffer (bodies gathered from spans, say) is converted by
``to_pandas`` as usual.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

__all__ = ["to_pandas"]


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table.to_pandas()``, with the numeric columns of a table decoded from a writable
    buffer as views of that buffer (see the module's docstring)."""
    views = _writable_views(table)
    if not views:
        return table.to_pandas()
    import pandas as pd

    names = table.column_names
    rest = table.drop_columns([names[i] for i in views])
    frame = rest.to_pandas()  # the index and the other columns, as pyarrow restores them
    labels = table.slice(0, 0).to_pandas().columns  # every column's label, in order
    index_fields = _index_fields(table)
    columns: list[Any] = []
    remaining = 0
    for i, name in enumerate(names):
        if name in index_fields:
            continue
        if i in views:
            columns.append(views[i])
        else:
            columns.append(frame.iloc[:, remaining])
            remaining += 1
    result = pd.DataFrame(dict(enumerate(columns)), index=frame.index, copy=False)
    result.columns = labels
    result.attrs = frame.attrs
    return result


def _index_fields(table: pa.Table) -> set[str]:
    metadata = table.schema.pandas_metadata or {}
    return {name for name in metadata.get("index_columns", ()) if isinstance(name, str)}


def _pandas_types(table: pa.Table) -> dict[str, str]:
    metadata = table.schema.pandas_metadata or {}
    return {
        str(column.get("field_name", column.get("name"))): str(column.get("numpy_type"))
        for column in metadata.get("columns", ())
    }


def _writable_views(table: pa.Table) -> dict[int, np.ndarray[Any, Any]]:
    """The numpy views, by column number, of the columns that can be one."""
    import numpy as np
    import pyarrow as pa

    names = table.column_names
    if max(Counter(names).values(), default=1) > 1:
        return {}  # duplicate names: leave them all to pyarrow
    index_fields = _index_fields(table)
    pandas_types = _pandas_types(table)
    views: dict[int, np.ndarray[Any, Any]] = {}
    for i, (name, column) in enumerate(zip(names, table.columns, strict=True)):
        kind = column.type
        if name in index_fields or column.num_chunks != 1 or column.null_count:
            continue
        if not (pa.types.is_integer(kind) or kind in (pa.float32(), pa.float64())):
            continue
        dtype = np.dtype(kind.to_pandas_dtype())
        if pandas_types.get(name, dtype.name) != dtype.name:
            continue  # a pandas extension type (Int64...) that pyarrow restores
        view = _view(column.chunk(0), dtype)
        if view is not None:
            views[i] = view
    return views


def _view(chunk: pa.Array, dtype: np.dtype[Any]) -> np.ndarray[Any, Any] | None:
    """``chunk``'s values as a writable view of the mutable buffer they lie in, if any."""
    data = chunk.buffers()[1]
    root = data
    while root is not None and not root.is_mutable:
        root = root.parent
    if root is None:
        return None
    offset = data.address - root.address + chunk.offset * dtype.itemsize
    import numpy as np

    return np.frombuffer(root, dtype=dtype, count=len(chunk), offset=offset)
