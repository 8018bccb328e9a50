"""The official grpcio client's stubs, built from our own ``.proto`` files, for tests that check
the server against a client nobody here wrote."""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from grpc_tools import protoc

__all__ = ["grpcio_stubs"]

PROTOS = Path(__file__).parents[2] / "aiosdk" / "proto" / "aiosdk" / "v1"


@contextlib.contextmanager
def grpcio_stubs(out: Path, *names: str) -> Iterator[dict[str, ModuleType]]:
    """grpcio's modules for ``names`` (e.g. ``"tokens"``: ``tokens_pb2`` and
    ``tokens_pb2_grpc``), compiled into ``out`` and importable as top-level modules while the
    context lasts (``aiosdk`` is the name of our own package)."""
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    arguments = [f"-I{PROTOS}", f"-I{well_known}", f"--python_out={out}"]
    arguments.append(f"--grpc_python_out={out}")
    sources = [str(PROTOS / f"{name}.proto") for name in names]
    assert protoc.main(["protoc", *arguments, *sources]) == 0
    modules = [f"{name}{suffix}" for name in names for suffix in ("_pb2", "_pb2_grpc")]
    sys.path.insert(0, str(out))
    try:
        yield {module: importlib.import_module(module) for module in modules}
    finally:
        sys.path.remove(str(out))
        for module in modules:
            sys.modules.pop(module, None)
