"""Reading the async classes' source: what each module defines and imports (nothing is run)."""

from __future__ import annotations

import ast
import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class GenerationError(Exception):
    """The async source has a shape the generator cannot give a faithful twin."""


@dataclass(frozen=True)
class Imported:
    module: str
    attr: str | None  # None: ``import module``
    typing_only: bool  # imported under ``if TYPE_CHECKING:``


class Module:
    """One parsed source module: what it defines and what it imports, by local name."""

    def __init__(self, name: str, path: Path, is_package: bool) -> None:
        self.name = name
        self.path = path
        self.tree = ast.parse(path.read_text(), str(path))
        self.package = name if is_package else name.rpartition(".")[0]
        self.defined: dict[str, ast.stmt] = {}
        self.imports: dict[str, Imported] = {}
        self.typevars: set[str] = set()
        self._read(self.tree.body, typing_only=False)

    def _read(self, body: list[ast.stmt], typing_only: bool) -> None:
        for node in body:
            if isinstance(node, ast.If) and ast.unparse(node.test) in TYPE_CHECKING_TESTS:
                self._read(node.body, typing_only=True)
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                module = self._absolute(node)
                for alias in node.names:
                    local = alias.asname or alias.name
                    self.imports[local] = Imported(module, alias.name, typing_only)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.partition(".")[0]
                    module = alias.name if alias.asname else local
                    self.imports[local] = Imported(module, None, typing_only)
            elif isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                self.defined[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self.defined[target.id] = node
                        if isinstance(node.value, ast.Call) and _tail(node.value.func) in {
                            "TypeVar",
                            "ParamSpec",
                            "TypeVarTuple",
                        }:
                            self.typevars.add(target.id)

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = self.package.split(".")
        base = parts[: len(parts) - node.level + 1]
        return ".".join([*base, node.module] if node.module else base)

    def classdef(self, name: str) -> ast.ClassDef:
        node = self.defined.get(name)
        if not isinstance(node, ast.ClassDef):
            raise GenerationError(f"{self.name} defines no class {name}")
        return node


TYPE_CHECKING_TESTS = {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def _tail(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


class Sources:
    """The source modules under some roots, parsed on first use."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = roots
        self._modules: dict[str, Module | None] = {}

    def module(self, name: str) -> Module | None:
        if name not in self._modules:
            self._modules[name] = self._find(name)
        return self._modules[name]

    def _find(self, name: str) -> Module | None:
        relative = Path(*name.split("."))
        for root in self.roots:
            for path, is_package in (
                (root / relative.with_suffix(".py"), False),
                (root / relative / "__init__.py", True),
            ):
                if path.is_file():
                    return Module(name, path, is_package)
        return None

    def origin(self, module: Module, name: str) -> tuple[str, str] | None:
        """Where ``name`` as used in ``module`` is defined: (module, name); None for builtins."""
        for _ in range(20):  # re-exports, followed
            if name in module.defined:
                return module.name, name
            imported = module.imports.get(name)
            if imported is None:
                return None
            if imported.attr is None:
                return imported.module, ""
            target = self.module(imported.module)
            if target is None or (
                imported.attr not in target.defined and imported.attr not in target.imports
            ):
                return imported.module, imported.attr
            module, name = target, imported.attr
        raise GenerationError(f"cannot follow the imports of {name} in {module.name}")

    def qualname(self, module: Module, node: ast.expr) -> str | None:
        """``collections.abc.AsyncIterator`` for an annotation's root, however it was imported."""
        if isinstance(node, ast.Name):
            found = self.origin(module, node.id)
            if found is None:
                return node.id if hasattr(builtins, node.id) else None
            return f"{found[0]}.{found[1]}" if found[1] else found[0]
        if isinstance(node, ast.Attribute):
            base = self.qualname(module, node.value)
            return f"{base}.{node.attr}" if base else None
        return None
