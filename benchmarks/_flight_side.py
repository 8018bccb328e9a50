"""The Arrow Flight server of benchmarks/bench_data.py: one table, served from memory.

    python _flight_side.py TABLE.arrow

Loads the Arrow IPC file TABLE.arrow (written by bench_data.py, the same table aiosdk and Tiled
serve) into memory as one contiguous table, listens on ``grpc://127.0.0.1:<free port>`` and prints
that location as its first line on stdout. A ``do_get`` ticket is the number of record batches to
send, as ASCII (``b"16"``): the table is cut into that many batches of equal row counts (zero-copy
slices of the in-memory columns, so every layout streams the same bytes). Runs until SIGINT or
SIGTERM. bench_data.py starts it pinned to the server core and measures
``do_get(ticket).read_all()`` from its own process.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as flight


def batch_layout(rows: int, batches: int) -> list[int]:
    """Row counts of ``batches`` batches of (almost) equal size covering ``rows`` rows."""
    base, extra = divmod(rows, batches)
    return [base + (1 if i < extra else 0) for i in range(batches)]


def cut(table: pa.Table, batches: int) -> Iterator[pa.RecordBatch]:
    offset = 0
    for count in batch_layout(table.num_rows, batches):
        yield from table.slice(offset, count).to_batches()
        offset += count


class TableServer(flight.FlightServerBase):  # type: ignore[misc]
    """Serves one in-memory table; the ticket says how many batches to cut it into."""

    def __init__(self, table: pa.Table) -> None:
        super().__init__("grpc://127.0.0.1:0")
        self._table = table

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.RecordBatchStream:
        batches = int(ticket.ticket.decode())
        if not 1 <= batches <= self._table.num_rows:
            raise flight.FlightServerError(f"cannot cut {self._table.num_rows} rows in {batches}")
        reader = pa.RecordBatchReader.from_batches(self._table.schema, cut(self._table, batches))
        return flight.RecordBatchStream(reader)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with pa.memory_map(argv[0]) as source:
        table = pa.ipc.open_file(source).read_all().combine_chunks()  # copied into memory
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before the server starts its threads
    server = TableServer(table)
    print(f"grpc://127.0.0.1:{server.port}", flush=True)
    signal.sigwait(stop)  # the server answers from its own threads meanwhile
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
