"""KafkaAdmin.ensure_topic: the topic serves once it returns, or start-up fails with a reason."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import LogUnavailable
from core.log.base import OutMessage
from core.log.kafka import KafkaAdmin, KafkaProducer

pytestmark = pytest.mark.kafka


class _LeadersLateAdmin:
    """The real AdminClient, except that its first metadata answers show no leaders.

    That is what a broker says in the moment after it created a topic (longest
    on its first start): each partition's leader is -1.
    """

    def __init__(self, inner: Any, leaderless_answers: int) -> None:
        self._inner = inner
        self.leaderless_answers_left = leaderless_answers

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        metadata = self._inner.list_topics(*args, **kwargs)
        if self.leaderless_answers_left > 0:
            self.leaderless_answers_left -= 1
            for topic in metadata.topics.values():
                for partition in topic.partitions.values():
                    partition.leader = -1
        return metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_ensure_topic_returns_only_once_every_partition_has_a_leader(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    admin = KafkaAdmin(kafka_bootstrap)
    late = _LeadersLateAdmin(admin._admin, leaderless_answers=3)
    admin._admin = late

    admin.ensure_topic(unique_topic, 3)

    assert late.leaderless_answers_left == 0  # it kept asking until leaders were reported
    assert sorted(admin.end_offsets(unique_topic)) == [0, 1, 2]


def test_a_new_topic_takes_reads_and_writes_at_once_after_ensure_topic(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    admin = KafkaAdmin(kafka_bootstrap)
    # Many partitions: the more leaders to elect, the longer a new topic is not ready.
    admin.ensure_topic(unique_topic, 24)

    assert admin.end_offsets(unique_topic) == dict.fromkeys(range(24), 0)
    producer = KafkaProducer(kafka_bootstrap, unique_topic)
    producer.publish_sync([OutMessage(f"k{i}".encode(), b"{}") for i in range(100)])
    producer.close()
    assert sum(admin.end_offsets(unique_topic).values()) == 100


def test_waiting_for_leaders_of_a_topic_that_never_gets_them_fails_naming_it(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    admin = KafkaAdmin(kafka_bootstrap)

    with pytest.raises(LogUnavailable, match=rf"{unique_topic}.*not ready after 0.5 s"):
        admin.wait_for_leaders(unique_topic, timeout_s=0.5)  # never created
