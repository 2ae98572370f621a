"""meterline's Python emitter SDK: usage events as CloudEvents, sent in the background.

Quick start (reads METERLINE_URL, METERLINE_API_KEY, METERLINE_SOURCE)::

    from ingest.emitter import customer, wrap
    client = wrap(OpenAI())            # every call is metered
    with customer("acme"):
        client.chat.completions.create(...)

Imports only base dependencies (pydantic via ``schemas``, orjson, httpx,
tiktoken); provider packages are imported inside the wrappers. See docs/sdk.md.
"""

from ingest.emitter._core import Stats
from ingest.emitter._default import default_meter, set_default_meter
from ingest.emitter.aio import AsyncMeter
from ingest.emitter.builders import (
    api_request_event,
    charge_event,
    image_event,
    token_event,
    units_event,
)
from ingest.emitter.client import Meter
from ingest.emitter.config import ConfigError, EmitterError, MeterConfig
from ingest.emitter.context import Scope, customer, no_metering, reset_customer, set_customer
from ingest.emitter.decorators import meter_charge, meter_methods, meter_requests, meter_units
from ingest.emitter.providers import wrap, wrap_anthropic, wrap_gemini, wrap_openai
from ingest.emitter.tokens import count_tokens

__all__ = [
    "AsyncMeter",
    "ConfigError",
    "EmitterError",
    "Meter",
    "MeterConfig",
    "Scope",
    "Stats",
    "api_request_event",
    "charge_event",
    "count_tokens",
    "customer",
    "default_meter",
    "image_event",
    "meter_charge",
    "meter_methods",
    "meter_requests",
    "meter_units",
    "no_metering",
    "reset_customer",
    "set_customer",
    "set_default_meter",
    "token_event",
    "units_event",
    "wrap",
    "wrap_anthropic",
    "wrap_gemini",
    "wrap_openai",
]
