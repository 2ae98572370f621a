"""deploy/docker-compose.yml is a valid Compose file (checked without a Docker engine)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_docker_compose_config_accepts_the_deploy_file() -> None:
    tool = subprocess.run(
        ["bash", str(ROOT / "deploy" / "compose-tools.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    result = subprocess.run(
        [
            *shlex.split(tool.stdout.strip()),
            "-f",
            str(ROOT / "deploy" / "docker-compose.yml"),
            "config",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for service in ("kafka:", "clickhouse:", "gateway:", "processor:", "migrate:"):
        assert service in result.stdout
    assert "healthcheck:" in result.stdout
