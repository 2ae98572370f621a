"""The ``meterline`` command line (``meterline --help``): the shell's front door.

``app`` wires the commands; ``_shared`` holds what they share (consoles,
settings, error exits); one module per group of commands.
"""

from meterline.cli.app import app, main

__all__ = ["app", "main"]
