"""The workers example: N processes sharing accounts through Redis (see ``run.py``)."""
