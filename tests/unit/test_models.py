"""GenerationStatus: unknown states are stable members, and remembering them is bounded."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator

import pytest

from asyncsdk import Generation, GenerationStatus
from asyncsdk._models import MAX_CACHED_UNKNOWN_STATUSES
from asyncsdk._wire import converter


@pytest.fixture(autouse=True)
def restore_cached_statuses() -> Iterator[None]:
    """Leave the class's cache as it was: other tests rely on their unknown states' identity."""
    saved = dict(GenerationStatus._value2member_map_)
    yield
    GenerationStatus._value2member_map_.clear()
    GenerationStatus._value2member_map_.update(saved)


def cached_unknown() -> int:
    return len(GenerationStatus._value2member_map_) - len(GenerationStatus.__members__)


def test_ten_thousand_distinct_unknown_states_do_not_grow_the_class() -> None:
    for i in range(10_000):
        status = GenerationStatus(f"state-{i}")
        assert isinstance(status, GenerationStatus)
        assert status == f"state-{i}" and status.value == f"state-{i}"
        assert not status.is_terminal
    assert cached_unknown() <= MAX_CACHED_UNKNOWN_STATUSES
    assert len(GenerationStatus) == 4  # iteration shows only the known states


def test_past_the_bound_the_same_unknown_state_is_equal_on_every_poll() -> None:
    for i in range(MAX_CACHED_UNKNOWN_STATUSES + 1):
        GenerationStatus(f"filler-{i}")
    state = f"warming-up-{uuid.uuid4().hex}"  # never seen before, whatever ran earlier
    first, again = (
        converter.structure({"generationId": "g", "status": state}, Generation).status
        for _ in range(2)
    )
    assert first == again and hash(first) == hash(again)
    assert (first != again) is False  # what watch() compares
    assert len({first, again}) == 1
    assert first != GenerationStatus("cooling-down")
    assert not first.is_terminal and str(first) == state
    assert pickle.loads(pickle.dumps(first)) == first
    assert state not in GenerationStatus._value2member_map_


def test_known_states_stay_singletons_whatever_the_cache_holds() -> None:
    for i in range(MAX_CACHED_UNKNOWN_STATUSES * 2):
        GenerationStatus(f"filler-{i}")
    assert GenerationStatus("succeeded") is GenerationStatus.SUCCEEDED
    assert GenerationStatus("failed").is_terminal
    assert converter.unstructure(GenerationStatus("warming-up")) == "warming-up"


def test_below_the_bound_an_unknown_state_is_one_object() -> None:
    GenerationStatus._value2member_map_.clear()
    GenerationStatus._value2member_map_.update(
        {member.value: member for member in GenerationStatus.__members__.values()}
    )
    assert GenerationStatus("queued") is GenerationStatus("queued")
    assert cached_unknown() == 1
