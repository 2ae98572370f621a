"""meterline's Python emitter SDK: usage events as CloudEvents, sent in the background.

Quick start (reads METERLINE_URL, METERLINE_API_KEY, METERLINE_SOURCE)::

    from meterline.sdk import customer, wrap
    client = wrap(OpenAI())            # every call is metered
    with customer("acme"):
        client.chat.completions.create(...)

Imports only base dependencies (pydantic via ``schemas``, orjson, httpx,
tiktoken); provider packages are imported inside the wrappers. See docs/sdk.md.
"""

from meterline.sdk._core import Stats
from meterline.sdk._default import default_meter, set_default_meter
from meterline.sdk.aio import AsyncMeter
from meterline.sdk.blocks import (
    Usage,
    metered_charge,
    metered_requests,
    metered_tokens,
    metered_units,
)
from meterline.sdk.builders import (
    api_request_event,
    charge_event,
    image_event,
    token_event,
    units_event,
)
from meterline.sdk.client import Meter
from meterline.sdk.config import ConfigError, EmitterError, MeterConfig
from meterline.sdk.context import Scope, customer, no_metering, reset_customer, set_customer
from meterline.sdk.decorators import (
    meter_charge,
    meter_methods,
    meter_requests,
    meter_tokens,
    meter_units,
)
from meterline.sdk.entitlements import BudgetExhausted, CheckFailed, Entitlement
from meterline.sdk.providers import wrap, wrap_anthropic, wrap_gemini, wrap_openai
from meterline.sdk.tokens import count_tokens

__all__ = [
    "AsyncMeter",
    "BudgetExhausted",
    "CheckFailed",
    "ConfigError",
    "EmitterError",
    "Entitlement",
    "Meter",
    "MeterConfig",
    "Scope",
    "Stats",
    "Usage",
    "api_request_event",
    "charge_event",
    "count_tokens",
    "customer",
    "default_meter",
    "image_event",
    "meter_charge",
    "meter_methods",
    "meter_requests",
    "meter_tokens",
    "meter_units",
    "metered_charge",
    "metered_requests",
    "metered_tokens",
    "metered_units",
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
