"""Meter work with decorators: as API requests, as units, as an instant charge,
or as LLM tokens your own code counts (``meter_tokens``); ``meter_methods`` does
it for chosen methods of a class.

A call is metered only when it returns (an exception is the caller's, and is
not usage). Metering never raises into the caller and the decorated function
keeps its signature, return value and exceptions. Sync and async functions.
The customer comes from ``customer=`` (a string, or a function of the call's
arguments) or else from the ``customer(...)`` context.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar, cast

from meterline.sdk._default import default_meter
from meterline.sdk._recorder import Recorder
from meterline.sdk.blocks import TOKEN_FIELDS

log = logging.getLogger("meterline.emitter")
F = TypeVar("F", bound=Callable[..., Any])
CustomerOf = str | Callable[..., str] | None
Number = Decimal | str | int | float
# (recorder, customer, result) -> queued?
Record = Callable[[Recorder, str | None, Any], bool]
_Call = tuple[tuple[Any, ...], dict[str, Any], Any]  # (args, kwargs, result) of one call


def _decorate(
    record: Record, meter: Recorder | None, customer: CustomerOf, with_call: bool = False
) -> Callable[[F], F]:
    """``record`` gets the result, or with ``with_call`` the whole ``(args, kwargs, result)``."""

    def who(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        return customer(*args, **kwargs) if callable(customer) else customer

    def after(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        try:
            seen = (args, kwargs, result) if with_call else result
            record(meter or default_meter(), who(args, kwargs), seen)
        except Exception:
            log.exception("meterline could not meter a decorated call")

    def decorator(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                result = await func(*args, **kwargs)
                after(args, kwargs, result)
                return result

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            result = func(*args, **kwargs)
            after(args, kwargs, result)
            return result

        return cast(F, run)

    return decorator


def meter_requests(
    *, feature: str | None = None, customer: CustomerOf = None, meter: Recorder | None = None
) -> Callable[[F], F]:
    """Each successful call = one API request (units event, unit ``api_call``)."""
    return _decorate(
        lambda m, who, _: m.track_request(customer=who, feature=feature), meter, customer
    )


def meter_units(
    unit: str,
    quantity: Number | Callable[[Any], Number] = 1,
    *,
    feature: str | None = None,
    customer: CustomerOf = None,
    meter: Recorder | None = None,
) -> Callable[[F], F]:
    """Each successful call = ``quantity`` units (a number, or a function of the result)."""

    def record(m: Recorder, who: str | None, result: Any) -> bool:
        amount = quantity(result) if callable(quantity) else quantity
        return m.track_units(unit, amount, customer=who, feature=feature)

    return _decorate(record, meter, customer)


TokensExtractor = Callable[..., "tuple[int, int] | Mapping[str, int]"]


def meter_tokens(
    provider: str,
    model: str,
    *,
    tokens_extractor: TokensExtractor,
    feature: str | None = None,
    customer: CustomerOf = None,
    meter: Recorder | None = None,
) -> Callable[[F], F]:
    """Each successful call = one token event; ``tokens_extractor(*args, result=result,
    **kwargs)`` (AgentMeter's convention: the call's arguments and its result) returns
    ``(input_tokens, output_tokens)`` or a mapping of ``track_tokens`` counts
    (``input_tokens``, ``cache_read_tokens``, ...). Nothing is recorded when all are 0."""

    def decorator(func: F) -> F:
        def record(m: Recorder, who: str | None, call: _Call) -> bool:
            args, kwargs, result = call
            extracted = tokens_extractor(*args, result=result, **kwargs)
            counts: dict[str, Any] = (
                dict(extracted)
                if isinstance(extracted, Mapping)
                else {"input_tokens": extracted[0], "output_tokens": extracted[1]}
            )
            unknown = sorted(set(counts) - set(TOKEN_FIELDS))
            if unknown:
                # Logged by ``_decorate`` as a metering error: the call itself succeeded.
                raise ValueError(f"tokens_extractor returned unknown counts {unknown}")
            if not any(counts.values()):
                return False
            return m.track_tokens(provider, model, customer=who, feature=feature, **counts)

        return _decorate(record, meter, customer, with_call=True)(func)

    return decorator


def meter_charge(
    amount: Decimal | str | int | float,
    currency: str = "USD",
    *,
    description: str = "",
    when: Callable[[Any], bool] | None = None,
    feature: str | None = None,
    customer: CustomerOf = None,
    meter: Recorder | None = None,
) -> Callable[[F], F]:
    """Each successful call (for which ``when(result)`` holds, if given) = an instant charge."""

    def record(m: Recorder, who: str | None, result: Any) -> bool:
        if when is not None and not when(result):
            return False
        return m.track_charge(
            amount, currency, description=description, customer=who, feature=feature
        )

    return _decorate(record, meter, customer)


C = TypeVar("C", bound=type)


def meter_methods(
    *names: str,
    feature: str | None = None,
    customer: CustomerOf = None,
    meter: Recorder | None = None,
) -> Callable[[C], C]:
    """Class decorator: meter the named public methods (default: all public
    functions defined on the class) as API requests, feature = method name
    unless ``feature`` is given."""

    def decorate(cls: C) -> C:
        chosen = names or tuple(
            name
            for name, value in vars(cls).items()
            if not name.startswith("_") and inspect.isfunction(value)
        )
        for name in chosen:
            if name.startswith("_"):
                raise ValueError(f"meter_methods meters public methods only, not {name!r}")
            method = vars(cls).get(name)
            if not inspect.isfunction(method):
                # staticmethod/classmethod/property/inherited: wrapping them as
                # plain functions would change how they bind; refuse loudly.
                raise ValueError(f"meter_methods: {cls.__name__}.{name} is not a plain method")
            wrapped = meter_requests(feature=feature or name, customer=customer, meter=meter)(
                method
            )
            setattr(cls, name, wrapped)
        return cls

    return decorate
