"""``python -m generator``: the ``losscc`` command line."""

from .tools.cli import main

main()
