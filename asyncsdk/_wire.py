"""The one cattrs converter between the service's JSON and the models.

:func:`make_converter` builds it and documents what it configures; the SDK keeps a single
instance (:data:`converter`) and never touches cattrs' global converter.

- attrs classes are (un)structured with camelCase keys: ``generation_id`` ↔ ``generationId``.
- Unknown keys are ignored; a missing key takes the attribute's default.
- ``null`` for a field with a non-``None`` default (lists, credit counters) becomes that
  default, so ``"outputImages": null`` is an empty tuple.
- Datetimes are timezone-aware: ISO 8601 with ``Z`` or an offset, and a naive timestamp is
  read as UTC (the service sometimes omits the zone).
- ``GenerationStatus`` accepts unknown strings (see the enum).
- ``detailed_validation`` is off: structuring is on the hot path of every poll.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._models import GenerationStatus

__all__ = ["converter", "make_converter", "parse_datetime", "to_camel"]

T = TypeVar("T")

_CAMEL = re.compile(r"_([a-z0-9])")


def to_camel(name: str) -> str:
    """``generation_id`` → ``generationId``."""
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


def parse_datetime(value: object) -> datetime:
    """An ISO 8601 string (or Unix seconds) as an aware datetime; naive means UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat does not take "Z"
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _null_means_default(
    fn: Callable[[Any, type[Any]], Any], cls: type[Any]
) -> Callable[[Any, type[Any]], Any]:
    """Wrap a structure function so that ``null`` for a field with a default means "absent"."""
    keys = frozenset(
        to_camel(a.name)
        for a in attrs.fields(cls)
        if a.default is not attrs.NOTHING and a.default is not None
    )
    if not keys:
        return fn

    def structure(data: Any, cls: type[Any]) -> Any:
        if any(data.get(key, 0) is None for key in keys):
            data = {k: v for k, v in data.items() if v is not None or k not in keys}
        return fn(data, cls)

    return structure


def make_converter() -> cattrs.Converter:
    """Build the converter described in the module docstring."""
    conv = cattrs.Converter(detailed_validation=False, forbid_extra_keys=False)

    conv.register_structure_hook(datetime, lambda value, _: parse_datetime(value))
    conv.register_unstructure_hook(datetime, lambda value: value.isoformat())
    conv.register_structure_hook(GenerationStatus, lambda value, _: GenerationStatus(value))
    conv.register_unstructure_hook(GenerationStatus, lambda value: value.value)
    conv.register_structure_hook(str, lambda value, _: value if type(value) is str else str(value))

    def structure_factory(cls: type[Any]) -> Callable[[Any, type[Any]], Any]:
        renames = {a.name: override(rename=to_camel(a.name)) for a in attrs.fields(cls)}
        return _null_means_default(make_dict_structure_fn(cls, conv, **renames), cls)  # type: ignore[arg-type]

    def unstructure_factory(cls: type[Any]) -> Callable[[Any], Any]:
        renames = {a.name: override(rename=to_camel(a.name)) for a in attrs.fields(cls)}
        return make_dict_unstructure_fn(cls, conv, **renames)  # type: ignore[arg-type]

    conv.register_structure_hook_factory(attrs.has, structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    return conv


converter: cattrs.Converter = make_converter()


def structure(data: Any, cls: type[T]) -> T:
    """Structure ``data`` as ``cls`` with :data:`converter`."""
    return converter.structure(data, cls)
