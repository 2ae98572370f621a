"""The foundation every layer may import: errors, settings, the log, shared types.

Nothing here imports another meterline package (docs/architecture.md; checked by
``lint-imports``).
"""
