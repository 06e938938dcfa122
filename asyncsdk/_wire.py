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
- ``detailed_validation`` is off: structuring is on the hot path of every poll. For the same
  reason the optional scalars (``str | None``, ``int | None``, ...) and tuples of strings get
  one direct hook each: cattrs' generic ``Optional`` hook dispatches again on every field of
  every record, which made up half the cost of a status poll's structuring.
"""

from __future__ import annotations

import functools
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
        return _parse_iso(value)
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


_FRACTION = re.compile(r"\.(\d+)")


@functools.lru_cache(maxsize=4096)
def _parse_iso(value: str) -> datetime:
    # Cached: every poll of a generation carries the same `createdAt` (datetimes are immutable).
    text = value.strip()
    if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat does not take "Z"
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        # Python 3.10 takes only 3 or 6 fractional digits: pad or cut to microseconds.
        text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
        parsed = datetime.fromisoformat(text)
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
        for key in keys:
            if data.get(key, 0) is None:
                data = {k: v for k, v in data.items() if v is not None or k not in keys}
                break
        return fn(data, cls)

    return structure


# Direct hooks (see the module docstring): the same conversions cattrs applies without
# detailed validation (``int(value)``, ...), in one call, with ``None`` passed through.
def _optional_str(value: Any, _: Any) -> str | None:
    return value if value is None or type(value) is str else str(value)


def _optional_int(value: Any, _: Any) -> int | None:
    return value if value is None or type(value) is int else int(value)


def _optional_float(value: Any, _: Any) -> float | None:
    return value if value is None or type(value) is float else float(value)


def _optional_bool(value: Any, _: Any) -> bool | None:
    return value if value is None or type(value) is bool else bool(value)


def _optional_datetime(value: Any, _: Any) -> datetime | None:
    return None if value is None else parse_datetime(value)


def _str_tuple(value: Any, _: Any) -> tuple[str, ...]:
    return tuple([item if type(item) is str else str(item) for item in value])


def make_converter() -> cattrs.Converter:
    """Build the converter described in the module docstring."""
    conv = cattrs.Converter(detailed_validation=False, forbid_extra_keys=False)

    conv.register_structure_hook(datetime, lambda value, _: parse_datetime(value))
    conv.register_unstructure_hook(datetime, lambda value: value.isoformat())
    conv.register_structure_hook(GenerationStatus, lambda value, _: GenerationStatus(value))
    conv.register_unstructure_hook(GenerationStatus, lambda value: value.value)
    conv.register_structure_hook(str, lambda value, _: value if type(value) is str else str(value))
    conv.register_structure_hook(str | None, _optional_str)
    conv.register_structure_hook(int | None, _optional_int)
    conv.register_structure_hook(float | None, _optional_float)
    conv.register_structure_hook(bool | None, _optional_bool)
    conv.register_structure_hook(datetime | None, _optional_datetime)
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], _str_tuple)

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
