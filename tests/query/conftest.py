"""The read side is mounted next to the gateway: its tests use the gateway's fixtures."""

from tests.ingest.conftest import log_path, make_client, producer, tap

__all__ = ["log_path", "make_client", "producer", "tap"]
