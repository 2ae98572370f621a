"""meterline: usage metering for AI products.

The import packages are laid out by job:

- ``schemas``   event models, JSON Schema export, ClickHouse DDL
- ``ingest``    the HTTP gateway (CloudEvents in, log out)
- ``processor`` the consumer: dedupe, price, window, write
- ``sinks``     where priced rows go (chDB embedded, ClickHouse server)
- ``meterline`` configuration, the log abstraction and the ``meterline`` CLI
"""

__version__ = "0.1.0"
