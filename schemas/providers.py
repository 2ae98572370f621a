"""Provider names as meterline stores them: one canonical id per provider.

``OPENAI``, ``OpenAI`` and ``openai`` are one provider; left as sent they became
three meter groups (three lines on an invoice, three price look-ups). Every
provider name is normalised by ``canonical_provider`` where it enters: the
usage models (``schemas.usage``) the gateway validates with and the processor
decodes with, and ``POST /api/usage``. One function, so the two ends cannot drift.

The rule (docs/gateway.md#provider-names):

1. surrounding whitespace is removed and the name is lower-cased;
2. a few other spellings of one provider map to the genai-prices id the price
   book uses (``ALIASES``): ``gemini``, ``vertex_ai`` -> ``google``, ``xai`` ->
   ``x-ai``... Only spellings genai-prices itself resolves to that provider are
   listed, so pricing is unchanged and only the grouping is.

Every other name is kept (lower-cased): a provider the catalog does not know is
metered under its own name, never rejected.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from schemas.limits import NO_CONTROL_PATTERN, NO_CONTROL_PATTERN_NON_EMPTY

ALIASES: dict[str, str] = {
    "gemini": "google",
    "google-gla": "google",  # pydantic-ai's Gemini API provider
    "google-vertex": "google",  # pydantic-ai's Vertex provider
    "vertex": "google",
    "vertex_ai": "google",  # LiteLLM
    "vertexai": "google",
    "xai": "x-ai",
    "together_ai": "together",
    "together-ai": "together",
    "bedrock": "aws",
    "amazon": "aws",
    "mistralai": "mistral",
}
# Names seen before -> their canonical id: most events repeat a handful of names,
# so the hot path is one dict look-up. Bounded: a client cannot grow it at will.
_SEEN: dict[str, str] = {}
_SEEN_MAX = 4096


def canonical_provider(name: str) -> str:
    """The canonical id of a provider name (``'  OpenAI '`` -> ``'openai'``)."""
    known = _SEEN.get(name)
    if known is not None:
        return known
    folded = name.strip().lower()
    canonical = ALIASES.get(folded, folded)
    if len(_SEEN) < _SEEN_MAX:
        _SEEN[name] = canonical
    return canonical


def _required(name: str) -> str:
    canonical = canonical_provider(name)
    if not canonical:
        raise ValueError("must not be blank")
    return canonical


# A required provider (token and image usage, POST /api/usage) and an optional one
# (custom units: '' = none).
ProviderName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        pattern=NO_CONTROL_PATTERN_NON_EMPTY,
        description="Provider id, normalised to the lower-case canonical id "
        "(genai-prices ids: openai, anthropic, google...).",
    ),
    AfterValidator(_required),
]
OptionalProviderName = Annotated[
    str, Field(max_length=256, pattern=NO_CONTROL_PATTERN), AfterValidator(canonical_provider)
]
