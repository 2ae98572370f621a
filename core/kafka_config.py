"""librdkafka settings a deployment may pass through, and the ones it may not.

Managed Kafka (Confluent Cloud, MSK, Aiven, ...) needs client settings meterline
cannot foresee (SASL, TLS, DNS lookup, timeouts), so any librdkafka setting passes
through, from a properties file or METERLINE_KAFKA_EXTRA. A few are the billing
contract of docs/design.md#kafka and are refused unless they repeat the contract's
value: a pasted ``acks=1`` would acknowledge events a broker failure can lose, a
different partitioner would move keys (and their dedupe state) to other partitions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from core.errors import ConfigError

KafkaValue = str | int | float | bool | SecretStr | None

# key -> (the values that keep the contract, lower-cased; why it is fixed)
FIXED: dict[str, tuple[frozenset[str], str]] = {
    "enable.idempotence": (
        frozenset({"true"}),
        "the producer must be idempotent: retries would otherwise write copies",
    ),
    "acks": (
        frozenset({"all", "-1"}),
        "a 202 means every in-sync replica has the event; fewer acks can lose it",
    ),
    "partitioner": (
        frozenset({"murmur2_random"}),
        "every client must put a key in the same partition (dedupe is per partition)",
    ),
    "enable.auto.commit": (
        frozenset({"false"}),
        "offsets are committed only after the batch is in ClickHouse",
    ),
    "enable.auto.offset.store": (
        frozenset({"false"}),
        "offsets are committed only after the batch is in ClickHouse",
    ),
}
# Set through their own settings, so one value is used everywhere.
OWN_SETTING = {
    "bootstrap.servers": "METERLINE_KAFKA_BOOTSTRAP_SERVERS",
    "group.id": "METERLINE_CONSUMER_GROUP",
}
JAVA_ONLY = {
    "sasl.jaas.config": "a Java client setting: librdkafka takes sasl.username and "
    "sasl.password (METERLINE_KAFKA_SASL_USERNAME / METERLINE_KAFKA_SASL_PASSWORD)",
}
_SECRET_KEY = re.compile(r"password|secret|jaas|\.pem$|oauthbearer\.config")


def is_secret_key(key: str) -> bool:
    """Keys whose values are credentials: held as SecretStr, printed as '**********'."""
    return bool(_SECRET_KEY.search(key))


def _as_text(value: KafkaValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def contract_problems(config: Mapping[str, KafkaValue]) -> list[str]:
    """One message per key that would break the contract (empty: all fine)."""
    problems: list[str] = []
    for key, value in config.items():
        if key in OWN_SETTING:
            problems.append(f"{key}: set {OWN_SETTING[key]} instead")
        elif key in JAVA_ONLY:
            problems.append(f"{key} is {JAVA_ONLY[key]}")
        elif key in FIXED and _as_text(value).strip().lower() not in FIXED[key][0]:
            why = FIXED[key][1]
            problems.append(f"{key}={_as_text(value)!r} is not allowed ({why}); remove it")
    return problems


def wrap_secrets(config: Mapping[str, KafkaValue]) -> dict[str, KafkaValue]:
    """The same settings, with every credential held as a SecretStr."""
    return {
        key: SecretStr(_as_text(value))
        if is_secret_key(key) and value is not None and not isinstance(value, SecretStr)
        else value
        for key, value in config.items()
    }


def read_properties(path: Path) -> dict[str, KafkaValue]:
    """Parse a ``key=value`` properties file; errors name the file and the line.

    The subset every Kafka console hands out: ``#``/``!`` comments, blank lines,
    ``=`` or ``:`` separators, surrounding spaces dropped. Values stay strings
    (librdkafka parses them). No line continuations or escapes: such a file is
    refused rather than half-read.
    """
    where = f"METERLINE_KAFKA_PROPERTIES_FILE {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it: {exc}") from None
    config: dict[str, KafkaValue] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\"):
            raise ConfigError(f"{where}:{number}: line continuations are not supported")
        match = re.match(r"([^=:\s]+)\s*[=:]\s*(.*)", line)
        if match is None:
            # The line itself is not echoed: it may hold a credential.
            raise ConfigError(f"{where}:{number}: expected key=value")
        key, value = match.group(1), match.group(2)
        if key in config:
            raise ConfigError(f"{where}:{number}: {key} is set twice")
        config[key] = value
    if problems := contract_problems(config):
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return wrap_secrets(config)
