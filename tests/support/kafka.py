"""Where the tests get a real Kafka broker (order: docs/design.md#real-components-in-tests):

1. ``KAFKA_BOOTSTRAP_SERVERS`` from the environment;
2. testcontainers, when a Docker engine answers;
3. the project's own broker: ``deploy/kafka/kafka.sh up`` (Apache Kafka from Maven Central).

Never a skip: with CI=true the Kafka tests must run, so a broker that cannot be
had is an error that names what was tried.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def kafka_broker() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    script = ROOT / "deploy" / "kafka" / "kafka.sh"
    was_up = subprocess.run(["bash", str(script), "status"], capture_output=True).returncode == 0
    started = subprocess.run(["bash", str(script), "up"], capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(
            "no Kafka broker: KAFKA_BOOTSTRAP_SERVERS is unset, no Docker engine answers, and "
            f"deploy/kafka/kafka.sh up failed:\n{started.stderr[-3000:]}"
        )
    try:
        yield "127.0.0.1:9092"
    finally:
        if not was_up:
            subprocess.run(["bash", str(script), "down"], capture_output=True)


class PrivateBroker:
    """A broker of the test's own (own port, own data folder), for tests that stop it.

    Never stop the shared broker: other tests use it. The jars already fetched for
    the shared broker are linked in, so this costs no second download.
    """

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"

    def _run(self, command: str) -> None:
        env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "METERLINE_KAFKA_HOME": str(self.home),
            "KAFKA_STOP_TIMEOUT": "20",
        }
        shared_libs = ROOT / ".cache" / "kafka" / "libs"
        if command == "up" and shared_libs.is_dir() and not (self.home / "libs").exists():
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "libs").symlink_to(shared_libs)
        script = ROOT / "deploy" / "kafka" / "kafka.sh"
        subprocess.run(["bash", str(script), command], env=env, check=True, capture_output=True)

    def up(self) -> None:
        self._run("up")

    def down(self) -> None:
        self._run("down")
