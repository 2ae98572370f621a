"""Who is being metered: the customer context (contextvars).

``customer("acme", feature="chat")`` works as a context manager and as a
decorator (sync and async functions). Contexts nest: inner values win, unset
inner values inherit from outer ones. An explicit ``customer=`` on a call
beats any context. contextvars make this safe across threads (each thread
starts empty) and asyncio tasks (each task copies its parent's context).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Scope:
    """Attribution of usage: customer (CloudEvents subject), feature, end user, labels."""

    customer: str = ""
    feature: str = ""
    user: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    skip: bool = False  # True inside ``no_metering()``

    def over(self, outer: Scope) -> Scope:
        """This scope layered over ``outer``: set values win, metadata merges."""
        return Scope(
            customer=self.customer or outer.customer,
            feature=self.feature or outer.feature,
            user=self.user or outer.user,
            metadata={**outer.metadata, **self.metadata} if self.metadata else outer.metadata,
            skip=self.skip or outer.skip,
        )


EMPTY = Scope()
_current: contextvars.ContextVar[Scope] = contextvars.ContextVar("meterline_scope", default=EMPTY)


def current() -> Scope:
    return _current.get()


def resolve(
    customer: str | None = None,
    feature: str | None = None,
    user: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Scope:
    """Explicit per-call values layered over the current context."""
    explicit = Scope(customer or "", feature or "", user or "", metadata or {})
    return explicit.over(_current.get())


class _ScopeManager:
    """Context manager and decorator in one (sync and async callables)."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._tokens: list[contextvars.Token[Scope]] = []

    def __enter__(self) -> Scope:
        merged = self._scope.over(_current.get())
        self._tokens.append(_current.set(merged))
        return merged

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        scope = self._scope
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with _ScopeManager(scope):
                    return await func(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with _ScopeManager(scope):
                return func(*args, **kwargs)

        return cast(F, run)


def customer(
    customer: str = "",
    *,
    feature: str = "",
    user: str = "",
    metadata: Mapping[str, str] | None = None,
) -> _ScopeManager:
    """Attribute usage inside the block (or decorated function) to ``customer``."""
    return _ScopeManager(Scope(customer, feature, user, dict(metadata or {})))


def no_metering() -> _ScopeManager:
    """Opt out: provider calls inside the block are not metered."""
    return _ScopeManager(Scope(skip=True))


def set_customer(
    customer: str = "",
    *,
    feature: str = "",
    user: str = "",
    metadata: Mapping[str, str] | None = None,
) -> contextvars.Token[Scope]:
    """For frameworks with separate before/after hooks (Flask): pair with ``reset_customer``."""
    return _current.set(Scope(customer, feature, user, dict(metadata or {})).over(_current.get()))


def reset_customer(token: contextvars.Token[Scope]) -> None:
    _current.reset(token)
