"""The CloudEvents 1.0 envelope, validated strictly, and ``parse_event``.

Why not the ``cloudevents`` SDK as validator: it invents missing ids and times,
accepts invalid extension names and non-URI sources (docs/design.md#cloudevents). A billing
system must refuse those: a made-up id defeats dedupe, a made-up time moves
usage into the wrong invoice.

Two views of the same rules:

- ``CloudEvent``, a pydantic model: the published JSON Schema and a validator
  for callers who want a model.
- ``check_envelope`` + ``Envelope``: the hot path of the gateway and the
  processor. It applies the same checks (the same helper functions) in plain
  Python, because a pydantic model costs ~5 µs per event and the gateway's
  budget at 50k events/s is 20 µs for everything. Its problem codes are the
  ones pydantic would report (``missing``, ``string_type``, ``literal_error``,
  ``value_error``...), so both views answer alike; a test holds them together
  on the conformance data.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.limits import (
    CONTROL,
    CONTROL_MESSAGE,
    EARLIEST_MS,
    LATEST_MS,
    MAX_DATA_DEPTH,
    NO_CONTROL_PATTERN,
    NO_CONTROL_PATTERN_NON_EMPTY,
    TIME_RANGE_MESSAGE,
    too_deep,
)
from schemas.problems import Problem
from schemas.times import parse_ms
from schemas.usage import USAGE_MODELS, UsageData, custom_units

if TYPE_CHECKING:  # a runtime import would make the SDK (base install) need jsonpath-ng
    from schemas.mappings import EventMappings

CONTEXT_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"}
)
# Members of the JSON form that are not extension attributes.
RESERVED = CONTEXT_ATTRIBUTES | {"data", "data_base64"}
_CONTROL = CONTROL
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
# RFC 3986 characters: unreserved, reserved and '%' (checked as pct-encoding below).
_URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
# RFC 2046 / RFC 9110 media type: type "/" subtype *( OWS ";" OWS name "=" value ).
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*$")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MEDIA_JSON = re.compile(r"^application/(?:[\w.+-]+\+)?json(?:\s*;.*)?$", re.IGNORECASE)


def _string(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _uri_reference(value: str) -> str:
    if not _URI_CHARS.match(value) or _BAD_PCT.search(value):
        raise ValueError("must be a URI-reference (RFC 3986): no spaces or illegal characters")
    head = value.split("/", 1)[0]
    if ":" in head and not _SCHEME.match(head.split(":", 1)[0]):
        raise ValueError("must be a URI-reference (RFC 3986): invalid scheme")
    return value


def _absolute_uri(value: str) -> str:
    _uri_reference(value)
    scheme, sep, _ = value.partition(":")
    if not sep or not _SCHEME.match(scheme):
        raise ValueError("must be an absolute URI with a scheme")
    return value


def _rfc3339_ms(value: str) -> int:
    """Check an RFC 3339 time and return it as epoch ms: parsed once, here.

    Bounded to what the meters can hold (schemas/limits.py): a time outside is
    refused here, so the gateway answers 400 and the processor dead-letters it.
    """
    if not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 timestamp such as 2025-01-31T12:00:00.123Z")
    try:
        moment = parse_ms(value)
    except ValueError as exc:
        raise ValueError(f"is not a real instant: {exc}") from None
    if not EARLIEST_MS <= moment < LATEST_MS:
        raise ValueError(TIME_RANGE_MESSAGE)
    return moment


def _rfc3339(value: str) -> str:
    _rfc3339_ms(value)
    return value


def _media_type(value: str) -> str:
    if not _MEDIA_TYPE.match(value):
        raise ValueError("must be an RFC 2046 media type such as application/json")
    return value


NonEmpty = Annotated[str, Field(min_length=1, strict=True), AfterValidator(_string)]


def _format(name: str) -> Any:
    """The JSON Schema ``format`` a validator checks (pydantic cannot see inside it)."""
    return Field(json_schema_extra={"format": name})


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in JSON format.

    Extension attributes are kept as extra fields: lowercase a-z0-9 names of at
    most 20 characters with string, boolean or 32-bit integer values. A null
    attribute means "unset", as the JSON format says.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: NonEmpty
    source: Annotated[NonEmpty, AfterValidator(_uri_reference), _format("uri-reference")]
    type: NonEmpty
    subject: NonEmpty | None = Field(None, description="The customer being metered.")
    time: Annotated[NonEmpty, AfterValidator(_rfc3339), _format("date-time")] | None = None
    datacontenttype: Annotated[NonEmpty, AfterValidator(_media_type)] | None = None
    dataschema: Annotated[NonEmpty, AfterValidator(_absolute_uri), _format("uri")] | None = None
    data: Any = None
    data_base64: (
        Annotated[str, Field(strict=True, json_schema_extra={"contentEncoding": "base64"})] | None
    ) = None

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, value: Any) -> Any:
        if isinstance(value, dict) and None in value.values():
            return {k: v for k, v in value.items() if v is not None}
        return value

    @model_validator(mode="after")
    def _extensions_and_data(self) -> CloudEvent:
        for name, value in (self.model_extra or {}).items():
            message = _extension_problem(name, value)
            if message:
                raise ValueError(message)
        message = _data_problem(self.data, self.data_base64)
        if message:
            raise ValueError(message)
        return self


def _extension_problem(name: str, value: Any) -> str | None:
    if not _EXTENSION_NAME.match(name):
        return f"extension attribute name {name[:40]!r} must be 1-20 lowercase letters or digits"
    if value is None or value is True or value is False:
        return None
    kind = type(value)
    if kind is int:
        if not INT32_MIN <= value <= INT32_MAX:
            return f"extension {name!r} is outside the 32-bit integer range"
        return None
    if kind is str:
        if _CONTROL.search(value):
            return f"extension {name!r} must not contain control characters"
        return None
    return f"extension {name!r} must be a string, boolean or integer, not {kind.__name__}"


def _data_problem(data: Any, data_base64: str | None) -> str | None:
    if data is not None and data_base64 is not None:
        return "data and data_base64 are mutually exclusive"
    if data_base64 is not None:
        try:
            base64.b64decode(data_base64, validate=True)
        except (binascii.Error, ValueError):
            return "data_base64 is not valid base64"
    return None


class Envelope(NamedTuple):
    """The context attributes of a validated event (null attributes are None).

    A NamedTuple rather than a frozen dataclass: as immutable, and built in a
    third of the time (a frozen dataclass pays ``object.__setattr__`` per field).
    """

    specversion: str
    id: str
    source: str
    type: str
    subject: str | None
    time: str | None
    datacontenttype: str | None
    dataschema: str | None
    extensions: dict[str, Any]
    time_ms: int | None  # ``time`` as epoch ms (UTC), None when the event has no time


# name -> (required, check after "non-empty string"), in the model's field order so
# problems come out in the order pydantic would report them.
_ATTRIBUTES: tuple[tuple[str, bool, Any], ...] = (
    ("id", True, _string),
    ("source", True, _uri_reference),
    ("type", True, _string),
    ("subject", False, _string),
    ("time", False, _rfc3339),
    ("datacontenttype", False, _media_type),
    ("dataschema", False, _absolute_uri),
)


def check_envelope(obj: dict[str, Any]) -> Envelope | list[Problem]:
    """Validate the CloudEvents 1.0 envelope of one decoded JSON event object."""
    fast = _fast_envelope(obj)
    return fast if fast is not None else _checked_envelope(obj)


# Sources, schemas and media types repeat across events (one app, a few types): a
# value that passed once passes again. Bounded so a client cannot grow it at will.
_KNOWN_GOOD: set[str] = set()
_KNOWN_GOOD_MAX = 4096


def _fast_envelope(obj: dict[str, Any]) -> Envelope | None:
    """The common case in as few operations as possible; None = take the slow path.

    Anything unusual (extensions, data_base64, a dataschema, a value not seen
    before that needs a check this path does not make) falls through to
    ``_checked_envelope``, which is the reference and reports the problems.
    """
    get = obj.get
    id_, source, type_ = get("id"), get("source"), get("type")
    subject, time = get("subject"), get("time")
    contenttype = get("datacontenttype")
    if (
        get("specversion") != "1.0"
        or type(id_) is not str
        or type(source) is not str
        or type(type_) is not str
        or not (id_ and source and type_)
        or not (subject is None or (type(subject) is str and subject))
        or not (time is None or (type(time) is str and time))
        or not (contenttype is None or (type(contenttype) is str and contenttype in _KNOWN_GOOD))
        or source not in _KNOWN_GOOD
        or "dataschema" in obj
        or "data_base64" in obj
    ):
        return None
    known = 4 + (subject is not None) + (time is not None) + (contenttype is not None)
    if len(obj) - ("data" in obj) != known:
        return None  # extensions or null attributes: the slow path checks them
    if _CONTROL.search(id_ + type_ + (subject or "")):
        return None
    time_ms = None
    if time is not None:
        try:
            time_ms = _rfc3339_ms(time)
        except ValueError:
            return None
    return Envelope("1.0", id_, source, type_, subject, time, contenttype, None, {}, time_ms)


def _remember(value: str) -> None:
    if len(_KNOWN_GOOD) < _KNOWN_GOOD_MAX:
        _KNOWN_GOOD.add(value)


def _checked_envelope(obj: dict[str, Any]) -> Envelope | list[Problem]:
    problems: list[Problem] = []
    version = obj.get("specversion")
    if version is None:
        problems.append(Problem("missing", "specversion", "Field required"))
    elif version != "1.0" or type(version) is not str:
        problems.append(Problem("literal_error", "specversion", "Input should be '1.0'"))
    values: dict[str, Any] = {}
    for name, required, check in _ATTRIBUTES:
        value = obj.get(name)
        if value is None:
            if required:
                problems.append(Problem("missing", name, "Field required"))
            continue
        if type(value) is not str:
            problems.append(Problem("string_type", name, "Input should be a valid string"))
        elif not value:
            problems.append(
                Problem("string_too_short", name, "String should have at least 1 character")
            )
        else:
            try:
                values[name] = check(value) if check is _string else _string(check(value))
            except ValueError as exc:
                problems.append(Problem("value_error", name, str(exc)))
    data_base64 = obj.get("data_base64")
    if data_base64 is not None and type(data_base64) is not str:
        problems.append(Problem("string_type", "data_base64", "Input should be a valid string"))
    if problems:
        return problems
    extensions: dict[str, Any] = {}
    for name, value in obj.items():
        if name in RESERVED or value is None:
            continue
        message = _extension_problem(name, value)
        if message:
            problems.append(Problem("value_error", "event", message))
        else:
            extensions[name] = value
    message = _data_problem(obj.get("data"), data_base64)
    if message:
        problems.append(Problem("value_error", "event", message))
    if problems:
        return problems
    for name in ("source", "datacontenttype"):
        if name in values:
            _remember(values[name])
    return Envelope(
        "1.0",
        values["id"],
        values["source"],
        values["type"],
        values.get("subject"),
        values.get("time"),
        values.get("datacontenttype"),
        values.get("dataschema"),
        extensions,
        # Checked above; the slow path is for unusual events, a second parse is fine.
        parse_ms(values["time"]) if "time" in values else None,
    )


class ValidEvent(NamedTuple):
    """An accepted event: the JSON exactly as received plus what meterline needs from it."""

    raw: dict[str, Any]
    envelope: Envelope
    # What is metered: the type's own usage, or custom units (``custom_units``) for
    # event types meterline does not know.
    usage: UsageData


def _problems_from(exc: ValidationError, prefix: str = "") -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-"))
        field = f"{prefix}{field}" if field else prefix.rstrip(".") or "event"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") in (
            NO_CONTROL_PATTERN,
            NO_CONTROL_PATTERN_NON_EMPTY,
        ):
            # The regex is the rule, but "should match '^[^\x00-...]'" is not a
            # message a client can act on.
            message = CONTROL_MESSAGE
        out.append(Problem(code=err["type"], field=field, message=message))
    return out


def parse_event(obj: Any, mappings: EventMappings | None = None) -> ValidEvent | list[Problem]:
    """Validate one decoded JSON event: the envelope, then the data of known types.

    ``mappings`` (schemas/mappings.py) makes other types usage too: a mapped event
    needs what a native usage event needs (subject, JSON data) and its data must
    give every field its mapping reads. The gateway, the processor and replay
    pass the same object, so they accept and meter alike.
    """
    if not isinstance(obj, dict):
        return [Problem("not_an_object", "event", "a CloudEvent must be a JSON object")]
    envelope = check_envelope(obj)
    if isinstance(envelope, list):
        return envelope
    model = USAGE_MODELS.get(envelope.type)
    mapping = None
    if model is None:
        mapping = mappings.get(envelope.type) if mappings is not None else None
        if mapping is None:
            return _custom_event(obj, envelope)
    problems = []
    if envelope.subject is None:
        problems.append(
            Problem("missing", "subject", "meterline usage events need subject = the customer id")
        )
    if envelope.datacontenttype is not None and not MEDIA_JSON.match(envelope.datacontenttype):
        problems.append(
            Problem("json_required", "datacontenttype", "usage data must be application/json")
        )
    data = obj.get("data")
    if not isinstance(data, dict):
        problems.append(Problem("not_an_object", "data", "usage data must be a JSON object"))
    if problems:
        return problems
    if mapping is not None:
        # Stored raw like a custom event: the same depth bound.
        if too_deep(data):
            return [_too_deep()]
        mapped = mapping.apply(data)
        return mapped if isinstance(mapped, list) else ValidEvent(obj, envelope, mapped)
    assert model is not None  # narrowed: mapping is None only for native types here
    try:
        usage = model.model_validate(data)
    except ValidationError as exc:
        return _problems_from(exc, "data.")
    return ValidEvent(obj, envelope, usage)


def _too_deep() -> Problem:
    return Problem(
        "too_deep", "data", f"arrays and objects nest more than {MAX_DATA_DEPTH} levels deep"
    )


def _custom_event(obj: dict[str, Any], envelope: Envelope) -> ValidEvent | list[Problem]:
    """An event of a type meterline does not know: stored as received, metered as units."""
    data = obj.get("data")
    if too_deep(data):
        return [_too_deep()]
    try:
        usage = custom_units(data)
    except ValidationError as exc:
        return _problems_from(exc, "data.")
    return ValidEvent(obj, envelope, usage)
