"""The session cookie: only what the dashboard signed, only until it expires."""

from __future__ import annotations

import pytest

from dashboard.session import SessionSigner, Viewer

SECRET = b"s" * 32
NOW = 1_800_000_000_000


def test_a_signed_viewer_round_trips_with_its_customer_restriction() -> None:
    signer = SessionSigner(SECRET)
    viewer = Viewer("t", "portal-token", "acme", ("chat",), "tok123", NOW + 1000)
    assert signer.verify(signer.sign(viewer), NOW) == viewer


def test_a_changed_claim_is_refused_before_it_is_read() -> None:
    signer = SessionSigner(SECRET)
    payload, _, mac = signer.sign(Viewer("tenant-a", "api-key", expires_ms=NOW + 1000)).partition(
        "."
    )
    forged = SessionSigner(SECRET).sign(Viewer("tenant-b", "api-key", expires_ms=NOW + 1000))
    assert signer.verify(f"{forged.partition('.')[0]}.{mac}", NOW) is None
    assert signer.verify(payload, NOW) is None
    assert signer.verify("garbage", NOW) is None


def test_a_cookie_signed_with_another_secret_or_expired_is_refused() -> None:
    viewer = Viewer("t", "api-key", expires_ms=NOW + 1000)
    assert SessionSigner(b"x" * 32).verify(SessionSigner(SECRET).sign(viewer), NOW) is None
    assert SessionSigner(SECRET).verify(SessionSigner(SECRET).sign(viewer), NOW + 1000) is None


def test_a_short_secret_is_refused_naming_the_rule() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        SessionSigner(b"short")
