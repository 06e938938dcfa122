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
  reason each model is structured by one function generated for it (:func:`direct_structure_fn`)
  that converts every field inline: the scalars (``str``, ``int``, ``float``, ``bool`` and their
  optional forms, with the same conversions cattrs applies), datetimes, the status, tuples of
  strings, nested models and tuples of them. A class with a field of any other type is
  structured by cattrs' own generated function (``make_dict_structure_fn``) with direct hooks
  for the optional scalars and tuples of strings, and the same rules.
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

__all__ = ["converter", "direct_structure_fn", "make_converter", "parse_datetime", "to_camel"]

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


_STATUSES = GenerationStatus._value2member_map_


def _status(value: Any) -> GenerationStatus:
    return _STATUSES.get(value) or GenerationStatus(value)  # type: ignore[return-value]


#: Inline conversions of a value ``v`` that is not ``None``, by field type.
_INLINE: dict[Any, str] = {
    str: "v if type(v) is str else str(v)",
    str | None: "v if type(v) is str else str(v)",
    int: "v if type(v) is int else int(v)",
    int | None: "v if type(v) is int else int(v)",
    float: "v if type(v) is float else float(v)",
    float | None: "v if type(v) is float else float(v)",
    bool | None: "v if type(v) is bool else bool(v)",
    datetime: "_parse_datetime(v)",
    datetime | None: "_parse_datetime(v)",
    GenerationStatus: "_status(v)",
    tuple[str, ...]: "tuple([i if type(i) is str else str(i) for i in v])",
}


def direct_structure_fn(
    conv: cattrs.Converter, cls: type[Any], fallback: Callable[[Any, type[Any]], Any]
) -> Callable[[Any, type[Any]], Any] | None:
    """A function structuring a ``dict`` into ``cls`` by the rules of the module docstring,
    every field converted inline and the class called once with every argument (anything
    else goes to ``fallback``, cattrs' function); ``None`` when a field's type (or how it is
    initialised) is not one it knows."""
    namespace: dict[str, Any] = {
        "_cls": cls,
        "_fallback": fallback,
        "_parse_datetime": parse_datetime,
        "_status": _status,
    }
    lines = [
        f"def structure_{cls.__name__}(d, t):",
        "    if type(d) is not dict:",
        "        return _fallback(d, t)",
        "    g = d.get",
    ]
    arguments = []
    for i, a in enumerate(attrs.fields(cls)):
        if not a.init or a.kw_only or a.converter is not None or a.alias != a.name:
            return None
        key = to_camel(a.name)
        inline = _INLINE.get(a.type)
        if inline is None:
            inline = _nested(conv, a.type, namespace, i)
        if inline is None:
            return None
        default = a.default
        if default is attrs.NOTHING:
            lines.append(f"    v = d[{key!r}]")
            optional = type(None) in getattr(a.type, "__args__", ())
            lines.append(
                f"    a{i} = None if v is None else ({inline})"
                if optional
                else f"    a{i} = {inline}"
            )
        else:
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                if default.takes_self:
                    return None
                namespace[f"_factory{i}"] = default.factory
                absent = f"_factory{i}()"
            elif default is None:
                absent = "None"
            else:
                namespace[f"_default{i}"] = default
                absent = f"_default{i}"
            lines.append(f"    v = g({key!r})")
            lines.append(f"    a{i} = {absent} if v is None else ({inline})")
        arguments.append(f"a{i}")
    lines.append(f"    return _cls({', '.join(arguments)})")
    exec(compile("\n".join(lines), f"<asyncsdk structure {cls.__name__}>", "exec"), namespace)
    fn: Callable[[Any, type[Any]], Any] = namespace[f"structure_{cls.__name__}"]
    return fn


def _nested(conv: cattrs.Converter, kind: Any, namespace: dict[str, Any], i: int) -> str | None:
    """The inline conversion of a nested model, or of a tuple of them."""
    if attrs.has(kind):
        namespace[f"_hook{i}"], namespace[f"_type{i}"] = conv.get_structure_hook(kind), kind
        return f"_hook{i}(v, _type{i})"
    args: tuple[Any, ...] = getattr(kind, "__args__", ())
    is_tuple = getattr(kind, "__origin__", None) is tuple and len(args) == 2
    if is_tuple and args[1] is Ellipsis and attrs.has(args[0]):
        namespace[f"_hook{i}"], namespace[f"_type{i}"] = conv.get_structure_hook(args[0]), args[0]
        return f"tuple([_hook{i}(item, _type{i}) for item in v])"
    return None


def make_converter(*, direct: bool = True) -> cattrs.Converter:
    """Build the converter described in the module docstring (``direct=False``: every
    model by cattrs' generated functions, the reference the direct ones are tested against)."""
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
        generic = _null_means_default(make_dict_structure_fn(cls, conv, **renames), cls)  # type: ignore[arg-type]
        fn = direct_structure_fn(conv, cls, generic) if direct else None
        return generic if fn is None else fn

    def unstructure_factory(cls: type[Any]) -> Callable[[Any], Any]:
        renames = {a.name: override(rename=to_camel(a.name)) for a in attrs.fields(cls)}
        return make_dict_unstructure_fn(cls, conv, **renames)  # type: ignore[arg-type]

    conv.register_structure_hook_factory(attrs.has, structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    return conv


converter: cattrs.Converter = make_converter()


_hooks: dict[type[Any], Callable[[Any, type[Any]], Any]] = {}


def structure(data: Any, cls: type[T]) -> T:
    """Structure ``data`` as ``cls`` with :data:`converter` (its hook for ``cls`` looked up
    once)."""
    hook = _hooks.get(cls)
    if hook is None:
        hook = _hooks[cls] = converter.get_structure_hook(cls)
    result: T = hook(data, cls)
    return result
