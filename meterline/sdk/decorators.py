"""Meter non-LLM work with decorators: as API requests, as units, or as an
instant charge; ``meter_methods`` does it for chosen methods of a class.

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
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar, cast

from meterline.sdk._default import default_meter
from meterline.sdk._recorder import Recorder

log = logging.getLogger("meterline.emitter")
F = TypeVar("F", bound=Callable[..., Any])
CustomerOf = str | Callable[..., str] | None
Number = Decimal | str | int | float
# (recorder, customer, result) -> queued?
Record = Callable[[Recorder, str | None, Any], bool]


def _decorate(record: Record, meter: Recorder | None, customer: CustomerOf) -> Callable[[F], F]:
    def who(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        return customer(*args, **kwargs) if callable(customer) else customer

    def after(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        try:
            record(meter or default_meter(), who(args, kwargs), result)
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
