"""``python -m examples.temporal``: see ``run.py``."""

from .run import main

main()
