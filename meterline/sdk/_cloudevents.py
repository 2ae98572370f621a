"""``CloudEvent`` objects of the official SDK (``cloudevents``) -> meterline event dicts.

The conversion is the SDK's own structured-mode JSON (``to_json`` in the 1.x-style
``cloudevents.v1`` API, ``JSONFormat`` in ``cloudevents.core``), read back as a
dict, so attribute encoding (time, extensions, bytes data as ``data_base64``)
is exactly what that SDK would send in structured mode. Imported only when an
object that is not a mapping reaches ``emit``: the SDK stays optional.
"""

from __future__ import annotations

from typing import Any

import orjson


def from_cloudevent(event: object) -> dict[str, Any]:
    """The JSON form of a ``cloudevents`` CloudEvent; ``TypeError`` for anything else."""
    try:
        from cloudevents.core.formats.json import JSONFormat
        from cloudevents.v1.abstract import CloudEvent as V1CloudEvent
        from cloudevents.v1.conversion import to_json
    except ImportError:  # pragma: no cover - the extra is missing
        raise TypeError(
            f"emit takes a mapping or a cloudevents CloudEvent, not {type(event).__name__} "
            "(install 'cloudevents' to emit its CloudEvent objects)"
        ) from None
    if isinstance(event, V1CloudEvent):
        body = to_json(event)
    elif callable(getattr(event, "get_attributes", None)) and callable(
        getattr(event, "get_data", None)
    ):
        # cloudevents.core's BaseCloudEvent is a Protocol without runtime checks:
        # recognised by its two methods, written by its own JSON format.
        body = JSONFormat().write(event)  # type: ignore[arg-type]
    else:
        raise TypeError(
            f"emit takes a mapping or a cloudevents CloudEvent, not {type(event).__name__}"
        )
    converted = orjson.loads(body)
    if not isinstance(converted, dict):  # pragma: no cover - the SDK writes one object
        raise TypeError("the CloudEvents SDK did not produce a JSON object")
    return converted
