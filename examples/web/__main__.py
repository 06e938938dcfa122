"""``python -m examples.web``: serve the example app with uvicorn.

``WEB_HOST`` (default 127.0.0.1) and ``WEB_PORT`` (default 8000) say where to listen; the other
settings come from the environment as :meth:`examples.web.app.Settings.from_env` describes.
"""

from __future__ import annotations

import logging
import os

import uvicorn

from .app import Settings, create_app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # the emulator's every poll
    host = os.environ.get("WEB_HOST", "").strip() or "127.0.0.1"
    port = int(os.environ.get("WEB_PORT", "").strip() or "8000")
    print(f"asyncsdk web example on http://{host}:{port}  (Ctrl+C to stop)", flush=True)
    uvicorn.run(
        create_app(Settings.from_env()),
        host=host,
        port=port,
        # Open event streams end with their generation; do not wait for them at Ctrl+C.
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
