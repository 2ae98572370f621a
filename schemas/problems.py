"""A validation problem, the unit of every 400 answer and dead letter reason, and the
problem document (RFC 9457) every HTTP error answers with."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one event.

    ``index`` is the event's position in a batch (None for a single event),
    ``field`` a dotted path (``data.input_tokens``), ``code`` a stable
    machine-readable reason and ``message`` the human explanation.
    """

    # The descriptions are for the published JSON Schema (pydantic reads them);
    # a plain dataclass, because one is built per problem on the hot path.
    code: Annotated[str, Field(description="Stable, machine-readable.")]
    field: Annotated[str, Field(description="A dotted path, e.g. data.input_tokens.")]
    message: str
    index: Annotated[
        Annotated[int, Field(ge=0)] | None,
        Field(description="The event's position in a batch (absent for one event)."),
    ] = None

    def at(self, index: int | None) -> Problem:
        return Problem(self.code, self.field, self.message, index)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.index is None:
            del out["index"]
        return out


class ProblemDocument(BaseModel):
    """RFC 9457 problem details plus ``problems``, one entry per thing wrong.

    The JSON Schema of what ``ingest.problems.HTTPProblem`` renders; a test holds
    the two together. Other members may appear (RFC 9457 extension members), so
    clients ignore what they do not know.
    """

    type: Annotated[str, Field(json_schema_extra={"format": "uri"})]
    title: str
    status: int
    detail: str
    problems: list[Problem] = Field(default_factory=list)
