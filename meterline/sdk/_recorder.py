"""The ``track_*`` methods shared by ``Meter`` and ``AsyncMeter``.

They resolve the customer (explicit argument > context), build the event and
queue it. They never raise and never block: they return True when the event
was queued, False when it was not (no customer, opt-out, invalid, queue full).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from meterline.sdk import builders
from meterline.sdk._cloudevents import from_cloudevent
from meterline.sdk._core import Buffer, Event, Item, Stats, every_power_of_ten
from meterline.sdk.config import MeterConfig
from meterline.sdk.context import Scope, resolve

log = logging.getLogger("meterline.emitter")


class Recorder:
    config: MeterConfig
    _buffer: Buffer

    def _submit(self, item: Item) -> bool:
        raise NotImplementedError

    @property
    def source(self) -> str:
        return self.config.source

    def count(self, counter: str) -> None:
        """Add one to a ``Stats`` counter (the provider wrappers' estimated / error counts)."""
        self._buffer.count(counter)

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        with self._buffer.lock:
            return self._buffer.stats.copy()

    def scope(
        self,
        customer: str | None,
        feature: str | None = None,
        user: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Scope | None:
        """The attribution for one call, or None (and a counted warning) if untracked."""
        scope = resolve(customer, feature, user, metadata)
        if scope.skip:
            return None
        if not scope.customer:
            self._buffer.count("untracked_no_customer")
            with self._buffer.lock:
                untracked = self._buffer.stats.untracked_no_customer
            if every_power_of_ten(untracked):  # visible, without one log line per call
                log.warning(
                    "meterline: usage without a customer is not tracked (%d so far); pass "
                    "customer= or wrap the call in `with customer(...)`",
                    untracked,
                )
            return None
        return scope

    def submit_built(self, scope: Scope, make: Callable[[Scope], Event | None]) -> bool:
        """Queue an event built later, on the sender, from ``scope`` (for the wrappers)."""
        return self._submit(lambda: make(scope))

    def emit(self, event: Mapping[str, Any] | object) -> bool:
        """Queue a ready CloudEvent (validated on the sender, like every event).

        ``event`` is its JSON form (a mapping) or a ``CloudEvent`` of the official
        ``cloudevents`` SDK, converted by that SDK's own JSON format.
        """
        try:
            if isinstance(event, Mapping):
                return self._submit(dict(event))
            return self._submit(from_cloudevent(event))
        except Exception as exc:
            self._buffer.count("invalid")
            log.error("meterline: event not recorded: %s", exc)
            return False

    def _track(
        self, builder: Callable[..., Event], scope_args: dict[str, Any], **kwargs: Any
    ) -> bool:
        try:
            scope = self.scope(**scope_args)
            if scope is None:
                return False
            event = builder(
                source=self.config.source,
                customer=scope.customer,
                feature=scope.feature,
                user=scope.user,
                metadata=scope.metadata,
                **kwargs,
            )
            return self._submit(event)
        except Exception as exc:
            # Usage lost for good: an error, with the reason, and counted (stats().invalid).
            self._buffer.count("invalid")
            log.error("meterline: usage event not recorded: %s", exc)
            return False

    def track_tokens(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        reasoning_tokens: int = 0,
        input_audio_tokens: int = 0,
        output_audio_tokens: int = 0,
        estimated: bool = False,
        customer: str | None = None,
        feature: str | None = None,
        user: str | None = None,
        metadata: Mapping[str, str] | None = None,
        id: str | None = None,
        time: builders.TimeLike = None,
        unit_prices: Mapping[str, builders.PriceLike] | None = None,
    ) -> bool:
        """LLM token usage in meterline semantics (input includes cached tokens).

        ``unit_prices={"input_token": "0.00001", "output_token": "0.00003"}`` (per
        token; optional ``"currency"``) states this call's price, as AgentMeter's
        ``input_token_price``/``output_token_price``; the server uses it only for
        tenants allowed to price their own events (docs/pricing.md#client-prices).
        """
        tokens = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_tokens": cache_read_tokens,
            "cache_write_tokens": cache_write_tokens,
            "cache_write_1h_tokens": cache_write_1h_tokens,
            "reasoning_tokens": reasoning_tokens,
            "input_audio_tokens": input_audio_tokens,
            "output_audio_tokens": output_audio_tokens,
        }
        return self._track(
            builders.token_event,
            _scope(customer, feature, user, metadata),
            provider=provider,
            model=model,
            tokens=tokens,
            estimated=estimated,
            id=id,
            time=time,
            unit_prices=unit_prices,
        )

    def track_image(
        self,
        provider: str,
        model: str,
        *,
        images: int = 1,
        size: str = "",
        quality: str = "",
        customer: str | None = None,
        feature: str | None = None,
        user: str | None = None,
        metadata: Mapping[str, str] | None = None,
        id: str | None = None,
        time: builders.TimeLike = None,
        price: builders.PriceLike | None = None,
        currency: str = "USD",
    ) -> bool:
        """Generated images (count, size, quality); ``price``: this call's price per image."""
        return self._track(
            builders.image_event,
            _scope(customer, feature, user, metadata),
            provider=provider,
            model=model,
            images=images,
            size=size,
            quality=quality,
            id=id,
            time=time,
            unit_prices=_per_unit(price, currency),
        )

    def track_units(
        self,
        unit: str,
        quantity: Decimal | str | int | float = 1,
        *,
        provider: str = "",
        model: str = "",
        customer: str | None = None,
        feature: str | None = None,
        user: str | None = None,
        metadata: Mapping[str, str] | None = None,
        id: str | None = None,
        time: builders.TimeLike = None,
        price: builders.PriceLike | None = None,
        currency: str = "USD",
    ) -> bool:
        """A quantity of a custom unit: pages, seconds, API calls...

        ``price``: this call's price per unit (AgentMeter's ``unit_price``), used
        only where the tenant may price its own events (docs/pricing.md#client-prices).
        """
        return self._track(
            builders.units_event,
            _scope(customer, feature, user, metadata),
            unit=unit,
            quantity=quantity,
            provider=provider,
            model=model,
            id=id,
            time=time,
            unit_prices=_per_unit(price, currency),
        )

    def track_request(
        self,
        *,
        customer: str | None = None,
        feature: str | None = None,
        user: str | None = None,
        metadata: Mapping[str, str] | None = None,
        id: str | None = None,
        time: builders.TimeLike = None,
        price: builders.PriceLike | None = None,
        currency: str = "USD",
    ) -> bool:
        """One API call (units event: unit ``api_call``, quantity 1); ``price`` per call."""
        return self._track(
            builders.api_request_event,
            _scope(customer, feature, user, metadata),
            id=id,
            time=time,
            unit_prices=_per_unit(price, currency),
        )

    def track_charge(
        self,
        amount: Decimal | str | int | float,
        currency: str = "USD",
        *,
        description: str = "",
        customer: str | None = None,
        feature: str | None = None,
        user: str | None = None,
        metadata: Mapping[str, str] | None = None,
        id: str | None = None,
        time: builders.TimeLike = None,
    ) -> bool:
        """An instant charge of an exact amount (a float is read by its shortest repr)."""
        return self._track(
            builders.charge_event,
            _scope(customer, feature, user, metadata),
            amount=amount,
            currency=currency,
            description=description,
            id=id,
            time=time,
        )


def _scope(
    customer: str | None, feature: str | None, user: str | None, metadata: Mapping[str, str] | None
) -> dict[str, Any]:
    return {"customer": customer, "feature": feature, "user": user, "metadata": metadata}


def _per_unit(price: builders.PriceLike | None, currency: str) -> dict[str, Any] | None:
    return None if price is None else {"unit": price, "currency": currency}
