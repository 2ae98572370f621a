"""Build the parts once from the settings and hand them out (no globals).

Imports of the heavy optional packages (confluent-kafka, chdb, clickhouse-connect)
happen here, inside functions, so the emitter SDK installs without them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from core.errors import ConfigError
from core.settings import Settings

if TYPE_CHECKING:
    from core.health import Liveness, PartProblem
    from core.log.base import LogAdmin, LogConsumer, LogProducer
    from pricing.base import PriceBook
    from processor.decode import DeadLetter
    from processor.runner import DeadLetterSink, Processor, StepHooks
    from query.portal_tokens import TokenSigner
    from schemas.mappings import EventMappings
    from sinks.base import Engine


def _need(extra: str, exc: ImportError) -> ConfigError:
    return ConfigError(f"{exc.name} is not installed: run \"pip install 'meterline[{extra}]'\"")


def dlq_topic(settings: Settings) -> str:
    return f"{settings.topic}.dlq"


def alerts_topic(settings: Settings) -> str:
    """Budget alerts as CloudEvents, for other consumers (query/alerts.py)."""
    return f"{settings.topic}.alerts"


def build_admin(settings: Settings) -> LogAdmin:
    if settings.log == "kafka":
        try:
            from core.log.kafka import KafkaAdmin
        except ImportError as exc:
            raise _need("server", exc) from exc
        return KafkaAdmin(settings.kafka_bootstrap_servers, settings.kafka_config())
    from core.log.embedded import EmbeddedAdmin

    return EmbeddedAdmin(settings.embedded_log_path)


def ensure_topics(settings: Settings) -> None:
    """Create the event topic and its DLQ if missing (never re-partitions)."""
    admin = build_admin(settings)
    admin.ensure_topic(settings.topic, settings.partitions, settings.replication_factor)
    admin.ensure_topic(dlq_topic(settings), 1, settings.replication_factor)
    admin.ensure_topic(alerts_topic(settings), 1, settings.replication_factor)


def build_producer(settings: Settings, topic: str | None = None) -> LogProducer:
    topic = topic or settings.topic
    if settings.log == "kafka":
        from core.log.kafka import KafkaProducer

        return KafkaProducer(
            settings.kafka_bootstrap_servers,
            topic,
            settings.produce_timeout_s,
            settings.kafka_config(),
        )
    from core.log.embedded import EmbeddedProducer

    return EmbeddedProducer(settings.embedded_log_path, topic, settings.produce_timeout_s)


def build_consumer(settings: Settings, partitions: Sequence[int] | None = None) -> LogConsumer:
    if settings.log == "kafka":
        from core.log.kafka import KafkaConsumer

        return KafkaConsumer(
            settings.kafka_bootstrap_servers,
            settings.topic,
            settings.consumer_group,
            settings.kafka_config(),
        )
    from core.log.embedded import EmbeddedConsumer

    return EmbeddedConsumer(
        settings.embedded_log_path, settings.topic, settings.consumer_group, partitions
    )


def build_engine(settings: Settings, migrate: bool = True) -> Engine:
    """The store's one engine connection, migrated (pending migrations only) unless told not to."""
    if settings.store == "clickhouse":
        try:
            from sinks.clickhouse_sink import ClickHouseEngine
        except ImportError as exc:
            raise _need("server", exc) from exc
        password = settings.clickhouse_password
        engine: Engine = ClickHouseEngine(
            settings.clickhouse_url,
            settings.database,
            user=settings.clickhouse_user,
            password=password.get_secret_value() if password is not None else None,
            ca_cert=str(settings.clickhouse_ca_cert) if settings.clickhouse_ca_cert else None,
            verify=settings.clickhouse_verify,
            cluster=settings.clickhouse_cluster,
            insert_quorum=settings.clickhouse_insert_quorum,
        )
    else:
        try:
            from sinks.chdb_sink import ChdbEngine
        except ImportError as exc:
            raise _need("server", exc) from exc
        engine = ChdbEngine(settings.chdb_path, settings.database)
    if migrate:
        from sinks.migrations import migrate as apply_ddl

        try:
            apply_ddl(engine, settings.billing_timezone, settings.clickhouse_cluster)
        except BaseException:
            engine.close()  # chDB: release the folder lock for whoever retries
            raise
    return engine


def build_token_signer(settings: Settings) -> TokenSigner | None:
    """The portal-token signer, or None when METERLINE_PORTAL_TOKEN_SECRET is unset."""
    from query.portal_tokens import TokenSigner

    if settings.portal_token_secret is None:
        return None
    previous = settings.portal_token_previous_secret
    return TokenSigner(
        settings.portal_token_secret.get_secret_value(),
        previous.get_secret_value() if previous is not None else None,
    )


def build_price_book(settings: Settings) -> PriceBook:
    """The pinned catalog plus the local price book when ``price_book`` is set.

    The book is validated completely here, so a bad entry stops the processor at
    start (PriceBookError names every bad entry) instead of mis-billing events.
    """
    from pricing import BookPriceBook, CatalogPriceBook

    book = (
        CatalogPriceBook()
        if settings.price_book is None
        else BookPriceBook.from_file(settings.price_book)
    )
    # Live processing and replay both build the book here: the same tenants may
    # state their own prices in both, so a replay reproduces the live money.
    book.allow_client_prices(settings.client_price_tenant_set)
    return book


def build_mappings(settings: Settings) -> EventMappings:
    """The event mappings (built-ins plus METERLINE_EVENT_MAPPINGS), validated completely.

    Built once per process and handed to the gateway, every processor worker and
    replay: a MappingError names the file, entry and field, at start-up.
    """
    from schemas.mappings import load_mappings

    return load_mappings(settings.event_mappings)


def build_processor(
    settings: Settings,
    consumer: LogConsumer,
    engine: Engine,
    price_book: PriceBook,
    dead_letters: DeadLetterSink,
    known_tenant: Callable[[str], bool] | None = None,
    hooks: StepHooks | None = None,
    liveness: Liveness | None = None,
    mappings: EventMappings | None = None,
) -> Processor:
    """A processor loop with the batch and dedupe settings (``meterline processor``'s).

    Its attempts file in the data folder counts batches that killed the process
    (processor/attempts.py): a record that kills it ``DEFAULT_LIMIT`` times is
    dead-lettered instead of wedging its partition.
    """
    from processor.attempts import Attempts
    from processor.runner import Processor

    return Processor(
        consumer,
        engine,
        price_book,
        dead_letters,
        batch_max_events=settings.batch_max_events,
        batch_max_wait_s=settings.batch_max_wait_s,
        dedupe_cache_ids=settings.dedupe_cache_ids,
        dedupe_horizon_days=settings.dedupe_horizon_days,
        known_tenant=known_tenant,
        hooks=hooks,
        liveness=liveness,
        attempts=Attempts(settings.data_dir / "processor-attempts.sqlite3"),
        mappings=mappings if mappings is not None else build_mappings(settings),
        pipelined=settings.processor_pipeline,
        native=settings.processor_native,
    )


class LogDeadLetters:
    """Dead letters to ``<topic>.dlq`` in the same log, with reason and origin headers."""

    def __init__(self, producer: LogProducer) -> None:
        self._producer = producer

    def publish(self, letters: Sequence[DeadLetter]) -> None:
        from processor.runner import dead_letter_message

        self._producer.publish_sync([dead_letter_message(letter) for letter in letters])

    def problem(self, stuck_after_s: float) -> PartProblem | None:
        return self._producer.problem(stuck_after_s)

    def close(self) -> None:
        self._producer.close()
