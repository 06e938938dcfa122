"""The web example: a FastAPI app over asyncsdk (see ``app.py`` and ``README.md``)."""
