"""The emitter SDK's public surface: ``from meterline.sdk import Meter, wrap, customer``.

A module of its own (not re-exported from ``meterline``) so the CLI does not
import the SDK's dependencies on every start.
"""

from ingest.emitter import *  # noqa: F403
from ingest.emitter import __all__ as __all__
