"""Commands that talk to a running gateway's API (budgets, alerts): one client, one error form."""

from __future__ import annotations

import os
from typing import Annotated, Any

import orjson
import typer

from meterline.cli._shared import console, fail

Url = Annotated[str | None, typer.Option("--url", help="Gateway URL (env METERLINE_URL).")]
Key = Annotated[str | None, typer.Option("--api-key", help="API key (env METERLINE_API_KEY).")]


def api_request(method: str, path: str, url: str | None, key: str | None, body: Any = None) -> Any:
    import httpx

    base = (url or os.environ.get("METERLINE_URL") or "http://127.0.0.1:8080").rstrip("/")
    key = key or os.environ.get("METERLINE_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.request(
            method,
            base + path,
            headers=headers,
            content=orjson.dumps(body) if body is not None else None,
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the gateway at {base}: {exc}", 1) from None
    if response.status_code >= 400:
        try:
            problem = response.json()
            problems = "; ".join(
                f"{p.get('field')}: {p.get('message')}" for p in problem.get("problems", [])
            )
            detail = problem.get("detail", response.text) + (f" ({problems})" if problems else "")
        except ValueError:
            detail = response.text
        raise fail(f"{response.status_code}: {detail}", 1)
    return response.json() if response.content else None


def print_json(value: Any) -> None:
    console.print_json(orjson.dumps(value).decode())
