"""The dashboard at ``/ui``: server-rendered pages over the read side (docs/dashboard.md).

Layered above ``query``: every number comes from the query layer's own code
(``query.meters`` for usage, the budget, alert and invoice stores), never from a
second copy of that SQL.
"""

from dashboard.app import routes

__all__ = ["routes"]
