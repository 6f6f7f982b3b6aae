"""What every block of a spec is built on: strict pydantic models that forbid unknown fields.

Its own module so the blocks can live in modules of their own (:mod:`.model_spec`,
:mod:`.spec`) without importing each other in a circle. No torch here, as in all of
:mod:`noisefa.engine.contract`.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(ge=1)]


class SpecModel(BaseModel):
    """Base for spec blocks: unknown fields are errors, so a typo never silently does nothing.

    Strict types, so a value means what it says: ``true`` or ``"16"`` is not a width, ``1``
    is not a boolean, ``"0.1"`` is not a learning rate (an integer is still a float).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    def canonical_json(self) -> str:
        """The normalised spec as JSON with sorted keys: equal specs give equal text
        (the service hashes it for idempotency)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
