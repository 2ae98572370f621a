"""The ``/ui`` routes: login, the page, one partial per panel (htmx refresh), static files.

Mounted by the shell next to ``query.routes`` (``meterline.serve``). Reads go
through ``dashboard.panels``, which uses the query layer's own functions.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from core.errors import StoreError
from dashboard import panels
from dashboard.panels import Filters, Panel
from dashboard.session import COOKIE, SESSION_S, SessionSigner, Viewer
from ingest.guard import read_body
from query.portal_tokens import PREFIX, TokenRefused
from query.reader import Reader

PANELS = ("spend", "customers", "features", "margin", "budgets", "alerts", "invoices",
          "unpriced", "dead_letters", "lag")  # fmt: skip
LABELS = {"spend": "Spend", "customers": "Customers", "features": "Features",
          "margin": "Margin", "budgets": "Budgets", "alerts": "Alerts", "invoices": "Invoices",
          "unpriced": "Unpriced", "dead_letters": "Dead letters", "lag": "Lag"}  # fmt: skip
_MAX_LOGIN_BODY = 8192
# Live refresh: every 5 s while the period is short and still running (the demo looks
# alive), every minute for a long one (measured: 30 days of 200 customers' minute meters,
# 8.6 M rows, take ~3 s of engine time per full refresh on 2 cores), never for a period
# that has ended (its numbers change only by a replay or late events: reload for those).
REFRESH_S = 5
SLOW_REFRESH_S = 60
LIVE_DAYS = 7


def refresh_seconds(filters: Filters, now: datetime) -> int | None:
    try:
        start = date.fromisoformat(filters.start[:10])
        end = date.fromisoformat(filters.end[:10])
    except ValueError:
        return None
    if end <= now.date():
        return None
    return REFRESH_S if (end - start).days <= LIVE_DAYS else SLOW_REFRESH_S


# Only this origin's files run (a subject name that slipped past escaping could not load
# a script), and no other site may frame the page (clickjacking the logout or login).
SECURITY = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def _money(value: Any) -> str:
    """Half-even to the cent for reading; the exact value is in the cell's data-value."""
    amount = Decimal(str(value)).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    return f"${amount:,.2f}"


