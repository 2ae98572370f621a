"""`pip install meterline` (no extras) is enough for the SDK and the CLI shell.

The server packages are made unimportable in a fresh interpreter; the SDK must
still import, build events and validate them, and `meterline --help` must run.
"""

from __future__ import annotations

import subprocess
import sys

SERVER_ONLY = [
    "confluent_kafka",
    "chdb",
    "clickhouse_connect",
    "genai_prices",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "pydantic_settings",
    "yaml",
]

BLOCK = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in SERVER_ONLY)


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True)


def test_sdk_imports_and_builds_valid_events_without_server_packages() -> None:
    result = run(
        "from meterline.sdk import Meter, wrap, customer, token_event\n"
        "from schemas import parse_event\n"
        "event = token_event(provider='openai', model='gpt-4o', customer='acme',"
        " source='/app', tokens={'input_tokens': 3, 'output_tokens': 1})\n"
        "assert not isinstance(parse_event(event), list), parse_event(event)\n"
        "print('ok')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cli_help_runs_without_server_packages() -> None:
    result = run("from meterline.cli import app\napp(['--help'], standalone_mode=False)\n")
    assert result.returncode == 0, result.stderr
    assert "dev" in result.stdout


def test_server_commands_say_which_extra_to_install() -> None:
    result = run("from meterline.cli import app\napp(['run'])\n")
    assert result.returncode == 2
    assert "pip install 'meterline[server]'" in result.stderr
