"""Export the JSON Schemas of the event models to ``schemas/json/``.

Run ``python -m schemas.export`` after changing a model; a test fails while the
committed files differ from what the models produce, so the published schema
can never drift from the validator.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from schemas.envelope import CloudEvent
from schemas.usage import USAGE_MODELS

OUT = Path(__file__).resolve().parent / "json"


def schemas() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"cloudevent.json": CloudEvent.model_json_schema()}
    for event_type, model in USAGE_MODELS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://meterline.dev/schemas/{event_type}.json"
        schema["description"] = f"`data` of CloudEvents of type {event_type}. " + (
            schema.get("description") or ""
        )
        out[f"{event_type}.json"] = schema
    return out


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, schema in schemas().items():
        (OUT / name).write_bytes(render(schema))
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
