"""Scriptable fault injection: queues of misbehaviour consumed as requests arrive.

A test scripts faults on `emulator.faults` and the emulator consumes them, one per matching
request or generation, in arrival order. What each fault stands for and where it strikes:

- `delay`: a slow network or an overloaded front end. The sleep happens before the request is
  handled, and the request is still handled if the client gave up meanwhile (a real server
  behind a slow network does the same), so a POST that timed out on the client may still
  create a generation.
- `fail_reads` / `fail_submissions`: an HTTP 500 answer from the seed's 500 family. They strike
  before authentication and before anything else, so nothing is created or charged and the
  submission does not count against the sliding window.
- `drop_after_create`: the generation is created, charged and counted, then the connection is
  closed without any HTTP response (the client sees a disconnect).
- `stick` / `fail_generations`: scripts for the next generations' outcomes, consumed when a
  generation is created. Each queue is consumed independently; a generation that is both stuck
  and scripted to fail is stuck (the auto-cancel deadline comes first).

Only API requests (routes under ``/api/v1``) consume request faults; image files and unknown
routes never do, so the emulator fetching its own image URLs cannot eat a scripted fault.
All methods take a lock, so a test may script faults from another thread.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Final, Literal

import attrs

from ._errors import SERVER_ERROR_CODES

DEFAULT_FAILURE_REASON: Final = "Prediction failed: the model could not generate an image."

Method = Literal["GET", "POST"]


@attrs.define
class _Delay:
    seconds: float
    remaining: int | None
    method: Method | None


class Faults:
    """The fault script of one emulator.

    >>> faults = Faults()
    >>> faults.fail_reads(2, "FETCH_FAILED")
    >>> faults.delay(0.2, count=1, method="POST")
    >>> faults.clear()
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: deque[str] = deque()
        self._submissions: deque[str] = deque()
        self._drops = 0
        self._sticks = 0
        self._failures: deque[str] = deque()
        self._delay: _Delay | None = None

    def fail_reads(self, count: int, code: str = "INTERNAL_SERVER_ERROR") -> None:
        """Answer the next `count` GET API requests with the 500-family `code`."""
        _check_count(count)
        _check_code(code)
        with self._lock:
            self._reads.extend([code] * count)

    def fail_submissions(self, count: int, code: str = "GENERATION_START_FAILED") -> None:
        """Answer the next `count` POSTs with the 500-family `code`; nothing is created."""
        _check_count(count)
        _check_code(code)
        with self._lock:
            self._submissions.extend([code] * count)

    def drop_after_create(self, count: int) -> None:
        """Create the next `count` accepted generations, then close without answering."""
        _check_count(count)
        with self._lock:
            self._drops += count

    def delay(self, seconds: float, count: int | None = None, method: Method | None = None) -> None:
        """Sleep `seconds` before handling the next `count` API requests (None: until cleared).

        `method` restricts the delay to GET or POST requests. A new call replaces the previous
        delay.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        if count is not None:
            _check_count(count)
        if method not in (None, "GET", "POST"):
            raise ValueError("method must be None, 'GET' or 'POST'")
        with self._lock:
            self._delay = _Delay(seconds, count, method)

    def stick(self, count: int) -> None:
        """The next `count` generations never finish by themselves (they hit the auto-cancel)."""
        _check_count(count)
        with self._lock:
            self._sticks += count

    def fail_generations(self, count: int, reason: str = DEFAULT_FAILURE_REASON) -> None:
        """The next `count` generations end `failed` with `reason` (credits are refunded)."""
        _check_count(count)
        with self._lock:
            self._failures.extend([reason] * count)

    def clear(self) -> None:
        """Forget every scripted fault."""
        with self._lock:
            self._reads.clear()
            self._submissions.clear()
            self._drops = self._sticks = 0
            self._failures.clear()
            self._delay = None

    # The consuming side, used by the emulator only.

    def _take_delay(self, method: str) -> float:
        with self._lock:
            rule = self._delay
            if rule is None or (rule.method is not None and rule.method != method):
                return 0.0
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._delay = None
            return rule.seconds

    def _take_request_failure(self, method: str) -> str | None:
        queue = {"GET": self._reads, "POST": self._submissions}.get(method)
        with self._lock:
            return queue.popleft() if queue else None

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drops:
                self._drops -= 1
                return True
            return False

    def _take_outcome(self) -> tuple[bool, str | None]:
        """(stuck, scripted failure reason) for a generation being created."""
        with self._lock:
            stuck = self._sticks > 0
            if stuck:
                self._sticks -= 1
            return stuck, self._failures.popleft() if self._failures else None


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")


def _check_code(code: str) -> None:
    if code not in SERVER_ERROR_CODES:
        raise ValueError(
            f"{code!r} is not one of the 500-family codes {sorted(SERVER_ERROR_CODES)}"
        )
