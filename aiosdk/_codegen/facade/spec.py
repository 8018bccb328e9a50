"""What to generate: the async classes (facades) and the package their twins go to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Facade:
    """One async class and the sync module its twin goes to."""

    module: str  # the module that defines the async class, e.g. "aiosdk._client"
    name: str  # e.g. "AsyncClient"
    output: str  # the generated module's name, e.g. "client" (several twins may share one)
    constructible: bool = False  # users construct it themselves: generate __init__
    # A collections.abc class the twin also is, in sync names, e.g. "Mapping[str, Node]"
    abc: str | None = None

    @property
    def sync_name(self) -> str:
        return self.name.removeprefix("Async")


@dataclass(frozen=True)
class Target:
    """A set of facades and the package their twins are generated into."""

    facades: Sequence[Facade]
    package: str  # the generated package, e.g. "aiosdk._sync"
    roots: Sequence[Path]  # where the async modules' sources are found
    uses: Sequence[Target] = ()  # other targets whose twins these twins hand out
