"""Event models (pydantic), their JSON Schema export and the ClickHouse DDL.

Public surface:

- ``CloudEvent``: the CloudEvents 1.0 envelope, validated strictly.
- ``TokenUsage``, ``ImageUsage``, ``UnitsUsage``, ``ChargeUsage``: the ``data`` of
  each meterline event type, keyed by ``EventType``.
- ``Problem``: one machine-readable validation problem.
"""

from schemas.envelope import CloudEvent, parse_event
from schemas.problems import Problem
from schemas.usage import (
    USAGE_MODELS,
    ChargeUsage,
    EventType,
    ImageUsage,
    TokenUsage,
    UnitsUsage,
)

__all__ = [
    "USAGE_MODELS",
    "ChargeUsage",
    "CloudEvent",
    "EventType",
    "ImageUsage",
    "Problem",
    "TokenUsage",
    "UnitsUsage",
    "parse_event",
]
