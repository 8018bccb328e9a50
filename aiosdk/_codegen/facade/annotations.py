"""Annotations read against the facades: their sync spelling, and the conversions they call for."""

from __future__ import annotations

import ast
import builtins
from typing import TYPE_CHECKING

from .names import (
    ASYNC_CONTEXTS,
    ASYNC_ITERATORS,
    AWAITABLES,
    CONCRETE,
    MAPPINGS,
    OPAQUE,
    OPTIONALS,
    SELF,
    SEQUENCES,
    SETS,
    TRANSPARENT,
    TUPLES,
    UNIONS,
    Needs,
)
from .source import GenerationError, Module

if TYPE_CHECKING:
    from .classes import Catalog
    from .spec import Facade


class Types:
    """Annotations of one source module, read against the facades: renamed and converted."""

    def __init__(self, catalog: Catalog, module: Module, needs: Needs) -> None:
        self.catalog = catalog
        self.module = module
        self.needs = needs
        self._fresh = 0

    def qualname(self, node: ast.expr) -> str | None:
        return self.catalog.sources.qualname(self.module, node)

    def facade(self, node: ast.expr) -> Facade | None:
        """The facade an annotation's root names, if it names one."""
        if isinstance(node, ast.Name):
            found = self.catalog.sources.origin(self.module, node.id)
            return self.catalog.by_origin.get(found) if found else None
        return None

    def typevar(self, node: ast.expr) -> bool:
        if not isinstance(node, ast.Name):
            return False
        found = self.catalog.sources.origin(self.module, node.id)
        if found is None:
            return False
        origin = self.catalog.sources.module(found[0])
        return origin is not None and found[1] in origin.typevars

    def parse(self, node: ast.expr) -> ast.expr:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return self.parse(ast.parse(node.value, mode="eval").body)
        return node

    # The sync spelling of an annotation. `returned`: the value a call returns, where async
    # iterators, async context managers and awaitables have sync counterparts.

    def sync(self, node: ast.expr | None, *, returned: bool) -> str:
        return "" if node is None else ast.unparse(self._sync(node, returned=returned))

    def _sync(self, node: ast.expr, *, returned: bool) -> ast.expr:
        node = self.parse(node)
        root = node.value if isinstance(node, ast.Subscript) else node
        qualname = self.qualname(root)
        args = _args(node)
        async_only = ASYNC_ITERATORS | ASYNC_CONTEXTS | AWAITABLES
        if qualname in async_only and not returned:
            raise GenerationError(
                f"{ast.unparse(node)}: the sync twin cannot take an async-only argument"
            )
        if qualname in ASYNC_ITERATORS:
            return self._helper_subscript("Iterator", args[:1], returned)
        if qualname in ASYNC_CONTEXTS:
            return self._helper_subscript("AbstractContextManager", args[:1], returned)
        if qualname in AWAITABLES:
            return self._sync(args[-1], returned=returned)
        if isinstance(node, ast.Subscript):
            value = self._sync(node.value, returned=False)
            items = [self._sync(arg, returned=returned) for arg in args]
            slice_ = (
                items[0]
                if len(items) == 1 and not isinstance(node.slice, ast.Tuple)
                else (ast.Tuple(items, ast.Load()))
            )
            return ast.Subscript(value, slice_, ast.Load())
        if isinstance(node, ast.BinOp):
            return ast.BinOp(
                self._sync(node.left, returned=returned),
                node.op,
                self._sync(node.right, returned=returned),
            )
        if isinstance(node, ast.List):  # Callable[[A, B], R]
            return ast.List([self._sync(e, returned=returned) for e in node.elts], ast.Load())
        facade = self.facade(node)
        if facade is not None:
            self.needs.twins_typing.add(facade.sync_name)
            return ast.Name(facade.sync_name, ast.Load())
        self._use(node)
        return node

    def _helper_subscript(self, helper: str, args: list[ast.expr], returned: bool) -> ast.expr:
        self.needs.helpers.add(helper)
        if not args:
            return ast.Name(helper, ast.Load())
        return ast.Subscript(
            ast.Name(helper, ast.Load()), self._sync(args[0], returned=returned), ast.Load()
        )

    def _use(self, node: ast.expr, *, runtime: bool = False) -> None:
        for name in ast.walk(node):
            if isinstance(name, ast.Name) and not hasattr(builtins, name.id):
                self.needs.use(name.id, self.module, runtime=runtime)

    def expression(self, node: ast.expr, *, runtime: bool = True) -> str:
        """A source expression (a default value) as is, its names imported."""
        self._use(node, runtime=runtime)
        return ast.unparse(node)

    # Conversions of values: code that turns `value` (an async call's result) into what a sync
    # caller gets, or None when it needs no conversion.

    def fresh(self, stem: str) -> str:
        self._fresh += 1
        return f"{stem}_{self._fresh}"

    def to_sync(self, node: ast.expr | None, value: str, owner: str) -> str | None:
        """``owner``: how the calling twin names its own class (``type(self)`` or ``cls``)."""
        if node is None:
            return None
        node = self.parse(node)
        root = node.value if isinstance(node, ast.Subscript) else node
        qualname = self.qualname(root)
        args = _args(node)
        if isinstance(node, ast.BinOp) or qualname in UNIONS | OPTIONALS:
            return self._union_to_sync(node, self.arms(node), value, owner)
        if qualname in TRANSPARENT:
            return self.to_sync(args[0], value, owner)
        if qualname in SELF:
            return f"{owner}._wrap({value})"
        if self.facade(root) is not None:
            self.needs.helpers.add("twin")
            if not any(self._mentions_facade(arg) for arg in args):
                return f"twin({value})"
            # AsyncPager[AsyncNode] is a Pager[Node]: no overload of twin() can say so
            self.needs.helpers.add("cast")
            return f"cast({self.sync(node, returned=True)!r}, twin({value}))"
        if self.typevar(node) or qualname in OPAQUE:
            self.needs.helpers.add("sync_value")
            return f"sync_value({value})"
        if qualname in ASYNC_ITERATORS:
            self.needs.helpers.add("_portal")
            convert = self.function(args[0] if args else None, owner)
            return f"_portal.iterate({value}{', ' + convert if convert else ''})"
        if qualname in ASYNC_CONTEXTS:
            self.needs.helpers.add("_portal")
            convert = self.function(args[0] if args else None, owner)
            return f"_portal.context({value}{', ' + convert if convert else ''})"
        if qualname in AWAITABLES:
            self.needs.helpers.add("_portal")
            done = f"_portal.finished({value}).result()"
            return self.to_sync(args[-1], done, owner) or done
        if not args:
            return None
        if qualname in SEQUENCES | SETS | MAPPINGS | TUPLES:
            return self._container_to_sync(qualname, node, args, value, owner)
        if any(self._mentions_facade(arg) or self._mentions_typevar(arg) for arg in args):
            # A generic of ours around facade objects or type variables (``Page[T]``).
            self.needs.helpers.add("sync_value")
            if not self._mentions_facade(node):
                return f"sync_value({value})"
            self.needs.helpers.add("cast")
            return f"cast({self.sync(node, returned=True)!r}, sync_value({value}))"
        return None

    def _container_to_sync(
        self, qualname: str, node: ast.expr, args: list[ast.expr], value: str, owner: str
    ) -> str | None:
        item = self.fresh("item")
        if qualname in MAPPINGS:
            key, val = self.fresh("key"), self.fresh("value")
            keys = self.to_sync(args[0], key, owner)
            values = self.to_sync(args[1], val, owner)
            if keys is None and values is None:
                return None
            return f"{{{keys or key}: {values or val} for {key}, {val} in {value}.items()}}"
        if qualname in TUPLES and not (len(args) == 2 and _is_ellipsis(args[1])):
            parts = [self.to_sync(arg, f"{value}[{i}]", owner) for i, arg in enumerate(args)]
            if not any(parts):
                return None
            items = [part or f"{value}[{i}]" for i, part in enumerate(parts)]
            return f"({', '.join(items)}{',' if len(items) == 1 else ''})"
        inner = self.to_sync(args[0], item, owner)
        if inner is None:
            return None
        loop = f"{inner} for {item} in {value}"
        if qualname in TUPLES:
            return f"tuple({loop})"
        if qualname in SETS:
            return f"frozenset({loop})" if "rozen" in qualname else f"{{{loop}}}"
        return f"[{loop}]"

    def _union_to_sync(
        self, node: ast.expr, arms: list[ast.expr], value: str, owner: str
    ) -> str | None:
        none = [arm for arm in arms if _is_none(arm)]
        others = [arm for arm in arms if not _is_none(arm)]
        converted = [self.to_sync(arm, value, owner) for arm in others]
        if not any(converted):
            return None
        if len(others) == 1:
            return f"None if {value} is None else {converted[0]}" if none else converted[0]
        roots = [arm.value if isinstance(arm, ast.Subscript) else arm for arm in others]
        classes = [self.qualname(root) for root in roots]
        branches = []
        for code, root, cls in zip(converted, roots, classes, strict=True):
            if code is None:
                continue
            if classes.count(cls) > 1 or not (self.facade(root) or cls in CONCRETE):
                # No class to tell this arm apart by: convert at run time.
                self.needs.helpers.update({"cast", "sync_value"})
                return f"cast({self.sync(node, returned=True)!r}, sync_value({value}))"
            self._use(root, runtime=True)
            branches.append((ast.unparse(root), code))
        plain = len(branches) < len(others)
        chain = "" if plain else branches.pop()[1]
        for cls, code in reversed(branches):
            chain = f"{code} if isinstance({value}, {cls}) else {chain or value}"
        return f"None if {value} is None else {chain}" if none else chain

    def arms(self, node: ast.expr) -> list[ast.expr]:
        """The members of a union (``A | B``, ``Union[A, B]``, ``Optional[A]``), flattened."""
        node = self.parse(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return [*self.arms(node.left), *self.arms(node.right)]
        if isinstance(node, ast.Subscript):
            qualname = self.qualname(node.value)
            if qualname in UNIONS:
                return [arm for arg in _args(node) for arm in self.arms(arg)]
            if qualname in OPTIONALS:
                return [*self.arms(_args(node)[0]), ast.Constant(None)]
        return [node]

    def _mentions_typevar(self, node: ast.expr) -> bool:
        return any(self.typevar(n) for n in ast.walk(node) if isinstance(n, ast.expr))

    def _mentions_facade(self, node: ast.expr) -> bool:
        return any(self.facade(n) is not None for n in ast.walk(node) if isinstance(n, ast.Name))

    def function(self, node: ast.expr | None, owner: str) -> str | None:
        """A converter function for the items of an iterator (or a context's value)."""
        arg = self.fresh("item")
        code = self.to_sync(node, arg, owner)
        if code is None:
            return None
        for name in ("twin", "sync_value"):
            if code == f"{name}({arg})":
                return name
        return f"lambda {arg}: {code}"

    def to_async(self, node: ast.expr | None, value: str) -> str | None:
        """What a sync argument becomes for the async call (twins unwrapped), or None."""
        if node is None:
            return None
        node = self.parse(node)
        root = node.value if isinstance(node, ast.Subscript) else node
        qualname = self.qualname(root)
        args = _args(node)
        if isinstance(node, ast.BinOp) or qualname in UNIONS | OPTIONALS:
            arms = self.arms(node)
            if not any(self.to_async(arm, value) for arm in arms):
                return None
            if any(self.to_async(arm, value) not in (None, f"unwrap({value})") for arm in arms):
                raise GenerationError(f"{ast.unparse(node)}: unions of containers of facades")
            self.needs.helpers.update({"unwrap", "Twin"})
            return f"unwrap({value}) if isinstance({value}, Twin) else {value}"
        if qualname in TRANSPARENT:
            return self.to_async(args[0], value)
        if self.facade(root) is not None or qualname in OPAQUE:
            self.needs.helpers.add("unwrap")
            return f"unwrap({value})"
        if not args or qualname in SELF:
            return None
        if qualname in SEQUENCES | TUPLES | SETS:
            item = self.fresh("item")
            inner = self.to_async(args[0], item)
            return None if inner is None else f"[{inner} for {item} in {value}]"
        if qualname in MAPPINGS:
            key, val = self.fresh("key"), self.fresh("value")
            inner = self.to_async(args[1], val)
            return (
                None if inner is None else f"{{{key}: {inner} for {key}, {val} in {value}.items()}}"
            )
        if self._mentions_facade(node):
            raise GenerationError(f"{ast.unparse(node)}: the twin cannot pass this argument on")
        return None


def _args(node: ast.expr) -> list[ast.expr]:
    if not isinstance(node, ast.Subscript):
        return []
    return list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _is_ellipsis(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis
