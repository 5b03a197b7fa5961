"""``python -m daskem.cli``: the command line."""

from . import main

main()
