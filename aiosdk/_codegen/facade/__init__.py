"""The parts of the sync facade generator (``aiosdk/_codegen/sync_facade.py`` runs them).

``source`` reads the async modules, ``classes`` finds what each twin must have, ``annotations``
spells types the sync way and converts values, ``render`` writes the generated modules.
"""

from .classes import Catalog
from .names import ASYNC_ONLY_MEMBERS, RENAMED_METHODS, SPECIAL
from .render import Renderer
from .source import GenerationError
from .spec import Facade, Target

__all__ = [
    "ASYNC_ONLY_MEMBERS",
    "RENAMED_METHODS",
    "SPECIAL",
    "Catalog",
    "Facade",
    "GenerationError",
    "Renderer",
    "Target",
]
