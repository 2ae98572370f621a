"""Which price applies to a (provider, model) name.

Order (docs/pricing.md), first hit wins:

0. Azure deployments: a deployment name is configuration, not a model name,
   so ``azure_deployments`` rewrites it before anything else.
1. Exact: a local book model, then a catalog model's id or exact name. Exact
   comes first because dated snapshots are priced differently
   (``gpt-4o-2024-05-13`` is $5/M input, ``gpt-4o`` $2.50/M).
2. Aliases: the book's ``aliases`` and per-model ``aliases``.
3. Anchored regex: book ``match`` patterns (whole name), then the catalog's own
   patterns (prefix/regex clauses its maintainers wrote).
4. Normalisation, then steps 1-3 again on each normalised form, in this order:
   Bedrock region prefix (``us.``), Bedrock version suffix (``-v1:0``, ``:0``),
   Bedrock vendor prefix (``anthropic.``), Vertex ``@date``, date suffix.

No hit: the event is stored unpriced and counted. We never guess a price from
a similar name beyond these rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pricing.book import Book, BookModel
from pricing.catalog import Catalog, CatalogModel

_BEDROCK_REGION = re.compile(r"^(?:us|eu|apac|ap|ca|jp|au|us-gov|global)\.")
_BEDROCK_VERSION = re.compile(r"(?:-v\d+)?:\d+$")
_BEDROCK_VERSION_BARE = re.compile(r"-v\d+$")
_BEDROCK_VENDOR = re.compile(r"^(?:anthropic|meta|mistral|amazon|cohere|ai21|deepseek|openai)\.")
_VERTEX_AT = re.compile(r"@(?:\d{8}|\d{3}|latest|default)$")
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|20\d{6}|\d{4})$")


def normalised_forms(model: str) -> Iterator[str]:
    """Successively normalised forms of ``model`` (each differs from the one before)."""
    steps: tuple[Callable[[str], str], ...] = (
        lambda s: _BEDROCK_REGION.sub("", s),
        lambda s: _BEDROCK_VERSION_BARE.sub("", _BEDROCK_VERSION.sub("", s)),
        lambda s: _BEDROCK_VENDOR.sub("", s),
        lambda s: _VERTEX_AT.sub("", s),
        lambda s: _DATE_SUFFIX.sub("", s),
    )
    current = model
    for step in steps:
        changed = step(current)
        if changed and changed != current:
            current = changed
            yield current


@dataclass(frozen=True, slots=True)
class Match:
    """The outcome of matching a model name.

    ``book`` is the local model when the book matched; ``catalog`` the catalog
    model of the same name (used for times before the book model's first
    price period), or the match itself when the book did not match.
    ``how`` records the step (exact, alias, regex, catalog-pattern, normalised).
    """

    book: BookModel | None
    catalog: CatalogModel | None
    how: str

    @property
    def label(self) -> str:
        if self.book is not None:
            return f"{self.book.provider}/{self.book.model}"
        assert self.catalog is not None  # a Match always has one of the two
        return self.catalog.label


class Matcher:
    def __init__(self, book: Book, catalog: Catalog) -> None:
        self._catalog = catalog
        self._exact: dict[tuple[str, str], BookModel] = {}
        self._alias: dict[tuple[str, str], tuple[str, str]] = {}
        self._regex: list[tuple[str, re.Pattern[str], BookModel]] = []
        for model in book.models:
            provider = model.provider.lower()
            self._exact[(provider, model.model.lower())] = model
            for alias in model.aliases:
                self._alias[(provider, alias.lower())] = (provider, model.model.lower())
            if model.match is not None:
                self._regex.append((provider, re.compile(model.match, re.IGNORECASE), model))
        for name, target in book.aliases.items():
            src_provider, _, src_model = name.lower().partition("/")
            dst_provider, _, dst_model = target.lower().partition("/")
            self._alias[(src_provider, src_model)] = (dst_provider, dst_model)
        self._deployments = {k.lower(): v for k, v in book.azure_deployments.items()}

    def match(self, provider: str, model: str) -> Match | None:
        provider = provider.lower()
        name = model.lower()
        if provider.startswith("azure") and name in self._deployments:
            name = self._deployments[name].lower()
        found = self._steps(provider, name, "")
        if found is not None:
            return found
        for form in normalised_forms(name):
            found = self._steps(provider, form, "normalised ")
            if found is not None:
                return found
        return None

    def _steps(self, provider: str, name: str, prefix: str) -> Match | None:
        # Step 1. Exact: the book first (it overrides the catalog), then the catalog.
        book = self._exact.get((provider, name))
        if book is not None:
            return Match(book, self._catalog_for(provider, name), prefix + "exact")
        exact = self._catalog.exact(provider, name)
        if exact is not None:
            return Match(None, exact, prefix + "exact")
        # Step 2. Aliases (may point at a book model or at a catalog model).
        target = self._alias.get((provider, name))
        if target is not None:
            book = self._exact.get(target)
            if book is not None:
                return Match(book, self._catalog_for(*target), prefix + "alias")
            found = self._catalog.exact(*target) or self._catalog.pattern(*target)
            if found is not None:
                return Match(None, found, prefix + "alias")
        # Step 3. Anchored regex in the book, then the catalog's own patterns.
        for regex_provider, pattern, model in self._regex:
            if regex_provider == provider and pattern.fullmatch(name):
                return Match(model, self._catalog_for(provider, name), prefix + "regex")
        found = self._catalog.pattern(provider, name)
        if found is not None:
            return Match(None, found, prefix + "catalog-pattern")
        return None

    def _catalog_for(self, provider: str, name: str) -> CatalogModel | None:
        return self._catalog.exact(provider, name) or self._catalog.pattern(provider, name)
