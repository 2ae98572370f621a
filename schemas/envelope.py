"""The CloudEvents 1.0 envelope, validated strictly, and ``parse_event``.

Why not the ``cloudevents`` SDK as validator: it invents missing ids and times,
accepts invalid extension names and non-URI sources (DESIGN §7). A billing
system must refuse those: a made-up id defeats dedupe, a made-up time moves
usage into the wrong invoice.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.problems import Problem
from schemas.usage import USAGE_MODELS, _UsageData

CONTEXT_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"}
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
# RFC 3986 characters: unreserved, reserved and '%' (checked as pct-encoding below).
_URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
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


def _rfc3339(value: str) -> str:
    if not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 timestamp such as 2025-01-31T12:00:00.123Z")
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"is not a real instant: {exc}") from None
    return value


NonEmpty = Annotated[str, Field(min_length=1, strict=True), AfterValidator(_string)]


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in JSON format.

    Extension attributes are kept as extra fields: lowercase a-z0-9 names of at
    most 20 characters with string, boolean or 32-bit integer values. A null
    attribute means "unset", as the JSON format says.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: NonEmpty
    source: Annotated[NonEmpty, AfterValidator(_uri_reference)]
    type: NonEmpty
    subject: NonEmpty | None = Field(None, description="The customer being metered.")
    time: Annotated[NonEmpty, AfterValidator(_rfc3339)] | None = None
    datacontenttype: NonEmpty | None = None
    dataschema: Annotated[NonEmpty, AfterValidator(_absolute_uri)] | None = None
    data: Any = None
    data_base64: Annotated[str, Field(strict=True)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, value: Any) -> Any:
        if isinstance(value, dict) and None in value.values():
            return {k: v for k, v in value.items() if v is not None}
        return value

    @model_validator(mode="after")
    def _extensions_and_data(self) -> CloudEvent:
        for name, value in (self.model_extra or {}).items():
            if not _EXTENSION_NAME.match(name):
                raise ValueError(
                    f"extension attribute name {name[:40]!r} must be 1-20 lowercase "
                    "letters or digits"
                )
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                if not INT32_MIN <= value <= INT32_MAX:
                    raise ValueError(f"extension {name!r} is outside the 32-bit integer range")
            elif isinstance(value, str):
                if _CONTROL.search(value):
                    raise ValueError(f"extension {name!r} must not contain control characters")
            else:
                raise ValueError(
                    f"extension {name!r} must be a string, boolean or integer, "
                    f"not {type(value).__name__}"
                )
        if self.data is not None and self.data_base64 is not None:
            raise ValueError("data and data_base64 are mutually exclusive")
        if self.data_base64 is not None:
            try:
                base64.b64decode(self.data_base64, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("data_base64 is not valid base64") from None
        return self


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """An accepted event: the JSON exactly as received plus what meterline needs from it."""

    raw: dict[str, Any]
    envelope: CloudEvent
    usage: _UsageData | None  # None for event types meterline does not know (custom events)


def _problems_from(exc: ValidationError, prefix: str = "") -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-"))
        field = f"{prefix}{field}" if field else prefix.rstrip(".") or "event"
        message = err["msg"].removeprefix("Value error, ")
        out.append(Problem(code=err["type"], field=field, message=message))
    return out


def parse_event(obj: Any) -> ValidEvent | list[Problem]:
    """Validate one decoded JSON event: the envelope, then the data of known types."""
    if not isinstance(obj, dict):
        return [Problem("not_an_object", "event", "a CloudEvent must be a JSON object")]
    try:
        envelope = CloudEvent.model_validate(obj)
    except ValidationError as exc:
        return _problems_from(exc)
    model = USAGE_MODELS.get(envelope.type)
    if model is None:
        return ValidEvent(obj, envelope, None)
    problems = []
    if envelope.subject is None:
        problems.append(
            Problem("missing", "subject", "meterline usage events need subject = the customer id")
        )
    if envelope.datacontenttype is not None and not MEDIA_JSON.match(envelope.datacontenttype):
        problems.append(
            Problem("json_required", "datacontenttype", "usage data must be application/json")
        )
    if not isinstance(envelope.data, dict):
        problems.append(Problem("not_an_object", "data", "usage data must be a JSON object"))
    if problems:
        return problems
    try:
        usage = model.model_validate(envelope.data)
    except ValidationError as exc:
        return _problems_from(exc, "data.")
    return ValidEvent(obj, envelope, usage)
