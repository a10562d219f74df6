"""``python -m kanipy``."""

from kanipy.cli import main

main()
