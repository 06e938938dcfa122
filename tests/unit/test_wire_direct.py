"""The generated structure functions agree with cattrs' own on every model and any input:
the same object, or an error for both (the read path turns either kind into
``APIResponseValidationError``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsdk import _models
from asyncsdk._wire import converter, make_converter, to_camel

MODELS = [
    _models.ApiStatus,
    _models.AccountDetails,
    _models.Credits,
    _models.ApiKeyInfo,
    _models.AccountInfo,
    _models.Generation,
    _models.GenerationPage,
    _models.Submission,
    _models.RateLimitInfo,
]
REFERENCE = make_converter(direct=False)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["succeeded", "processing", "warming-up", "2026-11-24T05:00:00Z", "7"]),
    st.just(1732424400),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def record(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings with some of ``cls``'s camelCase keys (nested models as records), plus extras."""
    keys: dict[str, st.SearchStrategy[Any]] = {}
    for a in cls.__attrs_attrs__:
        key = to_camel(a.name)
        if a.type in MODELS:
            keys[key] = st.deferred(lambda t=a.type: record(t)) | scalars
        elif getattr(a.type, "__args__", (None,))[0] in MODELS:
            keys[key] = st.lists(st.deferred(lambda: record(_models.Generation)), max_size=2)
        else:
            keys[key] = values
    return st.fixed_dictionaries({}, optional=keys) | st.fixed_dictionaries(
        dict.fromkeys(keys, st.none())
    )


def outcome(conv: Any, data: Any, cls: type[Any]) -> tuple[str, Any]:
    try:
        return "ok", conv.structure(data, cls)
    except Exception:
        return "error", None


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_direct_structuring_agrees_with_cattrs(cls: type[Any], data: st.DataObject) -> None:
    value = data.draw(record(cls) | values)
    assert converter.get_structure_hook(cls).__name__ == f"structure_{cls.__name__}"
    direct, reference = outcome(converter, value, cls), outcome(REFERENCE, value, cls)
    assert direct[0] == reference[0], (value, direct, reference)
    if direct[0] == "ok":
        assert direct[1] == reference[1]
        assert getattr(direct[1], "request_id", None) == getattr(reference[1], "request_id", None)
