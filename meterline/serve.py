"""Start the gateway and/or the processor in this process and stop them cleanly."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

import uvicorn
from prometheus_client import start_http_server

from ingest.app import Gateway, create_app
from ingest.auth import KeyStore
from ingest.ratelimit import RateLimiter
from ingest.requestlog import configure_logging
from meterline import runtime
from meterline.config import Settings
from meterline.errors import ConfigError
from meterline.instance import Instance
from processor.runner import Processor, tune_gc
from sinks.base import Sink

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
    sink (chDB allows one process per folder, so this is how chDB scales out).
    """

    def __init__(self, settings: Settings, sink: Sink) -> None:
        self._stop = threading.Event()
        self._sink = sink
        known_tenant = _known_tenants(settings)
        price_book = runtime.build_price_book(settings)
        self._dead_letters = dead_letters = runtime.LogDeadLetters(
            runtime.build_producer(settings, runtime.dlq_topic(settings))
        )
        self.processors = []
        count = runtime.build_admin(settings).partitions(settings.topic)
        for index in range(settings.workers):
            partitions = None
            if settings.log == "embedded" and settings.workers > 1:
                partitions = [p for p in range(count) if p % settings.workers == index]
            self.processors.append(
                runtime.build_processor(
                    settings,
                    runtime.build_consumer(settings, partitions),
                    sink,
                    price_book,
                    dead_letters,
                    known_tenant,
                )
            )
        self._threads = [
            threading.Thread(target=self._run, args=(p,), name=f"processor-{i}", daemon=True)
            for i, p in enumerate(self.processors)
        ]

    def _run(self, processor: Processor) -> None:
        try:
            processor.run(self._stop)
        except BaseException:  # a bug: say so loudly, never die silently
            log.exception("processor stopped on an unexpected error")
            os._exit(70)  # offsets of the failed batch are uncommitted: a restart re-reads it
        finally:
            processor.close()

    def start(self) -> None:
        self._repair()
        for thread in self._threads:
            thread.start()

    def _repair(self) -> None:
        """Before any worker reads: mend the dedupe index and the meters a crash
        may have torn (processor/verify.py repair_at_start)."""
        from processor.verify import repair_at_start

        repaired = repair_at_start(self._sink)
        if repaired.ids_restored:
            log.warning(
                "dedupe index: %d stored event(s) had no id in usage_event_ids "
                "(a crash between the parts of one INSERT); restored",
                repaired.ids_restored,
            )
        for difference in repaired.refused:
            log.error("usage_meters is above usage_events, left as is: %s", difference)

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._dead_letters.close()  # after the workers: their last batch may publish


def serve(
    settings: Settings,
    *,
    gateway: bool = True,
    processor: bool = True,
    sql_endpoint: bool = True,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM. The shutdown order flushes before it closes."""
    configure_logging(settings.log_format)
    keys = KeyStore.from_file(settings.api_keys_file) if settings.api_keys_file else None
    if gateway and keys is None and not settings.open_mode:
        # Refuse rather than run an internet-facing gateway that bills whoever calls it.
        raise ConfigError(
            "METERLINE_API_KEYS_FILE is not set: create keys with `meterline keys new --tenant T`, "
            "or set METERLINE_OPEN_MODE=true to accept every request as tenant "
            f"{settings.tenant!r} (local use only)"
        )
    if gateway and keys is None:
        log.warning(
            "OPEN MODE: no API keys configured, every request is accepted as tenant %r",
            settings.tenant,
        )
    runtime.ensure_topics(settings)
    sink: Sink | None = None
    # A ClickHouse server can be shared, so a gateway-only process opens it too
    # (GET /api/usage reads from it); a chDB folder cannot, so it stays closed there.
    if processor or sql_endpoint or settings.store == "clickhouse":
        sink = runtime.build_sink(settings)
        sink.migrate(settings.billing_timezone)
    worker = ProcessorThread(settings, sink) if processor and sink is not None else None
    # Once, before any worker or request allocates (freezing later would pin
    # whatever a batch in flight holds). The gateway allocates like the
    # processor, a dict per event: without it, collections over start-up's
    # objects stalled the loop and every request waiting on it (p99 at half
    # load, batches of 100: 40 -> 13-15 ms).
    tune_gc()
    if worker:
        worker.start()
    if not gateway:
        # No gateway to serve /metrics: expose the processor's own.
        start_http_server(settings.metrics_port, addr=settings.host)
        stop = threading.Event()
        # SIGTERM (docker stop, Kubernetes) finishes the batch in flight before exiting.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            if worker:
                worker.stop()
            if sink:
                sink.close()
        return

    producer = runtime.build_producer(settings)
    token = Instance.new_token() if sql_endpoint and sink is not None else None

    def shutdown() -> None:
        # 1. stop accepting (uvicorn did), 2. flush the producer, 3. finish the
        # processor's batch, 4. release the store. Reversing 3 and 4 would
        # fail the last insert and leave it to be re-read on the next start.
        Instance.remove(settings.data_dir)
        producer.close()
        if worker:
            worker.stop()
        if sink:
            sink.close()

    app = create_app(
        Gateway(
            producer,
            tenant=settings.tenant,
            max_body_bytes=settings.max_body_bytes,
            max_event_bytes=settings.max_event_bytes,
            max_batch_events=settings.max_batch_events,
            sink=sink,
            sql_token=token,
            keys=keys,
            limiter=RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst),
            price_book=lambda: runtime.build_price_book(settings),
            webhook_origins=[o.strip() for o in settings.webhook_origins.split(",") if o.strip()],
        ),
        on_shutdown=[shutdown],
    )
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

    threading.Thread(target=announce, name="announce", daemon=True).start()
    server.run()
