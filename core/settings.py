"""The one validated configuration object, built once at start-up.

Every setting can come from an argument, the environment (``METERLINE_<NAME>``)
or a ``.env`` file. A bad value fails at once with a message naming the setting
(``ConfigError: METERLINE_PARTITIONS: ...``) instead of failing later mid-stream.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError
from core.kafka_config import (
    KafkaValue,
    contract_problems,
    read_properties,
    wrap_secrets,
)

_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # METERLINE_TENANT's and API keys' rule


class Settings(BaseSettings):
    """Runtime settings. Field docs are the reference (``meterline config`` prints them)."""

    model_config = SettingsConfigDict(
        env_prefix="METERLINE_", env_file=".env", extra="ignore", frozen=True
    )

    # --- where data lives -------------------------------------------------------------
    data_dir: Path = Field(
        Path(".meterline"),
        description="Folder for the embedded log and the chDB database (embedded mode).",
    )
    log: Literal["embedded", "kafka"] = Field(
        "embedded", description="The event log: 'embedded' (local SQLite WAL) or 'kafka'."
    )
    store: Literal["chdb", "clickhouse"] = Field(
        "chdb", description="The ClickHouse engine: 'chdb' (in-process) or 'clickhouse' (server)."
    )

    # --- Kafka ----------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    topic: str = Field("meterline.usage", description="Topic (or embedded log name) for events.")
    partitions: int = Field(
        12,
        ge=1,
        le=1024,
        description="Partitions when meterline creates the topic. Never change it on a live "
        "topic: keys would move partitions and per-partition dedupe state with them.",
    )
    replication_factor: int = Field(1, ge=1, le=16, description="Replication when creating it.")
    consumer_group: str = Field("meterline-processor", description="Processor consumer group.")
    produce_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Longest wait for the log to acknowledge a request (503)."
    )
    kafka_extra: dict[str, KafkaValue] = Field(
        default_factory=dict,
        description="Extra librdkafka settings (JSON object), on top of "
        "METERLINE_KAFKA_PROPERTIES_FILE. Secret-bearing keys (*.password, *.secret, "
        "sasl.jaas.config, ssl.key.pem) are held as secrets and never printed.",
    )
    kafka_properties_file: Path | None = Field(
        None,
        description="A librdkafka/Java-style properties file (key=value lines, # comments), "
        "e.g. the client config a managed Kafka's console hands out.",
    )
    kafka_security_protocol: Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"] | None = (
        Field(None, description="librdkafka security.protocol (sasl_ssl for managed Kafka).")
    )
    kafka_sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None
    ) = Field(None, description="librdkafka sasl.mechanism (Confluent Cloud: PLAIN; MSK: SCRAM).")
    kafka_sasl_username: str | None = Field(None, description="SASL user name (or API key).")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (or API secret); never printed or logged."
    )
    kafka_ssl_ca_location: Path | None = Field(
        None, description="CA bundle for the brokers' TLS (default: the system's trust store)."
    )

    # --- ClickHouse -----------------------------------------------------------------------
    clickhouse_url: str = Field(
        "http://default:@127.0.0.1:8123",
        description="ClickHouse server URL (store=clickhouse); https:// for TLS. A password "
        "in it is moved to METERLINE_CLICKHOUSE_PASSWORD, so it is never printed.",
    )
    clickhouse_user: str | None = Field(
        None, description="ClickHouse user (default: the URL's, else 'default')."
    )
    clickhouse_password: SecretStr | None = Field(
        None, description="ClickHouse password (default: none); never printed or logged."
    )
    clickhouse_ca_cert: Path | None = Field(
        None, description="CA bundle for an https:// ClickHouse (default: the system's)."
    )
    clickhouse_verify: bool = Field(
        True, description="Verify the https:// ClickHouse server's certificate and host name."
    )
    clickhouse_cluster: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        description="ClickHouse cluster name (store=clickhouse): migrations create tables ON "
        "CLUSTER as Replicated*MergeTree with Distributed tables over them (docs/scaling.md).",
    )
    clickhouse_insert_quorum: int | None = Field(
        None,
        ge=2,
        description="With a cluster: replicas of a shard that must hold each INSERT before it "
        "returns (insert_quorum). Set it to the replicas per shard so a dedupe lookup on any "
        "replica sees every acknowledged write (docs/scaling.md, replication lag).",
    )
    database: str = Field("meterline", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    billing_timezone: str = Field(
        "UTC", description="IANA timezone for day/month rollup boundaries (e.g. Europe/Paris)."
    )

    # --- read side ------------------------------------------------------------------------
    portal_token_secret: SecretStr | None = Field(
        None,
        description="Server secret (>= 32 characters, e.g. `openssl rand -base64 48`) that "
        "signs customer-scoped read tokens (POST /v1/portal/tokens). The same on every "
        "gateway. Unset: minting answers 404. Never printed or logged.",
    )
    portal_token_previous_secret: SecretStr | None = Field(
        None,
        description="During a rotation, the secret being retired: tokens it signed are still "
        "accepted (new ones are signed with METERLINE_PORTAL_TOKEN_SECRET). Remove it once "
        "the longest token lifetime (24 h) has passed.",
    )

    query_cache_mb: int = Field(
        64,
        ge=0,
        le=65_536,
        description="Memory for GET /v1/usage answers of closed time (before the current UTC "
        "hour), kept exact: any write into closed time drops them (docs/query.md). Only "
        "with chDB in the same process; 0 turns it off.",
    )

    # --- gateway --------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Gateway bind address.")
    port: int = Field(8080, ge=0, le=65535, description="Gateway port (0 = any free port).")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=65_536, description="Largest request body.")
    max_event_bytes: int = Field(
        256 * 1024, ge=65_536, description="Largest single event (CloudEvents asks for >= 64 KiB)."
    )
    max_batch_events: int = Field(5000, ge=1, le=100_000, description="Most events per request.")
    tenant: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Tenant written with events while API keys are not configured (open mode).",
    )
    api_keys_file: Path | None = Field(
        None,
        description="YAML/JSON file of API keys: 'sha256:<hex of the key>' -> tenant or "
        "{tenant, rate_limit, burst, scopes}. Create keys with `meterline keys new`.",
    )
    open_mode: bool = Field(
        False,
        description="Accept requests without API keys as tenant METERLINE_TENANT. Only for "
        "local use; `meterline gateway`/`run` refuse to start without keys unless this is set. "
        "Only on a loopback METERLINE_HOST unless METERLINE_OPEN_MODE_ON_NETWORK allows more.",
    )
    open_mode_on_network: Literal["no", "i-understand"] = Field(
        "no",
        description="'i-understand' lets open mode (no API keys) listen on a non-loopback "
        "METERLINE_HOST: anyone who reaches the port can then write usage billed to "
        "METERLINE_TENANT and read that tenant's usage back.",
    )
    rate_limit_rps: float = Field(
        0, ge=0, description="Default requests/s per API key (0 = unlimited); 429 above it."
    )
    rate_limit_burst: int = Field(
        0, ge=0, description="Default burst per API key (0 = the rate, rounded up)."
    )
    webhook_origins: str = Field(
        "*",
        description="Comma-separated WebHook-Request-Origin values granted by the CloudEvents "
        "webhook handshake (OPTIONS); '*' grants any (API keys still guard every POST).",
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="Gateway log lines: 'json' (one object per line) or 'text'."
    )

    # --- pricing --------------------------------------------------------------------------
    price_book: Path | None = Field(
        None, description="Local price book (YAML) on top of the genai-prices catalog."
    )
    client_price_tenants: str = Field(
        "",
        description="Comma-separated tenants whose events may carry their own prices "
        "(data.unit_prices, AgentMeter's per-call prices): for them price_usd is the stated "
        "price and the row says price_source='client'. '*' = every tenant. Default: none; "
        "other tenants' stated prices are ignored and priced from the book "
        "(docs/pricing.md#client-prices).",
    )
    event_mappings: Path | None = Field(
        None,
        description="YAML file of event mappings: other CloudEvent types metered as token or "
        "unit usage, fields by JSONPath (docs/gateway.md#event-mappings). The built-in "
        "mappings (the OpenMeter OpenAI example's type 'openai') apply without it. Gateway, "
        "processor and replay must be given the same file.",
    )

    # --- processor ------------------------------------------------------------------------
    # 50k, not 20k, since token events take the column path (docs/benchmarks.md, round 7):
    # the engine's fixed cost per INSERT and its merges are now most of the CPU per
    # event, and a larger batch pays them less often (+15-40% events/s on 500k events)
    # for ~50 MiB more peak RSS; 100k gained nothing more and cost ~200 MiB.
    batch_max_events: int = Field(50_000, ge=1, le=1_000_000, description="Most events per insert.")
    batch_max_wait_s: float = Field(
        0.5, gt=0, le=60, description="Longest a polled event waits before its batch is written."
    )
    dedupe_cache_ids: int = Field(
        200_000, ge=0, description="Recent (tenant, source, id) keys kept in memory per process."
    )
    processor_pipeline: bool = Field(
        True,
        description="Write batch N (stored-key lookup, dead letters, INSERT) on a writer thread "
        "while the next batch is polled, decoded and priced: 1.08-1.22x the events/s of one "
        "thread on 2 cores, for +150-250 MiB (docs/benchmarks.md, rounds 8-10). Off: one "
        "thread does all, less memory; for a single core (docs/operations.md).",
    )
    processor_native: bool = Field(
        True,
        description="Decode, price and build token events as Arrow columns with the native "
        "decoder (Rust, built by `make setup`); off, or when it was not built, every record "
        "takes the per-record Python path: the same rows at about twice the CPU.",
    )
    dedupe_horizon_days: int = Field(
        35,
        ge=1,
        le=3650,
        description="Events older than this (event time) go to the DLQ: dedupe is only "
        "guaranteed inside the horizon, so a billing system must not guess beyond it.",
    )
    metrics_port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Prometheus /metrics port of a processor-only process (`meterline "
        "processor`); processes with a gateway serve /metrics on the gateway port.",
    )
    workers: int = Field(
        1, ge=1, le=64, description="Processor workers (consumer-group members) in this process."
    )

    # --- budget alerts (docs/budgets.md#alerts) ------------------------------------------
    alerts: bool = Field(
        True,
        description="Run the budget alerter in processes that run a processor: it checks "
        "the running totals every METERLINE_ALERT_INTERVAL_S and sends one alert per "
        "budget, period and threshold crossed.",
    )
    alert_webhooks_file: Path | None = Field(
        None,
        description="YAML file, one entry per tenant: `tenant: {url: https://..., secret: "
        "whsec_...}` (Standard Webhooks secret, base64 after `whsec_`). A tenant without an "
        "entry gets its alerts on the log topic `<topic>.alerts` only. Re-read on change.",
    )
    alert_interval_s: float = Field(
        1.0, ge=0.05, le=60, description="How often the alerter reads the running totals."
    )
    alert_max_attempts: int = Field(
        8, ge=1, le=50, description="Webhook attempts per delivery before it is marked failed."
    )
    alert_retry_base_s: float = Field(
        1.0,
        gt=0,
        le=600,
        description="First retry delay of a webhook; doubled per attempt, at most 10 min.",
    )

    # --- supervision ----------------------------------------------------------------------
    stuck_after_s: float = Field(
        300.0,
        ge=1,
        le=86_400,
        description="A background part busy with one piece of work for longer than this (a "
        "batch insert retried while the store is away, a log append) is stuck: /readyz "
        "answers 503 and the process exits non-zero for its supervisor to restart it. Long "
        "enough to ride out a store or broker restart; a restart re-creates dropped tables.",
    )

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, data: Any) -> Any:
        """Move a password in METERLINE_CLICKHOUSE_URL into the secret field.

        A URL is printed in errors and `repr`; a password left in it would be too.
        """
        if not isinstance(data, dict) or not isinstance(data.get("clickhouse_url"), str):
            return data
        parts = urlsplit(data["clickhouse_url"])
        if parts.password is None:
            return data
        if data.get("clickhouse_password") not in (None, ""):
            raise ValueError(
                "METERLINE_CLICKHOUSE_URL carries a password and METERLINE_CLICKHOUSE_PASSWORD "
                "is set too: keep only METERLINE_CLICKHOUSE_PASSWORD"
            )
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return {
            **data,
            "clickhouse_url": parts._replace(netloc=f"{user}@{host}" if user else host).geturl(),
            "clickhouse_password": unquote(parts.password),
        }

    @field_validator("clickhouse_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://user@host:8443")
        return value

    @field_validator("kafka_extra", mode="after")
    @classmethod
    def _check_kafka_extra(cls, value: dict[str, KafkaValue]) -> dict[str, KafkaValue]:
        if problems := contract_problems(value):
            raise ValueError("; ".join(problems))
        return wrap_secrets(value)

    @field_validator("portal_token_secret", "portal_token_previous_secret")
    @classmethod
    def _check_token_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # A short secret can be brute-forced offline from one token: then anyone
        # mints tokens for any subject of any tenant.
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -base64 48`)")
        return value

    @field_validator("client_price_tenants")
    @classmethod
    def _check_client_price_tenants(cls, value: str) -> str:
        for tenant in (t.strip() for t in value.split(",")):
            if tenant and tenant != "*" and not _TENANT.fullmatch(tenant):
                raise ValueError(f"{tenant[:80]!r} is not a tenant name (or '*' for every tenant)")
        return value

    @property
    def client_price_tenant_set(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.client_price_tenants.split(",") if t.strip())

    @field_validator("billing_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA timezone name") from None
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> Settings:
        if self.kafka_properties_file is not None:
            read_properties(self.kafka_properties_file)  # fail at start, naming file and line
        if (self.kafka_sasl_username is None) != (self.kafka_sasl_password is None):
            raise ValueError(
                "METERLINE_KAFKA_SASL_USERNAME and METERLINE_KAFKA_SASL_PASSWORD go together: "
                "set both or neither"
            )
        if self.clickhouse_cluster is not None and self.store != "clickhouse":
            raise ValueError(
                "METERLINE_CLICKHOUSE_CLUSTER needs METERLINE_STORE=clickhouse "
                "(chDB is one process, never a cluster)"
            )
        if self.clickhouse_insert_quorum is not None and self.clickhouse_cluster is None:
            raise ValueError(
                "METERLINE_CLICKHOUSE_INSERT_QUORUM needs METERLINE_CLICKHOUSE_CLUSTER "
                "(a single server has no replicas to wait for)"
            )
        if self.max_event_bytes > self.max_body_bytes:
            raise ValueError("max_event_bytes must not exceed max_body_bytes")
        if (
            self.open_mode
            and self.api_keys_file is None
            and not _is_loopback(self.host)
            and self.open_mode_on_network != "i-understand"
        ):
            # Open mode bills whoever calls to METERLINE_TENANT, and serves its usage
            # to whoever asks: on a reachable interface, forged bills and leaked data.
            raise ValueError(
                f"METERLINE_HOST={self.host!r} is not a loopback address, and open mode "
                "(no METERLINE_API_KEYS_FILE) would let anyone who reaches it write and read "
                "usage: bind to 127.0.0.1, configure API keys (`meterline keys new`), or set "
                "METERLINE_OPEN_MODE_ON_NETWORK=i-understand"
            )
        return self

    def kafka_config(self) -> dict[str, str | int | float | bool]:
        """The librdkafka settings for every client, secrets revealed: for the client only.

        Layers, later wins: the properties file, METERLINE_KAFKA_EXTRA, then the
        METERLINE_KAFKA_SASL_*/SSL_*/SECURITY_PROTOCOL settings. Bootstrap servers and
        the producer/consumer contract (idempotence, acks, partitioner, commits) are
        not overridable: see core/kafka_config.py.
        """
        layered: dict[str, KafkaValue] = {}
        if self.kafka_properties_file is not None:
            layered.update(read_properties(self.kafka_properties_file))
        layered.update(self.kafka_extra)
        named: dict[str, KafkaValue] = {
            "security.protocol": self.kafka_security_protocol,
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": self.kafka_sasl_password,
            "ssl.ca.location": str(self.kafka_ssl_ca_location)
            if self.kafka_ssl_ca_location
            else None,
        }
        layered.update({k: v for k, v in named.items() if v is not None})
        return {
            k: v.get_secret_value() if isinstance(v, SecretStr) else v
            for k, v in layered.items()
            if v is not None
        }

    @property
    def embedded_log_path(self) -> Path:
        return self.data_dir / "log.sqlite3"

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "chdb"


def _is_loopback(host: str) -> bool:
    """True only for addresses no other machine can reach ('' and '0.0.0.0' mean every one)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface: not provably local


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once; turn pydantic's error into one naming each bad setting."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a rule across settings: its message names them
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            name = "_".join(str(part) for part in err["loc"])
            problems.append(f"METERLINE_{name.upper()}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
