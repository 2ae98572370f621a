"""Meter a block of code: the ``with`` statement yields a usage dict the block fills in.

AgentMeter's context managers (``with track_token_based_pay(...) as usage:
usage["tokens_in"] = ...``) in meterline's names::

    with metered_tokens("openai", "gpt-4o", customer="acme") as usage:
        reply = llm(prompt)
        usage["input_tokens"] = reply.prompt_tokens
        usage["output_tokens"] = reply.completion_tokens
        usage["metadata"]["step"] = "plan"

The event is recorded when the block ends. What was CONSUMED (tokens, units)
is recorded even if the block raises: the provider billed those tokens, and
dropping them would understate cost. What is SOLD (requests, charges) is
recorded only when the block completes, like the decorators: a failed request
or premium feature is not charged. A key the event does not have raises
``KeyError`` at the assignment (``usage["tokens_in"]`` would otherwise be
silently ignored and the usage lost); recording itself never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal
from typing import Any

from meterline.sdk import normalize
from meterline.sdk._default import default_meter
from meterline.sdk._recorder import Recorder

log = logging.getLogger("meterline.emitter")

# The token counts a usage dict carries: exactly ``track_tokens``' keyword arguments.
TOKEN_FIELDS = normalize.TOKEN_FIELDS


class Usage(dict[str, Any]):
    """A dict with a fixed set of keys: assigning any other key raises ``KeyError``."""

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self:
            allowed = ", ".join(sorted(self))
            raise KeyError(f"meterline usage has no {key!r}; its keys are: {allowed}")
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default  # raises KeyError: same rule as assignment
        return self[key]


@contextmanager
def _block(
    usage: Usage, record: Callable[[Recorder, Usage], bool], meter: Recorder | None, sold: bool
) -> Iterator[Usage]:
    completed = False
    try:
        yield usage
        completed = True
    finally:
        if completed or not sold:
            try:
                record(meter or default_meter(), usage)
            except Exception:
                # A bug of ours must not replace the block's own outcome (or its exception).
                log.exception("meterline could not record a metered block")


def _metadata(usage: Usage) -> Mapping[str, str] | None:
    labels = usage["metadata"]
    return labels or None


def metered_tokens(
    provider: str,
    model: str,
    *,
    customer: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    meter: Recorder | None = None,
) -> AbstractContextManager[Usage]:
    """Yield ``{input_tokens, output_tokens, cache_*, reasoning_tokens, *_audio_tokens,
    model, metadata}``; record them as one token event when the block ends (also on
    an exception: the tokens were consumed). Nothing is recorded if every count is 0."""
    usage = Usage({name: 0 for name in TOKEN_FIELDS}, model=model, metadata={})

    def record(m: Recorder, u: Usage) -> bool:
        counts: dict[str, Any] = {name: int(u[name]) for name in TOKEN_FIELDS}
        if not any(counts.values()):
            return False
        return m.track_tokens(
            provider,
            str(u["model"]),
            customer=customer,
            feature=feature,
            user=user,
            metadata=_metadata(u),
            **counts,
        )

    return _block(usage, record, meter, sold=False)


def metered_units(
    unit: str,
    *,
    customer: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    meter: Recorder | None = None,
) -> AbstractContextManager[Usage]:
    """Yield ``{quantity, metadata}``; record ``quantity`` units when the block ends
    (also on an exception: they were consumed). Nothing is recorded for quantity 0."""
    usage = Usage(quantity=0, metadata={})

    def record(m: Recorder, u: Usage) -> bool:
        if not u["quantity"]:
            return False
        return m.track_units(
            unit, u["quantity"], customer=customer, feature=feature, user=user,
            metadata=_metadata(u),
        )  # fmt: skip

    return _block(usage, record, meter, sold=False)


def metered_requests(
    *,
    customer: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    meter: Recorder | None = None,
) -> AbstractContextManager[Usage]:
    """Yield ``{api_calls, metadata}`` (``api_calls`` starts at 1); record them as
    ``api_call`` units when the block completes (not on an exception)."""
    usage = Usage(api_calls=1, metadata={})

    def record(m: Recorder, u: Usage) -> bool:
        if not u["api_calls"]:
            return False
        return m.track_units(
            "api_call", u["api_calls"], customer=customer, feature=feature, user=user,
            metadata=_metadata(u),
        )  # fmt: skip

    return _block(usage, record, meter, sold=True)


def metered_charge(
    amount: Decimal | str | int | float | None = None,
    currency: str = "USD",
    *,
    description: str = "",
    customer: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    meter: Recorder | None = None,
) -> AbstractContextManager[Usage]:
    """Yield ``{amount, description, metadata}``; charge ``amount`` when the block
    completes (not on an exception; not when the amount is left None)."""
    usage = Usage(amount=amount, description=description, metadata={})

    def record(m: Recorder, u: Usage) -> bool:
        if u["amount"] is None:
            return False
        return m.track_charge(
            u["amount"], currency, description=str(u["description"]), customer=customer,
            feature=feature, user=user, metadata=_metadata(u),
        )  # fmt: skip

    return _block(usage, record, meter, sold=True)
