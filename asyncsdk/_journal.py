"""The batch journal: one SQLite file that makes a batch safe to interrupt and rerun.

Each job has one row, moved through the :class:`JournalState` states by single-statement
transactions::

    pending ──► submitting ──► submitted ──► succeeded                    (record, paths)
       ▲        (tag, account,  (generation   ├─► downloading ──► succeeded
       │         sent_at)        id)          │   (record)    └─► download_failed (record)
       │                                      └─► failed (reason, retryable)
       └── a transient failure (network, 5xx after retries), an expired start deadline or a
           budget stop before sending: back to pending

``submitting`` is written *before* the request leaves, with the tag (the ``name`` sent) and the
account. If the process dies between the service accepting the submission and the journal
recording its id (``kill -9`` at the worst moment), the rerun finds the row in
``submitting``, looks for the tag in that account's list (the same reconciliation the client
uses for a lost answer), and adopts the generation instead of paying for it again.

A generation that succeeded but whose images could not be saved is ``download_failed`` (or
``downloading`` if the process died meanwhile) with its record: a rerun downloads the images
again instead of paying for another generation or reporting the job failed.

Every row keeps what the job asked for (``request``: a canonical JSON of the model, the prompt
and the parameters), so that a rerun can refuse a job changed under an id the journal already
knows instead of serving it the old result. Journals written before that column existed are
migrated in place (the missing columns are added; their old rows are checked by prompt).

SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed transaction survives the death
of the process (it is in the OS's page cache), which is the failure this guards against. All
calls run in a worker thread (``anyio.to_thread``), one at a time, off the event loop.
"""

from __future__ import annotations

import collections
import enum
import json
import os
import sqlite3
import threading
import time
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import attrs

__all__ = ["Journal", "JournalCheck", "JournalEntry", "JournalState", "difference"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    account TEXT,
    tag TEXT,
    prompt TEXT,
    sent_at REAL,
    generation_id TEXT,
    record TEXT,
    paths TEXT,
    error TEXT,
    error_code TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    request TEXT,
    retryable INTEGER
);
"""
#: Columns added after the first release: added to an older journal when it is opened.
_ADDED_COLUMNS: Final = {"request": "TEXT", "retryable": "INTEGER"}
#: How many ids one look-up asks for when a whole jobs file is checked against the journal.
_CHECK_CHUNK: Final = 500


class JournalState(str, enum.Enum):
    """A row's state (see the module docstring); stored in the file as its string."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    DOWNLOADING = "downloading"
    DOWNLOAD_FAILED = "download_failed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


#: Not a row state: a job the journal has no row for, as :attr:`JournalCheck.states` counts it.
NEW: Final = "new"


@attrs.frozen
class JournalEntry:
    """One job's row."""

    id: str
    state: JournalState
    account: str | None = None
    tag: str | None = None
    prompt: str | None = None
    sent_at: float | None = None
    generation_id: str | None = None
    record: dict[str, Any] | None = None
    paths: tuple[str, ...] = ()
    error: str | None = None
    error_code: str | None = None
    attempts: int = 0
    request: str | None = None
    retryable: bool | None = None


@attrs.frozen
class JournalCheck:
    """Jobs checked against the journal (see :meth:`Journal.check`).

    :ivar changed: ``(job id, what changed)`` for the first job the journal knows under its
        id with other content, else ``None`` (the counts then stop there).
    :ivar states: how many of the jobs are in each journal state, by its string (``new`` if
        not in the journal).
    :ivar to_run: per key given with the jobs, how many a run would submit (new, pending,
        and with ``rerun_failed`` the failed ones that retrying could help).
    """

    changed: tuple[str, str] | None
    states: dict[str, int]
    to_run: dict[Hashable, int]


_COLUMNS: Final = (
    "id, state, account, tag, prompt, sent_at, generation_id, record, paths, error,"
    " error_code, attempts, request, retryable"
)


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    (id_, state, account, tag, prompt, sent_at, gen, record, paths, error, code, attempts,
     request, retryable) = row  # fmt: skip
    return JournalEntry(
        id_,
        JournalState(state),
        account,
        tag,
        prompt,
        sent_at,
        gen,
        json.loads(record) if record else None,
        tuple(json.loads(paths)) if paths else (),
        error,
        code,
        attempts,
        request,
        None if retryable is None else bool(retryable),
    )


