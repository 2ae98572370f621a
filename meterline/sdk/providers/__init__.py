"""Provider wrappers: meter a provider client in place and return it.

The provider packages are imported lazily, inside the wrappers, so the SDK
imports without them.
"""

from __future__ import annotations

from typing import Any, TypeVar

from meterline.sdk._default import default_meter
from meterline.sdk._recorder import Recorder
from meterline.sdk.entitlements import Checker, enforce_client
from meterline.sdk.providers.anthropic import wrap_anthropic
from meterline.sdk.providers.gemini import wrap_gemini
from meterline.sdk.providers.openai import wrap_openai

C = TypeVar("C")

__all__ = ["wrap", "wrap_anthropic", "wrap_gemini", "wrap_openai"]


def wrap(
    client: C,
    meter: Recorder | None = None,
    *,
    enforce_budgets: bool = False,
    fail_open: bool = True,
) -> C:
    """Meter any supported client (OpenAI, Anthropic, google-genai; sync or async).

    ``enforce_budgets``: before each call inside ``customer(...)``, check the
    customer's entitlement (``Meter.check``) and raise ``BudgetExhausted`` without
    calling the provider when a hard budget is used up. ``fail_open``: when the
    gateway cannot answer the check, make the call anyway (False: raise
    ``CheckFailed``). See docs/budgets.md.
    """
    module = type(client).__module__
    wrapped: Any
    if module.startswith("openai"):
        wrapped = wrap_openai(client, meter)
    elif module.startswith("anthropic"):
        wrapped = wrap_anthropic(client, meter)
    elif module.startswith("google.genai"):
        wrapped = wrap_gemini(client, meter)
    else:
        raise TypeError(
            f"meterline cannot wrap {type(client).__qualname__} from {module!r}; "
            "supported: openai.OpenAI/AsyncOpenAI, anthropic.Anthropic/AsyncAnthropic, "
            "google.genai.Client"
        )
    if enforce_budgets:
        checker = meter if meter is not None else default_meter()
        if not isinstance(checker, Checker):
            raise TypeError("enforce_budgets needs a Meter (it has check()); got " + repr(checker))
        enforce_client(wrapped, checker, fail_open)
    result: C = wrapped
    return result