def _count(value: Any) -> str:
    return f"{int(value):,}"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("dashboard", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = _money
    env.filters["count"] = _count
    return env


class Dashboard:
    """The dashboard's handlers, sharing the read side's ``Reader`` and a session signer."""

    def __init__(self, reader: Reader, secret: bytes) -> None:
        self.reader = reader
        self.signer = SessionSigner(secret)
        self.env = _environment()

    # -- who is looking -------------------------------------------------------

    async def viewer(self, request: Request) -> Viewer | None:
        auth = self.reader.guard.auth
        if auth.keys is None:
            # Open mode (`meterline dev`): the API itself accepts anyone as this tenant,
            # so a login page would protect nothing.
            return Viewer(auth.open.tenant, "open-mode")
        cookie = request.cookies.get(COOKIE)
        viewer = self.signer.verify(cookie) if cookie else None
        if viewer is not None and viewer.token_id and self.reader.revocations is not None:
            # A revoked portal token ends the customer's session too (within the 2 s
            # the revocation list takes to reach every process).
            try:
                revoked = await asyncio.to_thread(
                    self.reader.revocations.is_revoked, viewer.tenant, viewer.token_id
                )
            except StoreError:
                return None  # fail closed, as read_principal does
            if revoked:
                return None
        return viewer

    def _login(self, credential: str) -> Viewer | str:
        """The viewer for a pasted credential, or why it was refused."""
        now_ms = time.time_ns() // 1_000_000
        expires = now_ms + SESSION_S * 1000
        reader = self.reader
        if credential.startswith(PREFIX):
            if reader.tokens is None:
                return "portal tokens are not enabled here (METERLINE_PORTAL_TOKEN_SECRET)"
            try:
                claims = reader.tokens.verify(credential, now_ms)
                if reader.revocations is not None and reader.revocations.is_revoked(
                    claims.tenant, claims.token_id
                ):
                    raise TokenRefused("token-revoked", "the token has been revoked")
            except TokenRefused as refused:
                return refused.detail
            return Viewer(
                claims.tenant,
                "portal-token",
                subject=claims.subject,
                features=claims.features,
                token_id=claims.token_id,
                # Not past the token's own expiry: the session is the token's, no longer.
                expires_ms=min(expires, claims.expires_ms),
            )
        if reader.sql_token and hmac.compare_digest(credential.encode(), reader.sql_token.encode()):
            return Viewer(reader.guard.auth.open.tenant, "admin-token", expires_ms=expires)
        keys = reader.guard.auth.keys
        key = keys.lookup(credential) if keys is not None else None
        if key is None:
            return "not a valid API key, admin token or portal token"
        if "read" not in key.scopes:
            return "this API key has no read scope"
        return Viewer(key.tenant, "api-key", expires_ms=expires)

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self._html("login.html", {"error": None})
        body = await read_body(request, _MAX_LOGIN_BODY)
        form = parse_qs(body.decode("utf-8", "replace"))
        credential = (form.get("credential") or [""])[0].strip()
        outcome = await asyncio.to_thread(self._login, credential) if credential else "paste a key"
        if isinstance(outcome, str):
            return self._html("login.html", {"error": outcome}, 401)
        response = RedirectResponse("/ui", 303)
        response.set_cookie(
            COOKIE,
            self.signer.sign(outcome),
            max_age=(outcome.expires_ms - time.time_ns() // 1_000_000) // 1000,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/ui/login", 303)
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
        return response

    # -- pages ----------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return RedirectResponse("/ui/login", 303)
        if self.reader.sink is None:
            return self._html("nostore.html", {}, 404)
        filters, problems = self._filters(request, viewer)
        try:
            shown = await asyncio.to_thread(self._panels, viewer, filters, PANELS)
        except StoreError as exc:
            return self._html("unavailable.html", {"error": str(exc)}, 503)
        for panel in shown.values():
            problems.extend(panel.problems)
        return self._html(
            "page.html",
            {
                "viewer": viewer,
                "filters": filters,
                "problems": problems,
                "panels": shown,
                "order": PANELS,
                "labels": LABELS,
                "query": urlencode(filters.params()),
                "presets": self._presets(viewer, filters),
                "refresh_s": self._refresh(filters),
            },
        )

    async def panel(self, request: Request) -> Response:
        """One panel's HTML, for htmx's refresh every few seconds."""
        name = request.path_params["name"]
        if name not in PANELS:
            return Response("no such panel", 404)
        viewer = await self.viewer(request)
        if viewer is None:
            # htmx follows HX-Redirect: an expired session goes back to the login page.
            return Response("", 401, headers={"HX-Redirect": "/ui/login"})
        if self.reader.sink is None:
            return Response("this process has no store", 404)
        filters, _ = self._filters(request, viewer)
        try:
            shown = await asyncio.to_thread(self._panels, viewer, filters, (name,))
        except StoreError as exc:
            return self._html("unavailable.html", {"error": str(exc)}, 503)
        context = {
            "viewer": viewer,
            "filters": filters,
            "panel": shown[name],
            "query": urlencode(filters.params()),
            "refresh_s": self._refresh(filters),
        }
        return self._html("panel.html", context)

    def _filters(self, request: Request, viewer: Viewer) -> tuple[Filters, list[Any]]:
        today = datetime.now(ZoneInfo(self.reader.billing_timezone)).date()
        return Filters.from_params(request.query_params, today)

    def _refresh(self, filters: Filters) -> int | None:
        return refresh_seconds(filters, datetime.now(ZoneInfo(self.reader.billing_timezone)))

    def _presets(self, viewer: Viewer, filters: Filters) -> list[tuple[str, str]]:
        today = datetime.now(ZoneInfo(self.reader.billing_timezone)).date()
        tomorrow = today.fromordinal(today.toordinal() + 1).isoformat()
        out = []
        for label, first, window in (
            ("Today", today.isoformat(), "hour"),
            ("7 days", today.fromordinal(today.toordinal() - 6).isoformat(), "day"),
            ("30 days", today.fromordinal(today.toordinal() - 29).isoformat(), "day"),
            ("This month", today.replace(day=1).isoformat(), "day"),
        ):
            params = {**filters.params(), "from": first, "to": tomorrow, "window": window}
            out.append((label, urlencode(params)))
        return out

    def _panels(self, viewer: Viewer, filters: Filters, names: tuple[str, ...]) -> dict[str, Panel]:
        reader, now = self.reader, panels.utc_now()
        build: dict[str, Callable[[], Panel]] = {
            "spend": lambda: panels.spend(reader, viewer, filters),
            "customers": lambda: panels.top_customers(reader, viewer, filters),
            "features": lambda: panels.by_feature(reader, viewer, filters),
            "margin": lambda: panels.margin(reader, viewer, filters),
            "budgets": lambda: panels.budgets(reader, viewer, now),
            "alerts": lambda: panels.alerts(reader, viewer),
            "invoices": lambda: panels.invoices(
                reader, viewer, filters.start[:7] or panels.this_month(now, reader.billing_timezone)
            ),
            "unpriced": lambda: panels.unpriced(reader, viewer, filters),
            "dead_letters": panels.dead_letters,
            "lag": lambda: panels.lag(reader, viewer),
        }
        return {name: build[name]() for name in names}

    def _html(self, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        html = self.env.get_template(template).render(**context)
        # The page is per viewer and live: never cached by a proxy or the browser.
        return HTMLResponse(html, status, headers={"cache-control": "no-store", **SECURITY})


Endpoint = Callable[[Request], Awaitable[Response]]


def routes(reader: Reader, secret: bytes) -> list[BaseRoute]:
    """The ``/ui`` routes; ``secret`` signs session cookies (32+ bytes)."""
    ui = Dashboard(reader, secret)
    # HTML pages for people, not API operations: left out of /openapi.json on purpose
    # (the numbers they show are the documented /v1/usage's, linked from each panel).
    return [
        Route("/ui", ui.page, methods=["GET"], include_in_schema=False),
        Route("/ui/login", ui.login, methods=["GET", "POST"], include_in_schema=False),
        Route("/ui/logout", ui.logout, methods=["POST"], include_in_schema=False),
        Route("/ui/panel/{name}", ui.panel, methods=["GET"], include_in_schema=False),
        Mount("/ui/static", StaticFiles(packages=[("dashboard", "static")]), name="ui-static"),
    ]
