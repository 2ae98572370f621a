"""A validation problem, the unit of every 400 answer and dead letter reason."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one event.

    ``index`` is the event's position in a batch (None for a single event),
    ``field`` a dotted path (``data.input_tokens``), ``code`` a stable
    machine-readable reason and ``message`` the human explanation.
    """

    code: str
    field: str
    message: str
    index: int | None = None

    def at(self, index: int | None) -> Problem:
        return Problem(self.code, self.field, self.message, index)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.index is None:
            del out["index"]
        return out
