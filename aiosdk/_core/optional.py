"""Optional dependencies, imported when a feature first needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, feature: str, extra: str = "dataframe") -> ModuleType:
    """``module``, imported; :class:`~aiosdk.MissingDependencyError` naming ``extra`` if it is
    not installed (``feature`` says what needed it, e.g. ``"reading arrays"``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        raise MissingDependencyError(
            f"{feature} needs {top}, which is not installed: pip install 'aiosdk[{extra}]'"
        ) from exc
