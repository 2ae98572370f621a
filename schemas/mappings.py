"""Event mappings: meter a CloudEvent shape users already emit, declared, not coded.

An app that already reports usage as, say, the OpenMeter OpenAI example does
(``type: "openai"``, ``data: {prompt_tokens, completion_tokens, total_tokens,
model}``) should not have to change its code to be priced. A mapping says, for
one event ``type``, which usage it is and where each field is in ``data``, by
JSONPath, the way an OpenMeter meter definition does (``valueProperty``,
``aggregation``, ``groupBy``)::

    mappings:
      - event_type: openai
        usage: tokens                     # or units
        tokens:
          input_tokens: $.prompt_tokens
          output_tokens: $.completion_tokens
        group_by:
          provider: openai                # a literal (no leading '$')
          model: $.model

A mapped event becomes the native usage (``TokenUsage`` / ``UnitsUsage``) with
those fields, so it is validated, priced and stored exactly like the native
event; only its ``type`` column keeps what the app sent.

One engine for every reader: ``schemas.envelope.parse_event`` takes the loaded
``EventMappings``, and the gateway (its checks), the processor (its decode) and
replay all call it with the one object the shell built from
``METERLINE_EVENT_MAPPINGS`` (docs/gateway.md#event-mappings). Nothing here
reads the environment: a gateway and a processor given different mappings would
accept what the other dead-letters, so the object is passed in, never looked up.

The JSONPath syntax is jsonpath-ng's; a path that is only ``$.a.b`` (the common
case) is read with plain dict look-ups instead of jsonpath-ng's ``find``, which
costs ~10x more per event on the gateway's hot path. Both give the same answer:
the simple form is recognised from jsonpath-ng's own parse tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.jsonpath import Child, Fields, JSONPath, Root
from jsonpath_ng.parser import parse
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.errors import ConfigError
from schemas.problems import Problem
from schemas.usage import TOKEN_FIELDS, EventType, TokenUsage, UnitsUsage, UsageData

# group_by keys that are usage columns, per usage; any other key is kept in metadata.
DIMENSIONS = {
    "tokens": ("provider", "model", "feature", "user", "service_tier"),
    "units": ("provider", "model", "feature", "user"),
}
# Labels an event may leave out (a token price needs provider and model: those are not).
OPTIONAL = {
    "tokens": frozenset({"feature", "user", "service_tier"}),
    "units": frozenset(DIMENSIONS["units"]),
}
# OpenMeter's aggregations that meterline can meter per event. usage_meters sums
# events per window, so only additive ones hold: MAX, AVG, UNIQUE_COUNT or LATEST
# of a window cannot be rebuilt from per-event rows summed in any order.
AGGREGATIONS = ("SUM", "COUNT")
_NOT_ADDITIVE = ("AVG", "MIN", "MAX", "UNIQUE_COUNT", "LATEST")


class MappingError(ConfigError):
    """An event-mapping file or entry is invalid; the message names the file, entry and field."""


# --- the file's shape -----------------------------------------------------------------------


class MappingSpec(BaseModel):
    """One entry of the mappings file, as written (OpenMeter's camelCase names accepted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: str = Field(min_length=1, validation_alias=AliasChoices("event_type", "eventType"))
    name: str = Field("", validation_alias=AliasChoices("name", "slug"))
    description: str = ""
    usage: Literal["tokens", "units"] = "units"
    # tokens: each TokenUsage count from a path.
    tokens: dict[str, str] = Field(default_factory=dict)
    # units: quantity from value_property (SUM) or 1 per event (COUNT).
    unit: str = ""
    value_property: str | None = Field(
        None, validation_alias=AliasChoices("value_property", "valueProperty")
    )
    aggregation: str = "SUM"
    group_by: dict[str, str] = Field(
        default_factory=dict, validation_alias=AliasChoices("group_by", "groupBy")
    )
    # Value used when a path finds nothing (else the event is refused).
    defaults: dict[str, int | str] = Field(default_factory=dict)

    @field_validator("event_type")
    @classmethod
    def _not_native(cls, value: str) -> str:
        if value in {t.value for t in EventType}:
            raise ValueError(f"{value!r} is a native meterline type; it cannot be remapped")
        return value

    @field_validator("aggregation")
    @classmethod
    def _additive(cls, value: str) -> str:
        upper = value.upper()
        if upper in _NOT_ADDITIVE:
            raise ValueError(
                f"{value!r} cannot be metered per event: usage_meters sums events, so only "
                "SUM and COUNT are exact in every window"
            )
        if upper not in AGGREGATIONS:
            raise ValueError(f"{value!r} is not an aggregation; use SUM or COUNT")
        return upper

    @field_validator("tokens")
    @classmethod
    def _token_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for target in value:
            if target not in TOKEN_FIELDS:
                raise ValueError(f"{target!r} is not a token field; use {', '.join(TOKEN_FIELDS)}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> MappingSpec:
        if self.usage == "tokens":
            if not self.tokens:
                raise ValueError(
                    "a tokens mapping needs 'tokens' (e.g. input_tokens: $.prompt_tokens)"
                )
            for needed in ("provider", "model"):
                if needed not in self.group_by:
                    raise ValueError(
                        f"a tokens mapping needs group_by.{needed} (a path, or a literal "
                        f"such as provider: openai): prices are per provider and model"
                    )
            for name in ("unit", "value_property"):
                if getattr(self, name):
                    raise ValueError(f"{name!r} is for units mappings; tokens use 'tokens'")
        else:
            if self.tokens:
                raise ValueError("'tokens' is for usage: tokens mappings")
            if self.aggregation == "SUM" and not self.value_property:
                raise ValueError("aggregation SUM needs value_property (the path of the quantity)")
            if self.aggregation == "COUNT" and self.value_property:
                raise ValueError("aggregation COUNT counts events; drop value_property")
        return self


class MappingsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    builtins: bool = Field(True, description="Keep the built-in mappings (BUILTIN).")
    mappings: list[MappingSpec] = Field(default_factory=list)


# The shapes meterline meters out of the box. A file's entry for the same
# event_type replaces the built-in one; ``builtins: false`` drops them all.
BUILTIN: tuple[dict[str, Any], ...] = (
    {
        # The OpenMeter OpenAI example (openmeter.io, examples/ingest-openai-node):
        # OpenAI's own usage object, prompt_tokens already counting cached tokens
        # as meterline's input_tokens does. total_tokens is their sum: not read.
        "name": "openmeter-openai",
        "event_type": "openai",
        "usage": "tokens",
        "tokens": {"input_tokens": "$.prompt_tokens", "output_tokens": "$.completion_tokens"},
        "group_by": {"provider": "openai", "model": "$.model"},
    },
)


# --- compiled mappings ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where one field comes from: a JSONPath into ``data``, or a literal."""

    text: str  # as written: '$.usage.prompt_tokens' or 'openai'
    keys: tuple[str, ...] | None  # the plain-field fast path; None: use ``path``
    path: JSONPath | None  # None: a literal

    def find(self, data: dict[str, Any]) -> list[Any]:
        """Every value the path selects (the literal itself for a literal)."""
        if self.path is None:
            return [self.text]
        if self.keys is not None:
            value: Any = data
            for key in self.keys:
                if type(value) is not dict or key not in value:
                    return []
                value = value[key]
            return [value]
        return [match.value for match in self.path.find(data)]

    @property
    def field(self) -> str:
        """The problem field a client sees: ``data.prompt_tokens`` for ``$.prompt_tokens``."""
        if self.keys is not None:
            return ".".join(("data", *self.keys))
        return f"data {self.text}"


def compile_source(text: str) -> Source:
    """A path when it starts with '$' (parsed by jsonpath-ng now, not per event), else a literal."""
    if not text.startswith("$"):
        return Source(text, None, None)
    try:
        path = parse(text)
    except (JSONPathError, Exception) as exc:  # jsonpath-ng raises bare Exception for lexing
        raise ValueError(f"{text!r} is not a JSONPath: {exc}") from None
    return Source(text, _plain_keys(path), path)


def _plain_keys(path: JSONPath) -> tuple[str, ...] | None:
    """('a', 'b') for ``$.a.b`` (a chain of single fields from the root), else None."""
    keys: list[str] = []
    node = path
    while isinstance(node, Child):
        right = node.right
        if type(right) is not Fields or len(right.fields) != 1 or right.fields[0] == "*":
            return None
        keys.append(right.fields[0])
        node = node.left
    return tuple(reversed(keys)) if isinstance(node, Root) and keys else None


@dataclass(frozen=True, slots=True)
class EventMapping:
    """One compiled mapping: ``apply(data)`` is the usage, or the problems with it."""

    name: str
    event_type: str
    usage: Literal["tokens", "units"]
    origin: str  # 'built-in' or the file it came from, for messages
    fields: tuple[tuple[str, Source], ...]  # (usage field, source): tokens and dimensions
    metadata: tuple[tuple[str, Source], ...]  # other group_by keys
    quantity: Source | None  # units with SUM
    unit: Source | None  # units
    defaults: Mapping[str, int | str]
    optional: frozenset[str]  # fields an event may leave out

    def apply(self, data: Any) -> UsageData | list[Problem]:
        if type(data) is not dict:
            return [
                Problem(
                    "not_an_object",
                    "data",
                    f"event mapping {self.name!r} reads usage from data: it must be a JSON object",
                )
            ]
        values: dict[str, Any] = {}
        where: dict[str, Source] = {}
        problems: list[Problem] = []
        for target, source in self.fields:
            found = self._one(target, source, data, problems, target in self.optional)
            if found is not _ABSENT:
                values[target] = _count(found) if target in TOKEN_FIELDS else found
                where[target] = source
        metadata: dict[str, Any] = {}
        for key, source in self.metadata:
            found = self._one(key, source, data, problems, True)
            if found is not _ABSENT:
                metadata[key] = found if type(found) is str else _label(found)
        if metadata:
            values["metadata"] = metadata
        if self.unit is not None:  # units
            unit = self._one("unit", self.unit, data, problems)
            if unit is not _ABSENT:
                values["unit"], where["unit"] = unit, self.unit
            if self.quantity is not None:
                quantity = self._one("quantity", self.quantity, data, problems)
                if quantity is not _ABSENT:
                    values["quantity"], where["quantity"] = quantity, self.quantity
            else:
                values["quantity"] = Decimal(1)
        if problems:
            return problems
        model = TokenUsage if self.usage == "tokens" else UnitsUsage
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            return [self._problem(err, where) for err in exc.errors(include_url=False)]

    def _one(
        self,
        target: str,
        source: Source,
        data: dict[str, Any],
        problems: list[Problem],
        optional: bool = False,
    ) -> Any:
        found = source.find(data)
        if len(found) == 1 and found[0] is not None:
            return found[0]
        if len(found) > 1:
            problems.append(
                Problem(
                    "ambiguous",
                    source.field,
                    f"{source.text} selects {len(found)} values; event mapping "
                    f"{self.name!r} needs exactly one for {target}",
                )
            )
            return _ABSENT
        if target in self.defaults:
            return self.defaults[target]
        if optional:
            return _ABSENT  # a label the event may leave out
        problems.append(
            Problem(
                "missing",
                source.field,
                f"event mapping {self.name!r} ({self.origin}) reads {target} from "
                f"{source.text}: not in this event",
            )
        )
        return _ABSENT

    def _problem(self, err: Any, where: Mapping[str, Source]) -> Problem:
        target = str(err["loc"][0]) if err["loc"] else ""
        source = where.get(target)
        message = err["msg"].removeprefix("Value error, ")
        if source is None:  # a rule across fields (cached tokens above input tokens)
            return Problem(err["type"], "data", f"{message} (event mapping {self.name!r})")
        return Problem(
            err["type"],
            source.field,
            f"{message} (event mapping {self.name!r} reads {target} from {source.text})",
        )


_ABSENT: Any = object()


def _count(value: Any) -> Any:
    """A token count: a JSON integer, or a string of digits (OpenMeter's docs send "123456").

    Anything else goes to the model unchanged, so its strict-int check names it;
    a float such as 12.0 is refused there rather than truncated into a bill.
    """
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 13:
        return int(value)
    return value


def _label(value: Any) -> Any:
    """A group_by value kept as a metadata label: scalars as their JSON text."""
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) in (int, float):
        return repr(value)
    return value  # objects and arrays: the metadata check refuses them, naming the key


class EventMappings:
    """The mappings in force, by event type: built once at start-up, passed to parse_event."""

    def __init__(self, mappings: Iterable[EventMapping] = ()) -> None:
        self._by_type: dict[str, EventMapping] = {m.event_type: m for m in mappings}

    def get(self, event_type: str) -> EventMapping | None:
        return self._by_type.get(event_type)

    def __iter__(self) -> Any:
        return iter(self._by_type.values())

    def __len__(self) -> int:
        return len(self._by_type)


def compile_mapping(spec: MappingSpec, origin: str) -> EventMapping:
    """Compile one validated entry; a bad path raises ValueError naming the field."""

    def source(field: str, text: str) -> Source:
        try:
            return compile_source(text)
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None

    name = spec.name or spec.event_type
    columns = DIMENSIONS[spec.usage]
    fields = [(t, source(f"tokens.{t}", p)) for t, p in spec.tokens.items()]
    fields += [(k, source(f"group_by.{k}", p)) for k, p in spec.group_by.items() if k in columns]
    metadata = [
        (k, source(f"group_by.{k}", p)) for k, p in spec.group_by.items() if k not in columns
    ]
    quantity = unit = None
    if spec.usage == "units":
        unit = source("unit", spec.unit or name)
        if spec.value_property is not None:
            quantity = source("value_property", spec.value_property)
            if quantity.path is None:
                raise ValueError(
                    f"value_property: {spec.value_property!r} must be a JSONPath ($.…)"
                )
    for target, text in spec.tokens.items():
        if not text.startswith("$"):
            raise ValueError(f"tokens.{target}: {text!r} must be a JSONPath ($.…)")
    return EventMapping(
        name,
        spec.event_type,
        spec.usage,
        origin,
        tuple(fields),
        tuple(metadata),
        quantity,
        unit,
        dict(spec.defaults),
        OPTIONAL[spec.usage],
    )


def builtin_mappings() -> EventMappings:
    """The built-in mappings alone (no file configured)."""
    return EventMappings(
        compile_mapping(MappingSpec.model_validate(spec), "built-in") for spec in BUILTIN
    )


def load_mappings(path: Path | None) -> EventMappings:
    """The built-ins plus the file's mappings (a file entry replaces a built-in of its type).

    Every problem is gathered and raised as one MappingError naming the file, the
    entry (index and event_type) and the field, so a bad file fails at start-up
    instead of metering events wrong once they arrive.
    """
    if path is None:
        return builtin_mappings()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"METERLINE_EVENT_MAPPINGS: cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise MappingError(f"{path}: must be a mapping with a 'mappings' list")
    problems: list[str] = []
    top = {k: v for k, v in raw.items() if k != "mappings"}
    try:
        file = MappingsFile.model_validate(top)
    except ValidationError as exc:
        problems += [f"{_loc(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
        file = MappingsFile(builtins=True)
    entries = raw.get("mappings") or []
    if not isinstance(entries, list):
        problems.append("mappings: must be a list of mappings")
        entries = []
    compiled: dict[str, EventMapping] = {}
    for index, entry in enumerate(entries):
        label = f"mappings[{index}]"
        if isinstance(entry, dict):
            event_type = entry.get("event_type", entry.get("eventType"))
            if isinstance(event_type, str):
                label += f" (event_type {event_type!r})"
        try:
            spec = MappingSpec.model_validate(entry)
            mapping = compile_mapping(spec, str(path))
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                message = err["msg"].removeprefix("Value error, ")
                problems.append(f"{label}: {_loc(err['loc']) or 'entry'}: {message}")
            continue
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if mapping.event_type in compiled:
            problems.append(
                f"{label}: event_type {mapping.event_type!r} is mapped twice: one event is "
                "one usage, so each type has at most one mapping"
            )
            continue
        compiled[mapping.event_type] = mapping
    if problems:
        raise MappingError(f"{path}: " + "; ".join(problems))
    mappings = {m.event_type: m for m in builtin_mappings()} if file.builtins else {}
    mappings.update(compiled)
    return EventMappings(mappings.values())


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)
