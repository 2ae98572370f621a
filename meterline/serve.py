"""Start the gateway and/or the processor in this process and stop them cleanly."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable

import uvicorn
from prometheus_client import start_http_server

from core.errors import ConfigError, PartFailed
from core.gc_policy import tune_gc
from core.health import Health, Liveness, PartProblem
from core.settings import Settings
from dashboard import routes as dashboard_routes
from ingest.app import Gateway, create_app
from ingest.auth import KeyStore
from ingest.ratelimit import RateLimiter
from ingest.requestlog import configure_logging
from meterline import runtime
from meterline.instance import Instance
from meterline.watchdog import Watchdog
from processor.runner import Processor, StepHooks
from query import Reader
from query import routes as read_routes
from query.alert_store import AlertStore
from query.alerts import Alerter, Deliverer
from query.budget_store import Budgets
from query.idempotency import StoredUsageLookup
from query.webhooks import Endpoints
from schemas.mappings import EventMappings
from sinks.base import Engine

log = logging.getLogger("meterline")


def _known_tenants(settings: Settings) -> Callable[[str], bool] | None:
    """Which tenants the processor accepts: those holding a key (the file is re-read
    on change), or only the open-mode tenant. A processor given neither trusts the
    log's tenant header (e.g. a processor-only deployment without the key file)."""
    if settings.api_keys_file is not None:
        store = KeyStore.from_file(settings.api_keys_file)
        return lambda tenant: tenant in store.tenants()
    if settings.open_mode:
        return lambda tenant: tenant == settings.tenant
    return None


class ProcessorThread:
    """``settings.workers`` processor loops on threads; ``stop()`` finishes their batches.

    With Kafka each worker is one consumer-group member (partitions are spread
    by the group coordinator); with the embedded log, which has no coordinator,
    worker i owns the partitions p with p % workers == i. Workers share the
    engine (chDB allows one process per folder, so this is how chDB scales out).
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        hooks: StepHooks | None = None,
        mappings: EventMappings | None = None,
    ) -> None:
        self._stop = threading.Event()
        mappings = mappings if mappings is not None else runtime.build_mappings(settings)
        self._engine = engine
        known_tenant = _known_tenants(settings)
        price_book = runtime.build_price_book(settings)
        self._dead_letters = dead_letters = runtime.LogDeadLetters(
            runtime.build_producer(settings, runtime.dlq_topic(settings))
        )
        self.processors = []
        count = runtime.build_admin(settings).partitions(settings.topic)
        self._stopping = False
        for index in range(settings.workers):
            partitions = None
            if settings.log == "embedded" and settings.workers > 1:
                partitions = [p for p in range(count) if p % settings.workers == index]
            self.processors.append(
                self._build(
                    settings,
                    runtime.build_consumer(settings, partitions),
                    engine,
                    price_book,
                    dead_letters,
                    known_tenant,
                    hooks=hooks,
                    liveness=Liveness(f"processor-{index}"),
                    mappings=mappings,
                )
            )
        self._threads = [
            threading.Thread(target=self._run, args=(p,), name=f"processor-{i}", daemon=True)
            for i, p in enumerate(self.processors)
        ]

    # One worker's loop; a seam for tests (a double subclass of Processor).
    _build = staticmethod(runtime.build_processor)

    def add_checks(self, health: Health) -> None:
        """Each worker's loop, and the dead-letter producer's own parts."""
        for processor in self.processors:
            health.add(processor.liveness.problem)
        health.add(self._dead_letters_problem)

    def _dead_letters_problem(self, stuck_after_s: float) -> PartProblem | None:
        return None if self._stopping else self._dead_letters.problem(stuck_after_s)

    def _run(self, processor: Processor) -> None:
        try:
            processor.run(self._stop)
            if not self._stop.is_set():
                processor.liveness.dead("the loop returned while it should run")
        except BaseException as exc:  # a bug: say so loudly, never die silently
            log.critical(
                "%s stopped on an unexpected error", processor.liveness.part, exc_info=True
            )
            # The watchdog stops the process (non-zero exit); offsets of the
            # failed batch are uncommitted, so the restart re-reads it.
            processor.liveness.dead(f"{type(exc).__name__}: {exc}")
        finally:
            processor.close()

    def start(self) -> None:
        self._repair()
        for thread in self._threads:
            thread.start()

    def _repair(self) -> None:
        """Before any worker reads: mend the dedupe index, the meters and the running
        totals a crash may have torn (processor/verify.py repair_at_start)."""
        from processor.verify import repair_at_start

        repaired = repair_at_start(self._engine.sql)
        if repaired.ids_restored:
            log.warning(
                "dedupe index: %d stored event(s) had no id in usage_event_ids "
                "(a crash between the parts of one INSERT); restored",
                repaired.ids_restored,
            )
        for difference in repaired.refused:
            log.error(
                "meters above what they sum (usage_meters over usage_events, or "
                "usage_meters_1h/_1h_tenant/_1d_tenant over usage_meters, or "
                "usage_meters_1d over usage_meters_1h, or usage_running_totals over "
                "usage_events), left as is: %s",
                difference,
            )

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping = True
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._dead_letters.close()  # after the workers: their last batch may publish


class AlerterThread:
    """The budget alerter (query/alerts.py) on its own thread, stopped before the store."""

    def __init__(self, settings: Settings, engine: Engine, deliverer: Deliverer) -> None:
        self.alerter = Alerter(
            Budgets(engine.sql),
            deliverer.store,
            deliverer,
            settings.billing_timezone,
            interval_s=settings.alert_interval_s,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self.alerter.run, args=(self._stop,), name="alerter", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 20.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)


def build_deliverer(settings: Settings, engine: Engine) -> Deliverer:
    """Webhook endpoints (a bad file fails here, naming it) and the alerts topic's producer."""
    return Deliverer(
        AlertStore(engine.sql),
        Endpoints(settings.alert_webhooks_file),
        runtime.build_producer(settings, runtime.alerts_topic(settings)),
        max_attempts=settings.alert_max_attempts,
        retry_base_s=settings.alert_retry_base_s,
    )


