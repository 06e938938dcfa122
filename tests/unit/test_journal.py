"""The batch journal on its own (SQLite, no sockets): states, requests, migration, checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from asyncsdk import Job
from asyncsdk._journal import Journal, JournalState, difference

pytestmark = pytest.mark.anyio

#: The schema of the journals written by asyncsdk 0.2.0, before requests were kept.
OLD_SCHEMA = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, account TEXT, tag TEXT, prompt TEXT,
    sent_at REAL, generation_id TEXT, record TEXT, paths TEXT, error TEXT, error_code TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL
);
INSERT INTO jobs (id, state, prompt, generation_id, record, paths, updated_at)
VALUES ('old', 'succeeded', 'a red kite', 'g-1',
        '{"generationId": "g-1", "status": "succeeded", "modelProvider": "google/nano-banana",
          "outputNumber": 2, "creditCost": 4}', '[]', 0);
"""


async def test_an_older_journal_is_migrated_and_checked_by_prompt(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    journal = Journal(path)
    entry = await journal.get("old")
    assert entry is not None and entry.state == "succeeded" and entry.request is None
    same = Job("google/nano-banana", "a red kite", id="old")
    changed = Job("google/nano-banana", "a blue kite", id="old")
    assert difference(same.request, entry) is None
    assert difference(changed.request, entry) == "prompt"
    assert await journal.costs() == [("google/nano-banana", 2, 4)]
    await journal.aclose()
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    assert {"request", "retryable"} <= columns


async def test_the_request_is_kept_and_a_changed_job_is_named(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    job = Job("google/nano-banana", "a kite", id="x1", aspect_ratio="16:9", seed=3)
    await journal.submitting("x1", account="a", tag="x1~0", prompt=job.prompt, request=job.request)
    await journal.submitted("x1", "g-1")
    await journal.succeeded("x1", {"generationId": "g-1"}, ["out/x1-1.png"])
    entry = await journal.get("x1")
    assert entry is not None and entry.request == job.request
    assert difference(job.request, entry) is None
    other = Job("google/nano-banana", "a kite", id="x1", aspect_ratio="1:1", seed=3)
    assert difference(other.request, entry) == "aspect_ratio"
    moved = Job("bfl/flux-schnell", "a boat", id="x1")
    assert difference(moved.request, entry) == "aspect_ratio, model, prompt, seed"
    await journal.aclose()


async def test_check_finds_the_first_change_counts_states_and_what_would_run(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    jobs = [Job("google/nano-banana", f"p{i}", id=f"j{i}") for i in range(1200)]
    await journal.succeeded("j0", {"generationId": "g"}, [])
    await journal.failed("j1", "crashed", None, retryable=True, request=jobs[1].request)
    await journal.failed("j2", "nsfw", "NSFW_CONTENT_DETECTED", request=jobs[2].request)
    await journal.pending("j3", "expired", request=jobs[3].request)
    triples = [(j.id, j.request, j.model) for j in jobs]
    checked = await journal.check(iter(triples))
    assert checked.changed is None
    assert checked.states == {"succeeded": 1, "failed": 2, "pending": 1, "new": 1196}
    assert checked.to_run == {"google/nano-banana": 1197}
    again = await journal.check(iter(triples), rerun_failed=True)
    assert again.to_run == {"google/nano-banana": 1198}  # j1 (retryable), not j2
    changed = [*triples[:1100], ("j3", Job("google/nano-banana", "other").request, "m")]
    assert (await journal.check(changed)).changed == ("j3", "prompt")
    await journal.aclose()


async def test_a_download_failure_keeps_the_paid_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    record = {"generationId": "g-9", "status": "succeeded", "creditCost": 2}
    await journal.submitting("d", account="a", tag="d~1", prompt="p")
    await journal.downloading("d", record)
    await journal.download_failed("d", "No space left on device", None)
    entry = await journal.get("d")
    assert entry is not None
    assert (entry.state, entry.generation_id, entry.record) == ("download_failed", "g-9", record)
    assert entry.retryable is True and entry.error == "No space left on device"
    assert await journal.in_flight() == []  # not resubmitted: downloaded again
    await journal.aclose()


async def test_failed_rows_say_whether_retrying_could_help(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    await journal.failed("a", "model crashed", None, retryable=True)
    await journal.failed("b", "refused", "NSFW_CONTENT_DETECTED")
    a, b = await journal.get("a"), await journal.get("b")
    assert a is not None and a.retryable is True
    assert b is not None and b.retryable is False and b.error_code == "NSFW_CONTENT_DETECTED"
    await journal.submitting("a", account="x", tag="a~2", prompt="p")  # run again
    again = await journal.get("a")
    assert again is not None and again.state == "submitting" and again.retryable is None
    await journal.aclose()


async def test_a_row_walks_through_the_states_and_the_file_keeps_their_strings(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    walked: list[JournalState] = []

    async def state() -> JournalState:
        entry = await journal.get("w")
        assert entry is not None
        walked.append(entry.state)
        return entry.state

    await journal.submitting("w", account="a", tag="w~1", prompt="p", request="{}")
    assert await state() is JournalState.SUBMITTING
    assert [e.id for e in await journal.in_flight()] == ["w"]
    await journal.pending("w", "connection refused")  # nothing was created: back to the queue
    await state()
    assert await journal.in_flight() == []
    await journal.submitting("w", account="b", tag="w~2", prompt="p")  # sent again
    await journal.submitted("w", "g-2")
    await state()
    assert [(e.id, e.generation_id, e.account) for e in await journal.in_flight()] == [
        ("w", "g-2", "b")
    ]
    await journal.downloading("w", {"generationId": "g-2", "status": "succeeded"})
    await state()
    await journal.succeeded("w", {"generationId": "g-2", "status": "succeeded"}, ["out/w-1.png"])
    entry = await journal.get("w")
    assert entry is not None and (entry.state, entry.paths, entry.attempts) == (
        JournalState.SUCCEEDED, ("out/w-1.png",), 2,
    )  # fmt: skip
    assert entry.error is None and entry.request == "{}"  # kept from the first submission
    assert walked == ["submitting", "pending", "submitted", "downloading"]
    await journal.aclose()
    with sqlite3.connect(tmp_path / "j.sqlite") as db:  # on disk: the plain strings
        assert db.execute("SELECT state, typeof(state) FROM jobs").fetchall() == [
            ("succeeded", "text")
        ]


async def test_a_journal_opens_on_first_use_and_again_after_aclose(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "sub" / "j.sqlite")
    assert not journal.is_open and not journal.path.exists()
    await journal.pending("a")
    assert journal.is_open and journal.path.exists()
    await journal.aclose()
    assert not journal.is_open
    entry = await journal.get("a")  # a later call opens it again
    assert entry is not None and entry.state is JournalState.PENDING and journal.is_open
    await journal.aclose()


async def test_a_file_that_is_not_a_journal_is_refused_and_left_closed(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"these are not the pages of a database" * 100)
    journal = Journal(path)
    with pytest.raises(sqlite3.DatabaseError):
        await journal.get("a")
    assert not journal.is_open
