"""The /ui routes without a store: who gets in, and what an expired session gets back."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.testclient import TestClient

from dashboard import routes
from dashboard.session import COOKIE
from ingest.auth import ApiKey, Authenticator, KeyStore, hash_key
from ingest.guard import Guard
from ingest.ratelimit import RateLimiter
from query.reader import Reader


def _client() -> TestClient:
    keys = KeyStore(
        {
            hash_key("reader"): ApiKey(hash_key("reader"), "t"),
            hash_key("ingester"): ApiKey(hash_key("ingester"), "t", scopes=frozenset({"ingest"})),
        }
    )
    reader = Reader(None, Guard(Authenticator(keys), RateLimiter(100, 100)), sql_token="admin")
    return TestClient(Starlette(routes=routes(reader, b"k" * 32)), follow_redirects=False)


def test_without_a_session_the_page_redirects_to_login_and_a_panel_tells_htmx_to() -> None:
    client = _client()
    assert client.get("/ui").headers["location"] == "/ui/login"
    panel = client.get("/ui/panel/customers")
    assert (panel.status_code, panel.headers["hx-redirect"]) == (401, "/ui/login")


def test_pages_run_only_this_origins_scripts_and_cannot_be_framed() -> None:
    policy = _client().get("/ui/login").headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_a_wrong_key_or_one_without_read_scope_gets_no_session() -> None:
    client = _client()
    for credential, why in (("nope", "not a valid API key"), ("ingester", "no read scope")):
        reply = client.post("/ui/login", data={"credential": credential})
        assert reply.status_code == 401 and why in reply.text
        assert COOKIE not in reply.cookies


def test_a_read_key_or_the_admin_token_gets_a_strict_httponly_cookie_then_logout_clears_it() -> (
    None
):
    client = _client()
    for credential in ("reader", "admin"):
        reply = client.post("/ui/login", data={"credential": credential})
        assert (reply.status_code, reply.headers["location"]) == (303, "/ui")
        header = reply.headers["set-cookie"].lower()
        assert "httponly" in header and "samesite=strict" in header and "path=/ui" in header
        assert credential not in reply.headers["set-cookie"]
        # No store in this process: the page says so instead of showing empty numbers.
        assert client.get("/ui").status_code == 404
    out = client.post("/ui/logout")
    assert out.headers["location"] == "/ui/login" and 'meterline_ui=""' in out.headers["set-cookie"]
