"""Fixtures for the emulator's own tests: the `serve` machinery of the integration tests.

`serve(**overrides)` starts an `Emulator` on 127.0.0.1:0 with compressed durations (`FAST`)
and returns it with a plain-aiohttp `Api` helper bound to its first token (see
`tests/integration/conftest.py`, the one definition of both).
"""

from __future__ import annotations

from tests.integration.conftest import FAST as FAST
from tests.integration.conftest import Api as Api
from tests.integration.conftest import Reply as Reply
from tests.integration.conftest import Serve as Serve
from tests.integration.conftest import serve as serve
