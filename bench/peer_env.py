"""The Quix Streams peer's own venv, built from a hashed lock, kept apart from meterline's.

quixstreams pins confluent-kafka < 2.13 while meterline uses 2.16.1, so the
peer cannot share meterline's lock; it runs as a subprocess of this venv.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "bench-peer"
LOCK = ROOT / "bench" / "peer-requirements.lock"


class PeerUnavailable(Exception):
    """The peer venv could not be built (the message says why)."""


def ready() -> bool:
    """True when the venv exists and matches the lock (nothing to build)."""
    stamp = VENV / ".lock-sha256"
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    return (VENV / "bin" / "python").exists() and stamp.exists() and stamp.read_text() == digest


def ensure(say: Callable[[str], None] = print) -> Path:
    """The peer venv's python, (re)built when the lock changed."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".lock-sha256"
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    say(f"building the peer venv in {VENV} (pip install --require-hashes -r {LOCK.name}) ...")
    try:
        if not python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True
            )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--require-hashes", "-r", str(LOCK)],
            check=True,
            capture_output=True,
            timeout=1200,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise PeerUnavailable(
            f"cannot build {VENV}: {exc}; {detail.decode(errors='replace')[-400:]}"
        ) from exc
    stamp.write_text(digest)
    return python


def price_dict() -> dict[str, list[str]]:
    """Per (provider, model) of the bench data: USD per million input, output and
    cache-read tokens now, from the same pinned genai-prices catalog meterline uses."""
    from genai_prices import data_snapshot

    from bench.data import MODELS

    snapshot = data_snapshot.get_snapshot()
    now = datetime.now(UTC)
    out: dict[str, list[str]] = {}
    for provider, model, _, _ in MODELS:
        try:
            found = snapshot.find_provider_model(model, None, provider, None)[1]
        except LookupError:
            continue
        prices = found.get_prices(now)
        values = []
        for name in ("input_mtok", "output_mtok", "cache_read_mtok"):
            value = getattr(prices, name, None)
            base = getattr(value, "base", value)  # tiered: the first tier
            values.append(str(base if base is not None else 0))
        out[f"{provider}|{model}"] = values
    return out
