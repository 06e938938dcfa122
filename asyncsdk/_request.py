"""A submission's arguments, checked and turned into a :class:`~asyncsdk._submission.Request`.

What the client must know to send at all is checked here, before anything is paid: the
model identifier, the prompt, ``name`` (it becomes the prefix of the tag), the idempotency
key and the input images (sizes, count, read locally). Values the service validates itself
(``aspect_ratio``, ``output_format``, ``output_number``: lists that may grow) are left to its
``VALIDATION_ERROR``, which costs nothing. Other keyword arguments are model extras, passed
through untouched, except a close misspelling of a parameter (``aspect_ratoi=``), which
raises ``TypeError`` with a suggestion instead of being sent.

The request's ``name`` is its tag (see :mod:`asyncsdk._submission`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any, Final

from ._errors import BadRequestError
from ._images import Images, image_inputs
from ._submission import Request, make_label, tag_digits

__all__ = ["FIELDS", "PARAMETERS", "build_request"]

MODEL_ID: Final = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.:-]+$")
#: The keywords of :func:`build_request` that are fields of the request (the rest of a
#: submission's keywords are model extras).
FIELDS: Final = (
    "name",
    "output_number",
    "aspect_ratio",
    "output_format",
    "images",
    "idempotency_key",
)
#: Every keyword a submission takes; a close miss of one of them is a typo, not an extra.
PARAMETERS: Final = (
    *FIELDS,
    "recover_since",
    "reservation",
    "priority",
    "timeout",
)


async def build_request(
    model: str,
    prompt: str,
    *,
    name: str | None = None,
    output_number: int | None = None,
    aspect_ratio: str | None = None,
    output_format: str | None = None,
    images: Images | None = None,
    idempotency_key: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Request:
    """The checked request; ``ValueError``/``TypeError`` naming what is wrong otherwise."""
    if not isinstance(model, str) or not MODEL_ID.match(model):
        raise ValueError(
            f"model must look like 'lab/model' (e.g. 'google/nano-banana'), got {model!r}"
        )
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    if name is not None and (not isinstance(name, str) or not 3 <= len(name) <= 30):
        # Checked here: the name becomes the prefix of the tag, which always fits the
        # service's rule, so the service could no longer say it (status None: not sent).
        raise BadRequestError(
            f"name must be a string of 3 to 30 characters, got {name!r}",
            code="VALIDATION_ERROR",
        )
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not idempotency_key
    ):
        raise ValueError(f"idempotency_key must be a non-empty string, got {idempotency_key!r}")
    extra = dict(extra or {})
    _check_extras(extra)
    body: dict[str, Any] = {"prompt": prompt}
    fields = {
        "output_number": output_number,
        "aspect_ratio": aspect_ratio,
        "output_format": output_format,
    }
    body.update((key, value) for key, value in fields.items() if value is not None)
    body.update(extra)
    if images is not None:
        body["image_input"] = await image_inputs(images)
    body["name"] = make_label(name, tag_digits(idempotency_key))
    return Request(model, body, idempotency_key)


def _check_extras(extra: Mapping[str, Any]) -> None:
    if "image_input" in extra:
        raise ValueError("pass input images as images=..., not image_input=")
    for key in extra:
        close = difflib.get_close_matches(key, PARAMETERS, n=1, cutoff=0.75)
        if close:
            raise TypeError(
                f"unexpected keyword argument {key!r}: did you mean {close[0]!r}? "
                "(model extras pass through, but this looks like a misspelling)"
            )