def _keep_data_private(settings: Settings) -> None:
    """Everything this process writes is its user's alone: files 0600, folders 0700.

    The data folder holds every tenant's raw events (the embedded log) and
    billing rows (chDB); world-readable, any local account could read them.
    The umask covers all this process creates from now on, chDB's files too (it
    runs in-process); SQLite gives -wal/-shm the mode of the log file itself.
    The chmods fix a folder and log left readable by earlier versions.
    """
    os.umask(0o077)
    if settings.log != "embedded" and settings.store != "chdb":
        return  # no local data: nothing to create
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    log_path = settings.embedded_log_path
    for path in (
        log_path,
        log_path.with_name(f"{log_path.name}-wal"),
        log_path.with_name(f"{log_path.name}-shm"),
    ):
        with contextlib.suppress(FileNotFoundError):
            path.chmod(0o600)


def serve(
    settings: Settings,
    *,
    gateway: bool = True,
    processor: bool = True,
    sql_endpoint: bool = True,
    on_started: Callable[[str], None] | None = None,
    processor_hooks: StepHooks | None = None,
) -> None:
    """Run until SIGINT/SIGTERM. The shutdown order flushes before it closes.

    ``processor_hooks``: called at the processor's checkpoint steps (the chaos
    tests' SIGKILL; tests/support/chaos_run.py); none in production.
    """
    configure_logging(settings.log_format)
    keys = KeyStore.from_file(settings.api_keys_file) if settings.api_keys_file else None
    if gateway and keys is None and not settings.open_mode:
        # Refuse rather than run an internet-facing gateway that bills whoever calls it.
        raise ConfigError(
            "METERLINE_API_KEYS_FILE is not set: create keys with `meterline keys new --tenant T`, "
            "or set METERLINE_OPEN_MODE=true to accept every request as tenant "
            f"{settings.tenant!r} (local use only: on a loopback METERLINE_HOST)"
        )
    if gateway and keys is None:
        log.warning(
            "OPEN MODE: no API keys configured, every request is accepted as tenant %r",
            settings.tenant,
        )
    # Before anything starts: a bad mapping fails naming its file, entry and field,
    # and the gateway and the processor below share this one object.
    mappings = runtime.build_mappings(settings)
    _keep_data_private(settings)
    runtime.ensure_topics(settings)
    health = Health(settings.stuck_after_s)
    engine: Engine | None = None
    # A ClickHouse server can be shared, so a gateway-only process opens it too
    # (GET /api/usage reads from it); a chDB folder cannot, so it stays closed there.
    if processor or sql_endpoint or settings.store == "clickhouse":
        engine = runtime.build_engine(settings)
    worker = None
    if processor and engine is not None:
        worker = ProcessorThread(settings, engine, processor_hooks, mappings)
        worker.add_checks(health)
    deliverer = build_deliverer(settings, engine) if engine is not None else None
    # Where a processor runs (each one's running totals are the same table, and the
    # claim in ClickHouse makes several alerters send each alert once).
    alerter = (
        AlerterThread(settings, engine, deliverer)
        if worker is not None and engine is not None and deliverer is not None and settings.alerts
        else None
    )
    # Once, before any worker or request allocates (freezing later would pin
    # whatever a batch in flight holds). The gateway allocates like the
    # processor, a dict per event: without it, collections over start-up's
    # objects stalled the loop and every request waiting on it (p99 at half
    # load, batches of 100: 40 -> 13-15 ms).
    tune_gc()
    if worker:
        worker.start()
    if alerter:
        alerter.start()

    def stop_alerts() -> None:
        # Before the store closes: a delivery in flight writes its log row.
        if alerter:
            alerter.stop()
        if deliverer is not None and deliverer.producer is not None:
            deliverer.producer.close()

    if not gateway:
        # No gateway to serve /metrics: expose the processor's own.
        start_http_server(settings.metrics_port, addr=settings.host)
        stop = threading.Event()
        # SIGTERM (docker stop, Kubernetes) finishes the batch in flight before exiting.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        watchdog = Watchdog(health, stop.set)
        watchdog.start()
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            watchdog.quiet()
            if worker:
                worker.stop()
            stop_alerts()
            if engine:
                engine.close()
            watchdog.close()
        _exit_if_failed(health)
        return

    producer = runtime.build_producer(settings)
    health.add(producer.problem)
    token = Instance.new_token() if sql_endpoint and engine is not None else None

    def shutdown() -> None:
        # 1. stop accepting (uvicorn did), 2. flush the producer, 3. finish the
        # processor's batch, 4. release the store. Reversing 3 and 4 would
        # fail the last insert and leave it to be re-read on the next start.
        watchdog.quiet()
        Instance.remove(settings.data_dir)
        producer.close()
        if worker:
            worker.stop()
        stop_alerts()
        if engine:
            engine.close()

    gateway_state = Gateway(
        producer,
        tenant=settings.tenant,
        max_body_bytes=settings.max_body_bytes,
        max_event_bytes=settings.max_event_bytes,
        max_batch_events=settings.max_batch_events,
        health=health,
        keys=keys,
        limiter=RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst),
        price_book=lambda: runtime.build_price_book(settings),
        webhook_origins=[o.strip() for o in settings.webhook_origins.split(",") if o.strip()],
        stored_usage=StoredUsageLookup(engine.sql) if engine is not None else None,
        mappings=mappings,
    )
    # The read side shares the gateway's guard: one key check, one rate limit per key.
    reader = Reader(
        engine.sql if engine is not None else None,
        gateway_state.guard,
        sql_token=token,
        billing_timezone=settings.billing_timezone,
        tokens=runtime.build_token_signer(settings),
        answer_cache_bytes=settings.query_cache_mb << 20,
    )
    reader.deliverer = deliverer
    mounts = [*read_routes(reader), *dashboard_routes(reader, _session_secret(settings))]
    app = create_app(gateway_state, mounts=mounts, on_shutdown=[shutdown])
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="warning", access_log=False
        )
    )

    def announce() -> None:
        # Write the address card only once the socket accepts connections.
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.started:
            port = settings.port or server.servers[0].sockets[0].getsockname()[1]
            url = f"http://{settings.host}:{port}"
            if token:
                Instance(url, os.getpid(), token).write(settings.data_dir)
            if on_started:
                on_started(url)

    def stop_server() -> None:
        server.should_exit = True  # uvicorn's own SIGTERM path, then shutdown() above

    watchdog = Watchdog(health, stop_server)
    threading.Thread(target=announce, name="announce", daemon=True).start()
    watchdog.start()
    try:
        server.run()
    finally:
        watchdog.close()
    _exit_if_failed(health)


def _session_secret(settings: Settings) -> bytes:
    """What signs dashboard sessions: the portal-token secret, so every gateway accepts them.

    Without one, a random secret per process: sessions then end when the process
    restarts and hold only on the process that set them (fine for one `meterline dev`).
    """
    if settings.portal_token_secret is not None:
        return settings.portal_token_secret.get_secret_value().encode()
    return secrets.token_bytes(32)


def _exit_if_failed(health: Health) -> None:
    """After a stop the watchdog asked for: exit non-zero, so the supervisor restarts us."""
    if health.failure is not None:
        raise PartFailed(f"{health.failure}; stopped for a restart")
