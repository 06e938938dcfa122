"""The benchmarks of asyncsdk: scripts that print tables, never part of the test pass/fail.

``python -m benchmarks`` (``make bench``) runs them all; ``python -m benchmarks.<name>`` runs
one (``overhead``, ``scheduler``, ``polling``, ``scale``); ``--quick`` makes any of them a
one-second smoke run. ``benchmarks/RESULTS.md`` records the latest full run.
"""
