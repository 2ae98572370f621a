"""``Reader``: what the read-side handlers share, built once by the shell and passed in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest.guard import Guard
from query.alert_store import AlertStore
from query.budget_store import Budgets
from query.invoices import Invoices
from query.portal_tokens import Revocations, TokenSigner
from query.running_totals import TotalsSnapshots
from query.sealed_answers import SealedAnswers
from sinks.reader import SqlReader

if TYPE_CHECKING:
    from query.alerts import Deliverer


class Reader:
    """The store to read, who may read it, and the admin token for ``/v1/sql``.

    ``sink=None``: this process serves no reads (a gateway-only process on a chDB
    folder it cannot open); the routes answer 404 rather than 5xx, because no retry
    changes that.

    ``tokens``: the signer of customer-scoped portal tokens (None: not enabled,
    METERLINE_PORTAL_TOKEN_SECRET unset). Revocations live in the store, so they
    are checked only where there is one.
    """

    def __init__(
        self,
        sink: SqlReader | None,
        guard: Guard,
        *,
        sql_token: str | None = None,
        max_sql_bytes: int = 1_000_000,
        billing_timezone: str = "UTC",
        tokens: TokenSigner | None = None,
        answer_cache_bytes: int = 64 << 20,
    ) -> None:
        self.sink = sink
        self.guard = guard
        self.sql_token = sql_token
        self.max_sql_bytes = max_sql_bytes
        self.billing_timezone = billing_timezone
        self.tokens = tokens
        # GET /v1/usage's answers of closed time, only where this process sees every
        # write to the store (query/sealed_answers.py); None: every read goes to it.
        self.sealed = (
            SealedAnswers(sink.changes, answer_cache_bytes)
            if sink is not None and sink.changes is not None and answer_cache_bytes > 0
            else None
        )
        self.revocations = Revocations(sink) if sink is not None else None
        # Budgets and the per-tenant snapshots the entitlement check answers from
        # (query/entitlements.py); a budget change here drops the tenant's snapshot.
        self.budgets = Budgets(sink) if sink is not None else None
        self.totals = (
            TotalsSnapshots(self.budgets, billing_timezone) if self.budgets is not None else None
        )
        if self.budgets is not None and self.totals is not None:
            self.budgets.on_change = self.totals.invalidate
        # Budget alerts (query/alert_routes.py); ``deliverer`` is set by the shell
        # where webhooks can be sent (redelivery), None elsewhere.
        self.alerts = AlertStore(sink) if sink is not None else None
        self.deliverer: Deliverer | None = None
        # Frozen invoices (query/invoice_routes.py, docs/invoices.md).
        self.invoices = Invoices(sink) if sink is not None else None
