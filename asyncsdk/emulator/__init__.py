"""An embedded emulator of the BabySea v1 image-generation API, built on aiohttp.web.

It is an independent reading of the contract (`BABYSEA_V1.md` and the seed response
reference): the five endpoints, both auth headers, every seed error code with its HTTP status
and message, the per-account limits (sliding submission window, concurrency slot, credits),
the generation lifecycle with the 50-second auto-cancel and refunds, and real PNG outputs.
Faults are scriptable (`Faults`) and what clients did is observable (`EmulatorStats`)::

    async with Emulator(time_scale=0.05) as emu:
        emu.faults.fail_reads(2)
        emu.faults.outage(1.0, route="list", kind="html503")
        ...  # point a client at emu.base_url with emu.tokens[0]
        emu.generations(emu.tokens[0])  # what the server created, names as sent

Architecture (one concern per private module; the docstring of each holds its details)::

    _settings.py  Settings: every limit and duration, the model catalogue, time scaling
    _errors.py    the code -> (status, message) table and ApiError
    _state.py     accounts, credits ledger, lifecycle clock, limits, record shapes
    _inputs.py    body parsing, validation, NSFW words, image-input loading
    _faults.py    Faults: the fault script
    _stats.py     EmulatorStats
    _png.py       the deterministic PNG encoder
    _app.py       aiohttp routes, the middleware, handlers, image files, webhooks
    _emulator.py  Emulator: configuration, accounts, server lifecycle
    __main__.py   ``python -m asyncsdk.emulator``

Decisions where the contract is silent (each detailed where it is implemented):

- Order of a submission's checks: scripted faults, auth, JSON, model, fields, NSFW, images,
  then window, concurrency, credits, create. Only a submission that creates a generation takes
  a place in the window; 400s, 402s, 429s and injected 500s do not (`_app`, `_state`).
- An unknown model identifier is a VALIDATION_ERROR. `creditCost` = the model's per-image cost
  x `output_number` (`_settings.DEFAULT_MODELS`; `google/nano-banana` costs 2).
- A successful submission is HTTP 200. Every POST answer after authentication carries the
  X-RateLimit-* headers; 429s add Retry-After (`_app`).
- `X-RateLimit-Reset` is when the oldest occupied window place frees, or now when the window is
  empty, in whole Unix seconds rounded up (`_state`).
- Generation `createdAt` is naive UTC with microseconds; other timestamps end in ``Z``
  (`_state`). Outputs are always PNG at ``/files/<id>/<n>.png`` (n from 1, no auth), and
  `imageInput` holds ``input/<id>/user_upload_image_<n>.<ext>`` paths (`_app`, `_state`).
- Credits: `total` = free + purchased + refunded + redeemed + bonus + affiliate - spent.
  Initial credits are `purchased`, refunds add to `refunded`, and `set_credits(n)` replaces
  the ledger with one `purchased` grant of n (`_state`).
- Limit values in messages and failure reasons are the effective (time-scaled) ones; a
  RATE_LIMIT_ERROR message says "per minute" only when the window is 60 s.
- Request faults strike API routes only. Delays, outages, echoed headers, scripted 500s and
  drops before create strike before authentication, so they create, charge and count nothing;
  drops after create and garbled submission answers strike after the generation was created,
  charged and counted. Each fault has one decision point; `Faults.chaos` draws at the same
  points from one seeded generator per point (`_faults`).
- Fault pages: an outage's HTML 503 is a load balancer's page; echoed headers are printed
  verbatim (credentials included) in an HTML page or in a JSON envelope's `message` with code
  INTERNAL_SERVER_ERROR; a ``timeout`` outage holds a request until the outage ends, then
  closes the connection without an answer (`_app`).
- A garbled answer is still HTTP 200 and keeps its rate-limit headers; ``no_id`` drops
  `generationId` from a submission answer and `generationId`/`status` from read records
  (`_app`).
- A status outside the contract's four (`Faults.unknown_status`) shows from the end of
  `starting` on and never changes; the generation then holds no concurrency slot, is refunded
  like a failure, has null failure reason and times, and sends no webhook (`_state`).
- `list_lag` hides a generation from List All Images (and its `total`) for real seconds after
  its creation; Check Image Status sees it at once (`_app`).
- Stripped rate-limit hints: `strip_rate_limit_headers` counts only answers that had hints.
- Unknown routes answer 404 NOT_FOUND in the error envelope (an emulator-only code).
- Webhooks, when `webhook_url` is set, fire once per generation when it ends (`_app`).
"""

from ._emulator import Emulator as Emulator
from ._faults import Faults as Faults
from ._settings import DEFAULT_MODELS as DEFAULT_MODELS
from ._settings import ModelSpec as ModelSpec
from ._stats import EmulatorStats as EmulatorStats

__all__ = ["DEFAULT_MODELS", "Emulator", "EmulatorStats", "Faults", "ModelSpec"]

# Tracebacks and reprs read asyncsdk.emulator.Emulator, not the private module.
for _public in (Emulator, EmulatorStats, Faults, ModelSpec):
    _public.__module__ = __name__
del _public
