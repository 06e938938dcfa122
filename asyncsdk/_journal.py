"""The batch journal: one SQLite file that makes a batch safe to interrupt and rerun.

Each job has one row, moved through these states by single-statement transactions::

    pending ──► submitting ──► submitted ──► succeeded
       ▲        (tag, account,  (generation    (record, paths)
       │         sent_at)        id)       └─► failed (reason)
       └── a transient failure (network, 5xx after retries) goes back to pending

``submitting`` is written *before* the request leaves, with the tag (the ``name`` sent) and the
account. If the process dies between the service accepting the submission and the journal
recording its id (``kill -9`` at the worst moment), the rerun finds the row in
``submitting``, looks for the tag in that account's list (the same reconciliation the client
uses for a lost answer), and adopts the generation instead of paying for it again.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed transaction survives the death
of the process (it is in the OS's page cache), which is the failure this guards against. All
calls run in a worker thread (``anyio.to_thread``), one at a time, off the event loop.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import attrs

__all__ = ["Journal", "JournalEntry"]

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
    updated_at REAL NOT NULL
);
"""


@attrs.frozen
class JournalEntry:
    """One job's row."""

    id: str
    state: str
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


_COLUMNS: Final = (
    "id, state, account, tag, prompt, sent_at, generation_id, record, paths, error,"
    " error_code, attempts"
)


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    (id_, state, account, tag, prompt, sent_at, gen, record, paths, error, code, attempts) = row
    return JournalEntry(
        id_,
        state,
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
    )


class Journal:
    """The SQLite journal at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return f"<Journal {str(self.path)!r}>"

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)

        def work() -> list[tuple[Any, ...]]:
            with self._lock:
                return self._connect().execute(sql, params).fetchall()

        return await anyio.to_thread.run_sync(work, limiter=self._limiter)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await anyio.to_thread.run_sync(close)

    async def get(self, job_id: str) -> JournalEntry | None:
        rows = await self._run(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _entry(rows[0]) if rows else None

    async def in_flight(self) -> list[JournalEntry]:
        """Rows an earlier run left between submitting and the end."""
        rows = await self._run(
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN ('submitting', 'submitted')"
        )
        return [_entry(row) for row in rows]

    async def _set(self, job_id: str, state: str, **fields: Any) -> None:
        columns = ["state", "updated_at", *fields]
        values = [state, time.time(), *fields.values()]
        await self._run(
            f"INSERT INTO jobs (id, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})"
            f" ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)}",
            (job_id, *values),
        )

    async def submitting(self, job_id: str, *, account: str, tag: str, prompt: str) -> None:
        """About to send: recorded *before* the request leaves (see the module docstring)."""
        await self._run(
            "INSERT INTO jobs (id, state, account, tag, prompt, sent_at, attempts, updated_at)"
            " VALUES (?, 'submitting', ?, ?, ?, ?, 1, ?)"
            " ON CONFLICT(id) DO UPDATE SET state = 'submitting', account = excluded.account,"
            " tag = excluded.tag, prompt = excluded.prompt, sent_at = excluded.sent_at,"
            " attempts = attempts + 1, generation_id = NULL, updated_at = excluded.updated_at",
            (job_id, account, tag, prompt, time.time(), time.time()),
        )

    async def submitted(self, job_id: str, generation_id: str) -> None:
        await self._run(
            "UPDATE jobs SET state = 'submitted', generation_id = ?, updated_at = ? WHERE id = ?",
            (generation_id, time.time(), job_id),
        )

    async def succeeded(self, job_id: str, record: dict[str, Any], paths: Sequence[str]) -> None:
        await self._set(
            job_id,
            "succeeded",
            generation_id=record.get("generationId"),
            record=json.dumps(record),
            paths=json.dumps(list(paths)),
            error=None,
            error_code=None,
        )

    async def failed(
        self,
        job_id: str,
        error: str,
        code: str | None,
        record: dict[str, Any] | None = None,
    ) -> None:
        await self._set(
            job_id,
            "failed",
            error=error,
            error_code=code,
            record=json.dumps(record) if record is not None else None,
        )

    async def pending(self, job_id: str, error: str | None = None) -> None:
        """Back to the queue (nothing was created, or the outcome is to be retried)."""
        await self._set(job_id, "pending", error=error, generation_id=None)
