"""Where the tests get a real Kafka broker (order: docs/design.md#real-components-in-tests):

1. ``KAFKA_BOOTSTRAP_SERVERS`` from the environment (the operator said which broker
   the suite may write to);
2. testcontainers, when a Docker engine answers;
3. a broker the suite starts itself: Apache Kafka from Maven Central through
   ``deploy/kafka/kafka.sh``, on a free port, with its own data folder under the
   repo's ``.cache/kafka-tests/``, stopped and deleted when the session ends.

Never whatever happens to answer on 9092: that may be a colleague's broker, or a
human's dev broker full of data, and the suite creates topics and writes events.
Never a skip either: with CI=true the Kafka tests must run, so a broker that
cannot be had is an error that names what was tried.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"
# Where kafka.sh keeps the jars for humans (``make kafka-up``); every test broker
# links them from here, so they are downloaded once per checkout.
SHARED_HOME = ROOT / ".cache" / "kafka"
SESSIONS = ROOT / ".cache" / "kafka-tests"


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port_pair() -> int:
    """A free loopback port whose successor is free too (kafka.sh puts the controller there)."""
    return free_ports(2)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PrivateBroker:
    """A broker of the caller's own: a free port, its own data folder under ``home``.

    For the session broker and for tests that stop and restart one. ``down`` and
    ``up`` keep the port and the data, so a restart is the same broker. The jars
    are linked from the checkout's kafka.sh home (fetched there first if missing).
    """

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port_pair()
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _run(self, command: str, home: Path) -> None:
        env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.port + 1),
            "METERLINE_KAFKA_HOME": str(home),
            "KAFKA_STOP_TIMEOUT": "20",
        }
        command_line = ["bash", str(SCRIPT), command]
        done = subprocess.run(command_line, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"deploy/kafka/kafka.sh {command} (home {home}, port {self.port}) failed:\n"
                f"{done.stderr[-3000:]}"
            )

    def _link_jars(self) -> None:
        if (self.home / "libs").exists():
            return
        if not (SHARED_HOME / "libs").is_dir():
            self._run("fetch", SHARED_HOME)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "libs").symlink_to(SHARED_HOME / "libs")

    def up(self) -> None:
        self._link_jars()
        self._run("up", self.home)
        # kafka.sh up succeeds when ANY Kafka answers on the port: if another
        # broker took it between free_port_pair() and the start, this one never
        # ran, and the tests would write to (and stop) someone else's broker.
        if self.pid() is None:
            raise RuntimeError(
                f"another Kafka broker answers on {self.bootstrap}; the test broker did not start"
            )

    def pid(self) -> int | None:
        """The broker's JVM if it runs, from kafka.sh's pid file."""
        try:
            pid = int((self.home / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def down(self) -> None:
        self._run("down", self.home)


def _reap_stale_sessions() -> None:
    """Stop and delete the brokers of sessions that died uncleanly (kill -9, Ctrl-C twice).

    A session folder is named after its pytest pid (``session-<pid>`` or
    ``session-<pid>.<label>``); kafka.sh's ``down`` only ever
    signals the JVM started for that folder, so a reused pid costs nothing worse
    than a folder kept until the next session.
    """
    if not SESSIONS.is_dir():
        return
    for folder in SESSIONS.glob("session-*"):
        try:
            owner = int(folder.name.removeprefix("session-").partition(".")[0])
        except ValueError:
            continue
        if _pid_alive(owner):
            continue
        with contextlib.suppress(RuntimeError, OSError, ValueError):
            port = int((folder / "port").read_text())
            PrivateBroker(folder, port).down()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def session_broker(label: str = "") -> Iterator[str]:
    """The suite's own broker for one test session; stopped and deleted at the end.

    ``label``: a second broker of the same pytest process (the fixture's own test)
    must never share, and so stop, the session's broker folder.
    """
    _reap_stale_sessions()
    home = SESSIONS / (f"session-{os.getpid()}" + (f".{label}" if label else ""))
    shutil.rmtree(home, ignore_errors=True)
    broker = PrivateBroker(home)
    home.mkdir(parents=True)
    (home / "port").write_text(str(broker.port))  # for _reap_stale_sessions
    try:
        try:
            broker.up()
        except RuntimeError as exc:
            raise RuntimeError(
                "no Kafka broker: KAFKA_BOOTSTRAP_SERVERS is unset, no Docker engine answers, "
                f"and the suite could not start its own: {exc}"
            ) from exc
        yield broker.bootstrap
    finally:
        with contextlib.suppress(RuntimeError):
            broker.down()
        shutil.rmtree(home, ignore_errors=True)


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
    with session_broker() as bootstrap:
        yield bootstrap
