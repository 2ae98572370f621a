"""The read side: what apps, customers and finance read back (usage reads, SQL).

``Reader`` holds what the handlers share; ``routes(reader)`` are mounted next to the
gateway's write path by the shell.
"""

from query.reader import Reader
from query.routes import routes

__all__ = ["Reader", "routes"]
