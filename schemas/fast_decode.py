"""The processor's fast decode of token usage events: typed JSON decoding, checked in C.

94% of the log is token usage (``io.meterline.usage.tokens``) of one common
shape. ``fast_token_event`` decodes such a record straight from its bytes into
msgspec Structs (JSON syntax, types, integer bounds, unknown fields refused, all
in C, ~1.5 µs), applies in Python the few rules msgspec cannot say (control
characters, URI and media type, RFC 3339 time, provider name, the token parts
within their totals, metadata bounds; the rules on the labels once per distinct
combination of them), and returns the same ``Envelope`` and
``TokenUsage`` that ``schemas.envelope.parse_event`` would build.

The other native types (image, units, charge) have their own fast path, with the
same design, in schemas/fast_decode_other.py.

It only ever ACCEPTS. Anything it does not fully check itself (other types,
extensions, null attributes, ``dataschema``, ``data_base64``, a lax value
pydantic would coerce such as ``"estimated": 1``, any rule broken) returns
None, and the caller takes the reference path, ``parse_event``, which accepts
or refuses with its own problems. So a record is refused by exactly one
implementation, and the dead-letter reasons cannot drift; what must hold is
that whatever this accepts, the reference accepts with an equal result, which
tests/schemas/test_fast_decode_differential.py proves on generated events, the
CloudEvents conformance data and the dead-letter cases. A difference there would
bill an event the gateway refuses, or bill it differently.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from schemas.envelope import MEDIA_JSON, Envelope, _media_type, _rfc3339_ms, _uri_reference
from schemas.limits import CONTROL
from schemas.providers import canonical_provider
from schemas.usage import (
    CALL_STATUSES,
    MAX_LATENCY_MS,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_CHARS,
    MAX_TOKENS,
    EventType,
    TokenUsage,
    UsageData,
)

M = TypeVar("M", bound=UsageData)
_Count = Annotated[int, Meta(ge=0, le=MAX_TOKENS)]  # TokenCount: strict int, no bool, no float


class _TokenData(Struct, forbid_unknown_fields=True, kw_only=True):
    """``TokenUsage``'s fields; UNSET = not sent (pydantic's fields_set)."""

    feature: str | UnsetType = UNSET
    user: str | UnsetType = UNSET
    metadata: dict[str, str] | UnsetType = UNSET
    status: str | UnsetType = UNSET
    error_type: str | UnsetType = UNSET
    http_status: Annotated[int, Meta(ge=0, le=599)] | UnsetType = UNSET  # strict: no bool/float
    latency_ms: Annotated[int, Meta(ge=0, le=MAX_LATENCY_MS)] | UnsetType = UNSET
    provider: str
    model: str
    input_tokens: _Count | UnsetType = UNSET
    output_tokens: _Count | UnsetType = UNSET
    cache_read_tokens: _Count | UnsetType = UNSET
    cache_write_tokens: _Count | UnsetType = UNSET
    cache_write_1h_tokens: _Count | UnsetType = UNSET
    reasoning_tokens: _Count | UnsetType = UNSET
    input_audio_tokens: _Count | UnsetType = UNSET
    output_audio_tokens: _Count | UnsetType = UNSET
    estimated: bool | UnsetType = UNSET  # JSON true/false only: pydantic's lax 1/"yes" fall back
    service_tier: str | UnsetType = UNSET


class _TokenEvent(Struct, forbid_unknown_fields=True, tag_field="type", tag=EventType.TOKENS.value):
    """A structured-mode token event with no extensions: any other member is refused
    (and so falls back), a null one too (the reference reads null as unset)."""

    specversion: Literal["1.0"]
    id: str
    source: str
    subject: str  # token usage needs the customer
    data: _TokenData
    time: str | UnsetType = UNSET
    datacontenttype: str | UnsetType = UNSET


_DECODER = msgspec.json.Decoder(_TokenEvent)
_TOKENS = EventType.TOKENS.value  # the str itself: an enum's .value is a descriptor call


def _defaults(model: type[UsageData], struct: type[Struct]) -> dict[str, Any]:
    """The model's defaults in its field order (so __dict__ has model_validate's order),
    read from the model so they cannot drift; None for a required field (always sent).

    A model field the Struct does not know is an unknown member to msgspec: an event
    that sends it takes the reference path (correct, only slower), and one that does
    not gets the model's default. That holds only for optional fields with a plain
    default; a Struct field the model no longer has would be accepted wrongly. Anything
    else fails at import, naming what to do (issue 15 added optional fields)."""
    fields = model.model_fields
    known = set(struct.__struct_fields__)
    unchecked = [
        name
        for name, info in fields.items()
        if name not in known and (info.is_required() or info.default_factory is not None)
    ]
    if not known <= set(fields) or unchecked:  # pragma: no cover - import guard
        raise ImportError(
            f"{struct.__module__}.{struct.__name__} no longer matches {model.__name__} "
            f"(only here: {sorted(known - set(fields))}, required or default_factory "
            f"fields not here: {unchecked}): update it with their rules, and run "
            "tests/schemas/test_fast_decode*_differential.py"
        )
    return {
        name: None if info.is_required() else info.get_default(call_default_factory=True)
        for name, info in fields.items()
    }


_DEFAULTS = _defaults(TokenUsage, _TokenData)
_MAX_NAME = 256  # schemas.usage Name / Label / ProviderName max_length
_MAX_ERROR_TYPE = 128  # CallUsage.error_type max_length

# Sources and media types repeat (one app, one content type): checked once by the
# reference's own functions, then a set look-up. Bounded so a client cannot grow them.
_GOOD_SOURCES: set[str] = set()
_GOOD_MEDIA: set[str] = set()
_CACHE_MAX = 4096
_new = object.__new__
_set = object.__setattr__
to_builtins = msgspec.to_builtins


def _source_ok(source: str) -> bool:
    """A valid URI-reference with no control character (the reference's _string rule:
    ``_uri_reference`` alone takes "/s\n", since a regex's ``$`` matches before it)."""
    if source in _GOOD_SOURCES:
        return True
    if not _no_control(source):
        return False
    try:
        _uri_reference(source)
    except ValueError:
        return False
    if len(_GOOD_SOURCES) < _CACHE_MAX:
        _GOOD_SOURCES.add(source)
    return True


def _media_ok(media: str) -> bool:
    """A valid media type that is JSON (usage data must be application/json), with no
    control character: ``_media_type`` alone takes "application/json\n" and a tab or C1
    character in a parameter, which the reference's _string rule refuses."""
    if media in _GOOD_MEDIA:
        return True
    if not _no_control(media):
        return False
    try:
        _media_type(media)
    except ValueError:
        return False
    if not MEDIA_JSON.match(media):
        return False
    if len(_GOOD_MEDIA) < _CACHE_MAX:
        _GOOD_MEDIA.add(media)
    return True


def _metadata_ok(metadata: dict[str, str]) -> bool:
    """UsageData._bounded_metadata's rules, as a yes/no (the reference words the refusal)."""
    if len(metadata) > MAX_METADATA_KEYS:
        return False
    for key, value in metadata.items():
        if not 0 < len(key) <= MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
            return False
        if CONTROL.search(key) or CONTROL.search(value):
            return False
    return True


def _no_control(text: str) -> bool:
    """No C0, DEL or C1 character: printable ASCII says so in two C calls, else the regex."""
    return (text.isascii() and text.isprintable()) or not CONTROL.search(text)


# "YYYY-MM-DDTHH:MM:" -> epoch ms of that minute, each checked by the reference once.
_MINUTES: dict[str, int] = {}
# "YYYY-MM-DDTHH:MM:SS." -> epoch ms of that second, each read from a cached minute
# once: a second holds ~100-1,000 events at the bench's rates, and the minute path
# reads two numbers per event where this reads one (0.75 -> 0.43 µs an event on the
# bench's times, issue 17 round 3). Its key ends with the '.', checked on the way in.
_SECOND_TIMES: dict[str, int] = {}


def _time_ms(text: str) -> int | None:
    """``_rfc3339_ms`` of an event time, or None where it raises.

    The gateway writes times as ``YYYY-MM-DDTHH:MM:SS.mmmZ``; for that form the
    second, else the minute, is looked up (the minute checked and converted by the
    reference once) and only what follows is read here: ~1.1 µs for regex +
    fromisoformat against ~0.4. Every other form goes to the reference.
    """
    if len(text) == 24 and text[23] == "Z":
        second = _SECOND_TIMES.get(text[:20])
        if second is not None:
            millis = text[20:23]
            if millis.isascii() and millis.isdigit():
                return second + int(millis)
        base = _MINUTES.get(text[:17])
        if base is not None and text[19] == ".":
            seconds, millis = text[17:19], text[20:23]
            # ASCII digits only (isdigit alone takes '²'); fromisoformat refuses second
            # 60, and a minute inside the bounds holds all its seconds (the bounds are
            # minutes).
            if (
                seconds.isascii()
                and millis.isascii()
                and seconds.isdigit()
                and millis.isdigit()
                and seconds < "60"
            ):
                second = base + int(seconds) * 1000
                if len(_SECOND_TIMES) >= _CACHE_MAX:
                    _SECOND_TIMES.clear()  # times move on: never grow
                _SECOND_TIMES[text[:20]] = second
                return second + int(millis)
    try:
        moment = _rfc3339_ms(text)
    except ValueError:
        return None
    if len(text) == 24 and text[19] == "." and text[23] == "Z":
        if len(_MINUTES) >= _CACHE_MAX:
            _MINUTES.clear()  # times move on: keep the recent minutes, never grow
        _MINUTES[text[:17]] = _rfc3339_ms(text[:17] + "00.000Z")
    return moment


# (source, media type, provider, model, feature, user, service tier, status,
# error type) -> the canonical provider name: combinations whose rules all held.
_GOOD_LABELS: dict[tuple[Any, ...], str] = {}


def _labels_ok(
    source: str,
    media: str | UnsetType,
    provider: str,
    model: str,
    feature: str,
    user: str,
    tier: str,
    status: str,
    error_type: str,
) -> str:
    """The canonical provider name when the labels' rules hold, else "" (use the reference)."""
    # Empty strings and lengths: the reference's NonEmpty / Name / Label rules.
    if not (source and provider and model):
        return ""
    if max(len(provider), len(model), len(feature), len(user), len(tier)) > _MAX_NAME:
        return ""
    # CallUsage: a known status; error_type bounded and only for a failed call.
    if status not in CALL_STATUSES or len(error_type) > _MAX_ERROR_TYPE:
        return ""
    if error_type and status != "error":
        return ""
    # Every string that must hold no control character, in one pass.
    if not _no_control(source + provider + model + feature + user + tier + error_type):
        return ""
    if not _source_ok(source):
        return ""
    if media is not UNSET and not (media and _media_ok(media)):
        return ""
    return canonical_provider(provider) or ""


def fast_token_event(value: bytes) -> tuple[Envelope, TokenUsage] | None:
    """The envelope and usage of a common token event, or None: use ``parse_event``."""
    try:
        event = _DECODER.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    sent, fields = _sent_fields(event.data, _DEFAULTS)
    id_, source, subject = event.id, event.source, event.subject
    media = event.datacontenttype
    provider, model = fields["provider"], fields["model"]
    feature, user, tier = fields["feature"], fields["user"], fields["service_tier"]
    status, error_type = fields["status"], fields["error_type"]
    # The rules on the labels (everything but id, subject, time, counts and metadata)
    # once per distinct combination, then one tuple and one dict look-up: a log holds
    # a few hundred combinations (56 in 20k bench events), and checking them per event
    # cost ~0.6 µs of this function's ~6.5 (issue 17, round 3). The rules are pure
    # functions of these nine values, so a hit gives the verdict the rules would; the
    # differential test fails if any of the nine is left out of the key.
    labels = (source, media, provider, model, feature, user, tier, status, error_type)
    canonical = _GOOD_LABELS.get(labels)
    if canonical is None:
        canonical = _labels_ok(*labels)
        if not canonical:
            return None
        if len(_GOOD_LABELS) >= _CACHE_MAX:
            _GOOD_LABELS.clear()  # a flood of distinct labels costs what it did before
        _GOOD_LABELS[labels] = canonical
    if (
        fields["cache_read_tokens"]
        + fields["cache_write_tokens"]
        + fields["cache_write_1h_tokens"]
        + fields["input_audio_tokens"]
        > fields["input_tokens"]
        or fields["reasoning_tokens"] + fields["output_audio_tokens"] > fields["output_tokens"]
    ):
        return None
    envelope = _envelope(id_, source, _TOKENS, subject, event.time, media, fields["metadata"])
    if envelope is None:
        return None
    fields["provider"] = canonical
    return envelope, _built(TokenUsage, fields, sent)


def _sent_fields(data: Struct, defaults: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The usage fields sent, as a dict, in C (UNSET ones are left out): fields_set; and
    over the model's defaults, its __dict__. A Python loop over the 15 fields of a token
    event cost more than msgspec's whole decode."""
    sent: dict[str, Any] = to_builtins(data)
    fields = defaults.copy()
    fields.update(sent)
    if "metadata" not in sent:
        fields["metadata"] = {}  # a fresh one per event, as the default_factory gives
    return sent, fields


def _envelope(
    id_: str,
    source: str,
    type_: str,
    subject: str,
    sent_time: str | UnsetType,
    media: str | UnsetType,
    metadata: dict[str, str],
) -> Envelope | None:
    """The envelope, once the rules left after the labels' hold: id, subject, time and
    metadata (per event, not per combination); None when one does not."""
    time = "" if sent_time is UNSET else sent_time
    # NonEmpty id and subject; a time sent must not be "".
    if not (id_ and subject) or (sent_time is not UNSET and not time):
        return None
    if not _no_control(id_ + subject + time):
        return None
    time_ms = None
    if time:
        time_ms = _time_ms(time)
        if time_ms is None:
            return None
    if metadata and not _metadata_ok(metadata):
        return None
    return Envelope(
        "1.0",
        id_,
        source,
        type_,
        subject,
        time or None,
        None if media is UNSET else media,
        None,
        {},
        time_ms,
    )


def _built(model: type[M], fields: dict[str, Any], sent: dict[str, Any]) -> M:
    """The model as model_validate leaves it (its __dict__ in field order, fields_set, no
    extra, no private state), without running pydantic again on values checked above
    (~0.8 µs against ~2.7 µs). The differential tests hold the two equal."""
    usage = _new(model)
    _set(usage, "__dict__", fields)
    _set(usage, "__pydantic_fields_set__", set(sent))
    _set(usage, "__pydantic_extra__", None)
    _set(usage, "__pydantic_private__", None)
    return usage


__all__ = ["fast_token_event"]
