"""``python -m meterline.cli``: the same as the ``meterline`` script."""

from meterline.cli.app import main

main()
