"""Budgets from the app's side: ``Meter.check`` and refusing provider calls (docs/budgets.md).

``check`` asks the gateway ``GET /v1/subjects/{customer}/entitlements/{feature}``
(one short HTTP request; the gateway answers from cached running totals).
``enforce`` wraps a provider method so that, inside ``customer(...)``, a call
is refused with ``BudgetExhausted`` BEFORE it reaches the provider when a hard
budget is used up: the call that would overspend never costs anything.

Unlike ``track_*``, these raise: an app that asks "may I?" must hear "no".
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import httpx

from meterline.sdk.config import EmitterError, MeterConfig
from meterline.sdk.context import current

NO_FEATURE = "*"  # the feature checked for a call made without one (docs/budgets.md)


@dataclass(frozen=True, slots=True)
class Entitlement:
    """The gateway's answer; money as Decimal, None when no budget applies."""

    subject: str
    feature: str
    has_access: bool
    limit: Decimal | None
    used: Decimal | None
    remaining: Decimal | None
    resets_at: str | None
    budgets: tuple[dict[str, Any], ...]


class CheckFailed(EmitterError):
    """The gateway did not answer the check (unreachable, 5xx, refused credentials)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BudgetExhausted(EmitterError):
    """A hard budget is used up: the provider call was not made."""

    def __init__(self, entitlement: Entitlement) -> None:
        self.entitlement = entitlement
        super().__init__(
            f"budget exhausted for customer {entitlement.subject!r}, feature "
            f"{entitlement.feature!r}: used {entitlement.used} of {entitlement.limit} USD "
            f"until {entitlement.resets_at}; the provider was not called"
        )


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def check(
    http: httpx.Client, config: MeterConfig, customer: str, feature: str, model: str | None = None
) -> Entitlement:
    """One entitlement check over ``http``; ``CheckFailed`` if there is no answer."""
    if not customer or not feature:
        raise ValueError("check needs a customer and a feature")
    url = (
        f"{config.url.rstrip('/')}/v1/subjects/{quote(customer, safe='')}"
        f"/entitlements/{quote(feature, safe='')}"
    )
    headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        response = http.get(
            url,
            params={"model": model} if model else None,
            headers=headers,
            timeout=config.timeout,
        )
    except httpx.HTTPError as exc:
        raise CheckFailed(f"entitlement check failed: {exc}") from exc
    if response.status_code != 200:
        raise CheckFailed(
            f"entitlement check answered {response.status_code}: {response.text[:300]}",
            response.status_code,
        )
    body = response.json()
    return Entitlement(
        subject=body["subject"],
        feature=body["feature"],
        has_access=bool(body["has_access"]),
        limit=_money(body["limit"]),
        used=_money(body["used"]),
        remaining=_money(body["remaining"]),
        resets_at=body["resets_at"],
        budgets=tuple(body["budgets"]),
    )


@runtime_checkable
class Checker(Protocol):
    def check(self, customer: str, feature: str, model: str | None = None) -> Entitlement: ...


def _allowed(checker: Checker, fail_open: bool, model: Any) -> None:
    scope = current()
    if scope.skip or not scope.customer:
        return  # not attributed to a customer: no budget can apply
    try:
        answer = checker.check(
            scope.customer, scope.feature or NO_FEATURE, model if isinstance(model, str) else None
        )
    except CheckFailed:
        if fail_open:
            return  # the app chose availability over the limit while the gateway is away
        raise
    if not answer.has_access:
        raise BudgetExhausted(answer)


def enforce(owner: Any, name: str, checker: Checker, fail_open: bool = True) -> None:
    """Replace ``owner.name`` (a provider method) by one that checks the budget first."""
    original: Callable[..., Any] = getattr(owner, name)
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def checked_async(*args: Any, **kwargs: Any) -> Any:
            await asyncio.to_thread(_allowed, checker, fail_open, kwargs.get("model"))
            return await original(*args, **kwargs)

        setattr(owner, name, checked_async)
    else:

        @functools.wraps(original)
        def checked(*args: Any, **kwargs: Any) -> Any:
            _allowed(checker, fail_open, kwargs.get("model"))
            return original(*args, **kwargs)

        setattr(owner, name, checked)


# The provider methods a call goes through, per client package (meterline/sdk/providers/).
PROVIDER_METHODS: dict[str, tuple[tuple[str, str], ...]] = {
    "openai": (("chat.completions", "create"), ("responses", "create")),
    "anthropic": (("messages", "create"), ("messages", "stream")),
    "google.genai": (("models", "generate_content"), ("models", "generate_content_stream")),
}


def enforce_client(client: Any, checker: Checker, fail_open: bool = True) -> None:
    module = type(client).__module__
    for package, methods in PROVIDER_METHODS.items():
        if module.startswith(package):
            for path, name in methods:
                owner = functools.reduce(getattr, path.split("."), client)
                if hasattr(owner, name):
                    enforce(owner, name, checker, fail_open)
            return
    raise TypeError(f"cannot enforce budgets on {type(client).__qualname__} from {module!r}")
