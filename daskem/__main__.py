"""``python -m daskem``: the command line."""

from .cli import main

main()
