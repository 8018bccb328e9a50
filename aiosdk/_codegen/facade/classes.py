"""The async classes, analysed: the members each twin must have, and the twins' hierarchy."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field

from .names import ASYNC_CONTEXT_MANAGER_DECORATORS, IGNORED_DECORATORS, OVERLOADS, SPECIAL
from .source import GenerationError, Module, Sources
from .spec import Facade, Target

Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class Method:
    name: str
    module: Module
    defs: list[Function]  # the @overload signatures, then the implementation
    decorators: set[str]  # staticmethod, classmethod, asynccontextmanager


@dataclass
class Property:
    name: str
    module: Module
    getter: Function | None = None
    setter: Function | None = None
    annotation: ast.expr | None = None  # an attribute's annotation (no getter)


@dataclass
class ClassAttribute:
    name: str
    module: Module
    annotation: ast.expr | None


Member = Method | Property | ClassAttribute


@dataclass
class ClassInfo:
    facade: Facade
    module: Module
    node: ast.ClassDef
    facade_bases: list[tuple[Facade, ast.expr]] = field(default_factory=list)
    typevars: list[str] = field(default_factory=list)
    members: dict[str, Member] = field(default_factory=dict)
    init: tuple[Function, Module] | None = None  # an __init__ the twin must define itself


class Catalog:
    """Every facade a target knows (its own and those of the targets it uses), analysed."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.by_origin: dict[tuple[str, str], Facade] = {}
        self.packages: dict[Facade, str] = {}
        for facades, package in [(t.facades, t.package) for t in target.uses] + [
            (target.facades, target.package)
        ]:
            for facade in facades:
                self.by_origin[(facade.module, facade.name)] = facade
                self.packages[facade] = package
        self.sources = Sources([*target.roots, *(r for t in target.uses for r in t.roots)])
        for facade in self.by_origin.values():
            module = self.sources.module(facade.module)
            if module is None:
                raise GenerationError(f"no source for module {facade.module}")
            module.classdef(facade.name)
        names = [f.sync_name for f in self.by_origin.values()]
        if len(set(names)) < len(names):
            raise GenerationError(f"two facades would have twins of the same name: {names}")
        self.classes = {facade: self._analyse(facade) for facade in self.by_origin.values()}

    def twin_module(self, facade: Facade) -> str:
        """The generated module that holds ``facade``'s twin."""
        return f"{self.packages[facade]}.{facade.output}"

    def constructible(self, info: ClassInfo) -> bool:
        bases = info.facade_bases
        return info.facade.constructible or any(
            self.constructible(self.classes[base]) for base, _ in bases
        )

    def depth(self, facade: Facade) -> int:
        bases = self.classes[facade].facade_bases
        return 1 + max((self.depth(base) for base, _ in bases), default=0)

    def _analyse(self, facade: Facade) -> ClassInfo:
        module = self.sources.module(facade.module)
        assert module is not None
        node = module.classdef(facade.name)
        info = ClassInfo(facade, module, node)
        for base in node.bases:
            root = base.value if isinstance(base, ast.Subscript) else base
            found = self._origin(module, root)
            if found in self.by_origin:
                info.facade_bases.append((self.by_origin[found], base))
            for name in ast.walk(base):  # Generic[T], AsyncPager[T]...: the twin's parameters
                if isinstance(name, ast.Name) and name.id in module.typevars:
                    info.typevars += [name.id] if name.id not in info.typevars else []
        self._collect(info, node, module)
        return info

    def _origin(self, module: Module, node: ast.expr) -> tuple[str, str] | None:
        return self.sources.origin(module, node.id) if isinstance(node, ast.Name) else None

    def _collect(self, info: ClassInfo, node: ast.ClassDef, module: Module) -> None:
        """The members ``node`` defines, then those of its non-facade bases in the source."""
        for statement in node.body:
            self._member(info, statement, module)
        for base in node.bases:
            root = base.value if isinstance(base, ast.Subscript) else base
            found = self._origin(module, root)
            qualname = self.sources.qualname(module, root) or ""
            if found in self.by_origin or qualname in {"typing.Generic", "typing.Protocol"}:
                continue
            origin = self.sources.module(found[0]) if found else None
            mixin = origin.defined.get(found[1]) if origin and found else None
            if isinstance(mixin, ast.ClassDef) and origin is not None:
                self._collect(info, mixin, origin)
            elif qualname not in {"object", "abc.ABC"} and not qualname.startswith(
                "collections.abc."
            ):
                raise GenerationError(
                    f"{info.facade.name}: base {ast.unparse(base)} is neither a facade nor a "
                    "class whose source the generator can read"
                )

    def _member(self, info: ClassInfo, node: ast.stmt, module: Module) -> None:
        members = info.members
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == "__init__":
                if info.init is None:
                    info.init = (node, module)
                for attribute in self._init_attributes(node, module):
                    members.setdefault(attribute.name, attribute)
                return
            if not _public(node.name):
                return
            kinds = self._decorators(node, module, info)
            existing = members.get(node.name)
            if "setter" in kinds:
                if isinstance(existing, Property) and existing.module is module:
                    existing.setter = node
                return
            if "property" in kinds:
                if existing is None:
                    members[node.name] = Property(node.name, module, getter=node)
                return
            if (
                isinstance(existing, Method)
                and existing.module is module
                and (_is_overload(existing.defs[-1], module, self.sources))
            ):
                existing.defs.append(node)
            elif existing is None:
                members[node.name] = Method(node.name, module, [node], kinds)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, annotation = node.target.id, node.annotation
            if not _public(name) or name in members:
                return
            root = annotation.value if isinstance(annotation, ast.Subscript) else annotation
            if self.sources.qualname(module, root) == "typing.ClassVar":
                members[name] = ClassAttribute(name, module, annotation)
            else:
                members[name] = Property(name, module, annotation=annotation)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and _public(target.id):
                    members.setdefault(target.id, ClassAttribute(target.id, module, None))

    def _decorators(self, node: Function, module: Module, info: ClassInfo) -> set[str]:
        kinds: set[str] = set()
        for decorator in node.decorator_list:
            qualname = self.sources.qualname(module, decorator)
            if qualname in {"property", "functools.cached_property"}:
                kinds.add("property")
            elif qualname in {"staticmethod", "classmethod"}:
                kinds.add(qualname)
            elif qualname in ASYNC_CONTEXT_MANAGER_DECORATORS:
                kinds.add("asynccontextmanager")
            elif qualname in OVERLOADS | IGNORED_DECORATORS:
                pass
            elif (
                isinstance(decorator, ast.Attribute)
                and decorator.attr == "setter"
                and ast.unparse(decorator.value) == node.name
            ):
                kinds.add("setter")
            else:
                raise GenerationError(
                    f"{info.facade.name}.{node.name}: no twin for decorator "
                    f"@{ast.unparse(decorator)}"
                )
        return kinds

    def _init_attributes(self, init: Function, module: Module) -> Iterator[Property]:
        """Public attributes ``__init__`` sets on ``self``: the twin reads them as properties."""
        params = {a.arg: a.annotation for a in [*init.args.args, *init.args.kwonlyargs]}
        for node in ast.walk(init):
            targets: list[ast.expr] = []
            annotation = None
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets, annotation = [node.target], node.annotation
            for target in targets:
                if not (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                    and _public(target.attr)
                ):
                    continue
                value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
                if annotation is None and isinstance(value, ast.Name):
                    annotation = params.get(value.id)
                if annotation is None:
                    raise GenerationError(
                        f"{module.name}: annotate self.{target.attr} in __init__ (its twin "
                        "is a property and needs a type)"
                    )
                yield Property(target.attr, module, annotation=annotation)


def _public(name: str) -> bool:
    return not name.startswith("_") or name in SPECIAL


def _is_overload(fn: Function, module: Module, sources: Sources) -> bool:
    return any(sources.qualname(module, d) in OVERLOADS for d in fn.decorator_list)
