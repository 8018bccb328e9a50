"""The whole schema: importing this module puts every table on ``Base.metadata``.

Each capability keeps its tables in its own folder; migrations and the server import them here.
"""

from .accounts import models as accounts_models
from .catalog import models as catalog_models
from .channels import models as channels_models
from .objects import models as objects_models
from .storage import models as storage_models
from .storage.models import Base
from .tickets import models as tickets_models

__all__ = [
    "Base",
    "accounts_models",
    "catalog_models",
    "channels_models",
    "objects_models",
    "storage_models",
    "tickets_models",
]
