"""CloudEvents HTTP binary mode: ``ce-*`` headers + body -> one event in JSON form.

The HTTP protocol binding (3.1.3) says how to read an attribute header:

1. undo RFC 7230 double-quoting (a value that is one quoted-string, with
   backslash escapes), kept for senders of older spec versions;
2. one round of percent-decoding, byte by byte;
3. read the bytes as UTF-8; invalid UTF-8 (overlong forms included) makes the
   event invalid.

The body is the data and ``Content-Type`` is ``datacontenttype``. JSON media
types are parsed into ``data`` (so usage payloads validate like in structured
mode), and so is a body without Content-Type that parses as JSON (what the
reference Python SDK sends); any other body is kept byte-exact as ``data_base64``. The result goes
through the same envelope validation as every other mode and is logged in
structured JSON form, so the processor and other consumers see one format.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from schemas.envelope import MEDIA_JSON
from schemas.problems import Problem

PREFIX = b"ce-"
SPECVERSION_HEADER = "ce-specversion"
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# qdtext / quoted-pair of RFC 7230 §3.2.6 (obs-text included).
_QUOTED_STRING = re.compile(rb'^"((?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*)"$')
_QUOTED_PAIR = re.compile(rb"\\(.)", re.DOTALL)
# Attributes that never come from a ce- header: the body is the data and
# Content-Type is datacontenttype; two sources for one attribute is ambiguous.
_NOT_FROM_HEADERS = {
    "data": "the body is the data in binary mode",
    "data_base64": "the body is the data in binary mode",
    "datacontenttype": "send the media type as Content-Type",
}


class HeaderValueError(ValueError):
    """A ``ce-`` header value that cannot be decoded (the message says why)."""


def decode_header_value(raw: bytes) -> str:
    """One ``ce-`` header value -> the attribute's string value."""
    value = raw.strip(b" \t")
    if value.startswith(b'"'):
        quoted = _QUOTED_STRING.match(value)
        if quoted is None:
            raise HeaderValueError("starts with '\"' but is not one RFC 7230 quoted-string")
        value = _QUOTED_PAIR.sub(rb"\1", quoted.group(1))
    if b"%" in value:
        value = _percent_decode(value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderValueError(
            f"is not valid UTF-8 after percent-decoding (byte {exc.start})"
        ) from None


def _percent_decode(value: bytes) -> bytes:
    bad = _BAD_PERCENT.search(value)
    if bad is not None:
        raise HeaderValueError(f"has '%' not followed by two hex digits at byte {bad.start()}")
    return unquote_to_bytes(value)


def binary_event(
    headers: Iterable[tuple[bytes, bytes]], content_type: str | None, body: bytes
) -> dict[str, Any] | list[Problem]:
    """Build the structured JSON form of a binary-mode request, or say what is wrong."""
    event: dict[str, Any] = {}
    problems: list[Problem] = []
    for raw_name, raw_value in headers:
        name_bytes = raw_name.lower()
        if not name_bytes.startswith(PREFIX):
            continue
        name = name_bytes[len(PREFIX) :].decode("latin-1")
        field = f"header {raw_name.decode('latin-1')}"
        if name in _NOT_FROM_HEADERS:
            problems.append(Problem("reserved_header", field, _NOT_FROM_HEADERS[name]))
            continue
        if name in event:
            problems.append(
                Problem("duplicate_header", field, "an attribute header must appear once")
            )
            continue
        try:
            event[name] = decode_header_value(raw_value)
        except HeaderValueError as exc:
            problems.append(Problem("invalid_header", field, f"value {exc}"))
    if content_type:  # an empty Content-Type is no media type: as if absent
        event["datacontenttype"] = content_type
    if body:
        if content_type is not None and MEDIA_JSON.match(content_type):
            try:
                event["data"] = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                problems.append(Problem("malformed_json", "data", f"body is not valid JSON: {exc}"))
        elif not content_type:
            event.update(_untyped_data(body))
        else:
            event["data_base64"] = base64.b64encode(body).decode("ascii")
    return problems or event


def _untyped_data(body: bytes) -> dict[str, Any]:
    """The data of a body sent without Content-Type.

    The reference Python SDK (cloudevents 2.x, ``to_binary`` in both its APIs)
    sends a JSON body with no Content-Type at all, and its own receiver
    (``from_http``) reads such a body as JSON when it parses. Treating it as
    opaque bytes answered 400 to every usage event that SDK sent. So: a body that
    parses as JSON is JSON data (datacontenttype stays absent, which the JSON
    event format reads as application/json); any other body stays byte-exact.
    """
    try:
        return {"data": orjson.loads(body)}
    except orjson.JSONDecodeError:
        return {"data_base64": base64.b64encode(body).decode("ascii")}