def difference(request: str, entry: JournalEntry) -> str | None:
    """What differs between a job's canonical ``request`` and the journal's row for its id,
    or ``None`` when they match (or the row cannot tell)."""
    if entry.request is None:  # a row from before requests were kept: compare the prompt
        asked = json.loads(request).get("prompt")
        if entry.prompt is not None and asked != entry.prompt:
            return "prompt"
        return None
    if entry.request == request:
        return None
    new, old = json.loads(request), json.loads(entry.request)
    fields = sorted(
        {k for k in (*new, *old) if k != "params" and new.get(k) != old.get(k)}
        | {
            k
            for k in (*new.get("params", {}), *old.get("params", {}))
            if new.get("params", {}).get(k) != old.get("params", {}).get(k)
        }
    )
    return ", ".join(fields) or "parameters"


class Journal:
    """The SQLite journal at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return f"<Journal {str(self.path)!r}>"

    @property
    def is_open(self) -> bool:
        """Whether the file is open: the first call opens it, :meth:`aclose` closes it (and
        a later call opens it again)."""
        return self._db is not None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA busy_timeout=5000")
                db.executescript(_SCHEMA)
                have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
                for column, kind in _ADDED_COLUMNS.items():
                    if column not in have:
                        db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    async def _call(self, work: Any) -> Any:
        """Run ``work(connection)`` in a worker thread, one call at a time."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)

        def locked() -> Any:
            with self._lock:
                return work(self._connect())

        return await anyio.to_thread.run_sync(locked, limiter=self._limiter)

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await self._call(
            lambda db: db.execute(sql, params).fetchall()
        )
        return rows

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await anyio.to_thread.run_sync(close)

    # -- reads ---------------------------------------------------------------------------------
    async def get(self, job_id: str) -> JournalEntry | None:
        rows = await self._run(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _entry(rows[0]) if rows else None

    async def in_flight(self) -> list[JournalEntry]:
        """Rows an earlier run left between submitting and the end."""
        rows = await self._run(
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?)",
            (JournalState.SUBMITTING.value, JournalState.SUBMITTED.value),
        )
        return [_entry(row) for row in rows]

    async def costs(self) -> list[tuple[str, int, int]]:
        """``(model, output_number, credit cost)`` of every generation the journal has a
        record of (the highest cost seen for each pair)."""

        def read(db: sqlite3.Connection) -> list[tuple[str, int, int]]:
            found: dict[tuple[str, int], int] = {}
            for (text,) in db.execute("SELECT record FROM jobs WHERE record IS NOT NULL"):
                try:
                    record = json.loads(text)
                    model, cost = record.get("modelProvider"), record.get("creditCost")
                    number = int(record.get("outputNumber") or 1)
                except (ValueError, TypeError, AttributeError):
                    continue
                if isinstance(model, str) and isinstance(cost, int):
                    found[model, number] = max(cost, found.get((model, number), 0))
            return [(model, number, cost) for (model, number), cost in found.items()]

        result: list[tuple[str, int, int]] = await self._call(read)
        return result

    async def check(
        self, jobs: Iterable[tuple[str, str, Hashable]], *, rerun_failed: bool = False
    ) -> JournalCheck:
        """Check ``(job id, canonical request, key)`` triples against the journal, in a
        worker thread (the iterable, e.g. a jobs file being read, is consumed there too): the
        first job changed under an id the journal knows, how many jobs are in each state, and
        per key how many a run would submit."""

        def check(db: sqlite3.Connection) -> JournalCheck:
            states: collections.Counter[str] = collections.Counter()
            to_run: collections.Counter[Hashable] = collections.Counter()
            chunk: list[tuple[str, str, Hashable]] = []

            def flush() -> tuple[str, str] | None:
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE id IN ({marks})", [c[0] for c in chunk]
                ).fetchall()
                known = {row[0]: _entry(row) for row in rows}
                for job_id, request, key in chunk:
                    entry = known.get(job_id)
                    states[entry.state.value if entry else NEW] += 1
                    if entry is not None:
                        what = difference(request, entry)
                        if what is not None:
                            return job_id, what
                    if (
                        entry is None
                        or entry.state is JournalState.PENDING
                        or (rerun_failed and entry.state is JournalState.FAILED and entry.retryable)
                    ):
                        to_run[key] += 1
                chunk.clear()
                return None

            for item in jobs:
                chunk.append(item)
                if len(chunk) >= _CHECK_CHUNK and (changed := flush()) is not None:
                    return JournalCheck(changed, dict(states), dict(to_run))
            changed = flush() if chunk else None
            return JournalCheck(changed, dict(states), dict(to_run))

        result: JournalCheck = await self._call(check)
        return result

    # -- writes --------------------------------------------------------------------------------
    async def _set(
        self, job_id: str, state: JournalState, request: str | None, **fields: Any
    ) -> None:
        """Upsert the row; a ``request`` of ``None`` keeps the one already recorded."""
        columns = ["state", "updated_at", "request", *fields]
        values = [state.value, time.time(), request, *fields.values()]
        updates = [
            "request = COALESCE(excluded.request, jobs.request)"
            if c == "request"
            else f"{c} = excluded.{c}"
            for c in columns
        ]
        await self._run(
            f"INSERT INTO jobs (id, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})"
            f" ON CONFLICT(id) DO UPDATE SET {', '.join(updates)}",
            (job_id, *values),
        )

    async def submitting(
        self, job_id: str, *, account: str, tag: str, prompt: str, request: str | None = None
    ) -> None:
        """About to send: recorded *before* the request leaves (see the module docstring)."""
        now = time.time()
        await self._run(
            "INSERT INTO jobs (id, state, account, tag, prompt, sent_at, attempts, updated_at,"
            " request) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET state = excluded.state, account = excluded.account,"
            " tag = excluded.tag, prompt = excluded.prompt, sent_at = excluded.sent_at,"
            " attempts = attempts + 1, generation_id = NULL, updated_at = excluded.updated_at,"
            " request = COALESCE(excluded.request, jobs.request), retryable = NULL",
            (job_id, JournalState.SUBMITTING.value, account, tag, prompt, now, now, request),
        )

    async def submitted(self, job_id: str, generation_id: str) -> None:
        await self._run(
            "UPDATE jobs SET state = ?, generation_id = ?, updated_at = ? WHERE id = ?",
            (JournalState.SUBMITTED.value, generation_id, time.time(), job_id),
        )

    async def downloading(self, job_id: str, record: dict[str, Any]) -> None:
        """The generation succeeded (paid); its images are being saved."""
        await self._set(
            job_id,
            JournalState.DOWNLOADING,
            None,
            generation_id=record.get("generationId"),
            record=json.dumps(record),
            error=None,
            error_code=None,
        )

    async def download_failed(self, job_id: str, error: str, code: str | None) -> None:
        """The generation succeeded but its images could not be saved: a rerun saves them."""
        await self._run(
            "UPDATE jobs SET state = ?, error = ?, error_code = ?, retryable = 1, updated_at = ?"
            " WHERE id = ?",
            (JournalState.DOWNLOAD_FAILED.value, error, code, time.time(), job_id),
        )

    async def succeeded(self, job_id: str, record: dict[str, Any], paths: Sequence[str]) -> None:
        await self._set(
            job_id,
            JournalState.SUCCEEDED,
            None,
            generation_id=record.get("generationId"),
            record=json.dumps(record),
            paths=json.dumps(list(paths)),
            error=None,
            error_code=None,
            retryable=None,
        )

    async def failed(
        self,
        job_id: str,
        error: str,
        code: str | None,
        record: dict[str, Any] | None = None,
        *,
        retryable: bool = False,
        request: str | None = None,
    ) -> None:
        """The job failed for good in this run; ``retryable``: running it again may succeed
        (see ``asyncsdk batch --retry-failed``)."""
        await self._set(
            job_id,
            JournalState.FAILED,
            request,
            error=error,
            error_code=code,
            record=json.dumps(record) if record is not None else None,
            retryable=int(retryable),
        )

    async def pending(
        self, job_id: str, error: str | None = None, *, request: str | None = None
    ) -> None:
        """Back to the queue (nothing was created, or the outcome is to be retried)."""
        await self._set(job_id, JournalState.PENDING, request, error=error, generation_id=None)
