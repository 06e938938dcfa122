"""The Temporal example: a durable batch across worker processes (see ``run.py``)."""
