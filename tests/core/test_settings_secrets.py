"""Kafka and ClickHouse credentials: passed to the clients, never printed or logged."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from core.errors import ConfigError, StoreUnavailable
from core.settings import Settings, load_settings
from meterline import runtime

CH_PASS = "ch-Secret-1a2b"
SASL_PASS = "sasl-Secret-3c4d"
EXTRA_PASS = "extra-Secret-5e6f"
FILE_PASS = "file-Secret-7a8b"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def secured(tmp_path: Path, **overrides: object) -> Settings:
    props = tmp_path / "client.properties"
    props.write_text(
        "# from the managed Kafka console\n"
        "security.protocol=SASL_SSL\n"
        "ssl.key.password = " + FILE_PASS + "\n"
        "acks=all\n\n"
        "client.dns.lookup=use_all_dns_ips\n"
    )
    values: dict[str, object] = {
        "clickhouse_url": f"https://writer:{CH_PASS}@ch.example:8443",
        "kafka_properties_file": props,
        "kafka_extra": {"ssl.keystore.password": EXTRA_PASS, "session.timeout.ms": 45000},
        "kafka_security_protocol": "sasl_ssl",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "meter",
        "kafka_sasl_password": SASL_PASS,
        **overrides,
    }
    return load_settings(**values)


def test_repr_and_str_of_settings_hold_no_credential(tmp_path: Path) -> None:
    settings = secured(tmp_path)
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        for secret in (CH_PASS, SASL_PASS, EXTRA_PASS):
            assert secret not in text
    assert settings.clickhouse_url == "https://writer@ch.example:8443"


def test_kafka_config_layers_file_then_extra_then_named_settings(tmp_path: Path) -> None:
    config = secured(tmp_path).kafka_config()
    assert config == {
        "security.protocol": "sasl_ssl",  # the named setting wins over the file's SASL_SSL
        "ssl.key.password": FILE_PASS,
        "acks": "all",
        "client.dns.lookup": "use_all_dns_ips",
        "ssl.keystore.password": EXTRA_PASS,
        "session.timeout.ms": 45000,
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "meter",
        "sasl.password": SASL_PASS,
    }


def test_a_password_in_the_url_and_in_its_own_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="keep only METERLINE_CLICKHOUSE_PASSWORD"):
        load_settings(clickhouse_url="http://u:a@h:8123", clickhouse_password="b")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"acks": 1}, "METERLINE_KAFKA_EXTRA: acks='1' is not allowed"),
        ({"enable.idempotence": False}, "enable.idempotence='false' is not allowed"),
        ({"partitioner": "consistent_random"}, "partitioner='consistent_random' is not allowed"),
        ({"enable.auto.commit": True}, "enable.auto.commit='true' is not allowed"),
        ({"bootstrap.servers": "k:9092"}, "set METERLINE_KAFKA_BOOTSTRAP_SERVERS instead"),
        ({"group.id": "g"}, "set METERLINE_CONSUMER_GROUP instead"),
    ],
)
def test_kafka_extra_cannot_break_the_delivery_contract(
    extra: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(kafka_extra=extra)


def test_a_java_jaas_line_in_the_properties_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    props = tmp_path / "java.properties"
    props.write_text(
        "bootstrap.servers=b:9092\nsasl.jaas.config=PlainLoginModule required password='x';\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(kafka_properties_file=props)
    text = str(caught.value)
    assert f"METERLINE_KAFKA_PROPERTIES_FILE {props}" in text
    assert "set METERLINE_KAFKA_BOOTSTRAP_SERVERS instead" in text
    assert "librdkafka takes sasl.username and sasl.password" in text
    assert "'x'" not in text


def test_a_malformed_properties_line_is_named_without_echoing_it(tmp_path: Path) -> None:
    props = tmp_path / "bad.properties"
    props.write_text("# ok\nsasl.password " + FILE_PASS + "\n")
    with pytest.raises(ConfigError, match=r"bad.properties:2: expected key=value") as caught:
        load_settings(kafka_properties_file=props)
    assert FILE_PASS not in str(caught.value)


def test_sasl_user_without_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="set both or neither"):
        load_settings(kafka_sasl_username="u")


def test_an_unreachable_clickhouse_error_and_logs_do_not_carry_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = secured(
        tmp_path,
        store="clickhouse",
        clickhouse_url=f"http://writer:{CH_PASS}@127.0.0.1:{_free_port()}",
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreUnavailable) as caught:
        runtime.build_engine(settings)
    assert "127.0.0.1" in str(caught.value)  # the error still says where
    assert CH_PASS not in str(caught.value)
    assert CH_PASS not in caplog.text
