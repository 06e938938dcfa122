"""``python -m examples.workers``: the same as ``python examples/workers/run.py``."""

from .run import main

main()
