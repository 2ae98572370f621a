"""``meterline run`` with a SIGKILL armed at one checkpoint step: the chaos tests' process.

The product has no crash switch; this harness passes the ``Chaos`` hooks to the
same ``serve`` that ``meterline run`` calls. Usage (what ``MeterlineProcess``
runs when a test sets ``METERLINE_CHAOS_KILL_AT``)::

    python -m tests.support.chaos_run --port 8080

``--processor``: the processor only, as ``meterline processor`` runs it (what
``Service`` in services.py starts when a test arms a chaos variable).

(or ``METERLINE_CHAOS_STORE_AWAY``: every INSERT fails, see chaos.py).
"""

from __future__ import annotations

import os
import sys

from core.settings import load_settings
from meterline.serve import serve
from tests.support.chaos import ENV, KILL_ON_ENV, STORE_AWAY_ENV, Chaos


def main(argv: list[str]) -> None:
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else None
    processor_only = "--processor" in argv
    serve(
        load_settings(port=port),
        gateway=not processor_only,
        sql_endpoint=not processor_only,
        processor_hooks=Chaos(
            os.environ.get(ENV), STORE_AWAY_ENV in os.environ, os.environ.get(KILL_ON_ENV)
        ),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
