"""Jobs files for ``asyncsdk batch``: JSON Lines or CSV, read lazily, checked line by line.

JSON Lines: one object per line, ``{"prompt": ..., "model": ..., "id": ..., ...}``; blank lines
and lines starting with ``#`` are skipped. CSV: a header row naming the same fields; an
``images`` cell holds several paths or URLs separated by ``|``; a cell of an unknown column
that reads as JSON (``42``, ``true``) is passed as that value, else as text. Both may start
with a UTF-8 byte order mark (Excel's "CSV UTF-8" writes one).

Every field is checked before anything is submitted (:func:`scan_file` streams the file once,
keeping only the ids seen), and a problem is reported as :class:`JobFileError` naming the file,
the line and the field: a malformed line, an id used twice (two identical jobs without an id
share their content-hash id, so they count as the same id), or a file without any job.

These are plain blocking functions: call them off the event loop (``anyio.to_thread``).
"""

from __future__ import annotations

import collections
import csv
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:  # imported when a job is built: the CLI parses its arguments without it
    from ._jobs import Job

__all__ = ["DEFAULT_MODEL", "FileSummary", "JobFileError", "check_file", "read_jobs", "scan_file"]

DEFAULT_MODEL: Final = "google/nano-banana"
_ASPECT_RATIOS: Final = frozenset(
    ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21",
     "match_input_image"]
)  # fmt: skip
_FORMATS: Final = frozenset({"png", "jpg", "webp"})
_SUFFIXES: Final = (".jsonl", ".ndjson", ".json", ".csv")


class JobFileError(ValueError):
    """A jobs file has a line that is not a valid job (or no job at all).

    :ivar line: the 1-based line number, or ``None`` when the problem is the whole file.
    """

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = path, line, problem
        super().__init__(problem if line is None else f"{path}:{line}: {problem}")


@attrs.frozen
class FileSummary:
    """What a jobs file asks for: the number of jobs, and how many jobs ask for each
    ``(model, output_number)``."""

    jobs: int
    shapes: Mapping[tuple[str, int], int]

    def per_model(self) -> dict[str, tuple[int, int]]:
        """``{model: (jobs, images)}``."""
        found: dict[str, tuple[int, int]] = {}
        for (model, images), count in self.shapes.items():
            jobs, total = found.get(model, (0, 0))
            found[model] = (jobs + count, total + images * count)
        return found


def _check(fields: Mapping[str, Any], default_model: str, start_by: float | None) -> Job:
    """A Job from one record's fields; ValueError naming the field otherwise."""
    from ._jobs import Job

    fields = dict(fields)
    prompt = fields.pop("prompt", None)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt: required, a non-empty string")
    if len(prompt) > 2000:
        raise ValueError(f"prompt: at most 2000 characters, got {len(prompt)}")
    model = fields.pop("model", None) or default_model
    if not isinstance(model, str) or model.count("/") != 1:
        raise ValueError(f"model: must look like 'lab/model', got {model!r}")
    job_id = fields.pop("id", None)
    if job_id is not None and (not isinstance(job_id, (str, int)) or str(job_id) == ""):
        raise ValueError(f"id: must be a non-empty string, got {job_id!r}")
    if "output_number" in fields:
        number = fields["output_number"]
        if isinstance(number, str) and number.strip().isdigit():
            number = fields["output_number"] = int(number)
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 4:
            raise ValueError(f"output_number: an integer from 1 to 4, got {number!r}")
    if "aspect_ratio" in fields and fields["aspect_ratio"] not in _ASPECT_RATIOS:
        raise ValueError(f"aspect_ratio: one of {', '.join(sorted(_ASPECT_RATIOS))}")
    if "output_format" in fields and fields["output_format"] not in _FORMATS:
        raise ValueError("output_format: one of png, jpg, webp")
    if "name" in fields:
        name = fields["name"]
        if not isinstance(name, str) or not 3 <= len(name) <= 30:
            raise ValueError(f"name: 3 to 30 characters, got {name!r}")
    if "images" in fields:
        images = fields["images"]
        if isinstance(images, str):
            images = fields["images"] = [i.strip() for i in images.split("|") if i.strip()]
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise ValueError("images: a list of paths or URLs")
        if not 1 <= len(images) <= 10:
            raise ValueError(f"images: 1 to 10 images, got {len(images)}")
    if "image_input" in fields:
        raise ValueError("image_input: use the field 'images'")
    deadline = fields.pop("start_by", start_by)
    if deadline is not None and (
        not isinstance(deadline, (int, float)) or isinstance(deadline, bool)
    ):
        raise ValueError(f"start_by: a Unix time in seconds, got {deadline!r}")
    return Job(
        model, prompt, id=None if job_id is None else str(job_id), start_by=deadline, **fields
    )


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames is None:  # not even a header: no jobs
                return
            if "prompt" not in [f.strip() for f in reader.fieldnames]:
                raise JobFileError(path, 1, "the header row must name a 'prompt' column")
            for row in reader:
                if None in row:
                    raise JobFileError(path, reader.line_num, "more cells than the header has")
                yield (
                    reader.line_num,
                    {k.strip(): _cell(k.strip(), v) for k, v in row.items() if v not in ("", None)},
                )
        return
    with path.open(encoding="utf-8-sig") as file:
        for number, line in enumerate(file, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise JobFileError(path, number, f"not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise JobFileError(path, number, "each line must be a JSON object")
            yield number, record


def _cell(column: str | None, value: str | None) -> Any:
    if column in ("prompt", "model", "id", "name", "aspect_ratio", "output_format", "images"):
        return value
    try:
        return json.loads(value or "")
    except ValueError:
        return value


def _numbered_jobs(
    path: Path, default_model: str, start_by: float | None
) -> Iterator[tuple[int, Job, bool]]:
    """(line, job, whether the line named its id)."""
    if path.suffix.lower() not in _SUFFIXES:
        raise JobFileError(path, None, f"{path}: use a .jsonl or .csv file")
    try:
        for number, record in _records(path):
            try:
                yield number, _check(record, default_model, start_by), "id" in record
            except (ValueError, TypeError) as exc:
                raise JobFileError(path, number, str(exc)) from None
    except UnicodeDecodeError:
        raise JobFileError(path, None, f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise JobFileError(path, None, f"{path}: not valid CSV ({exc})") from None


def read_jobs(
    path: str | os.PathLike[str],
    *,
    default_model: str = DEFAULT_MODEL,
    start_by: float | None = None,
) -> Iterator[Job]:
    """The jobs of a file, one at a time (call :func:`scan_file` first to refuse a bad file
    before anything is submitted).

    :param start_by: the start deadline (Unix time) of jobs whose line names none.
    """
    for _, job, _ in _numbered_jobs(Path(path), default_model, start_by):
        yield job


def scan_file(path: str | os.PathLike[str], *, default_model: str = DEFAULT_MODEL) -> FileSummary:
    """Check every line (streaming): the jobs per model, or :class:`JobFileError` for the
    first bad line, the first id used twice, or a file without jobs."""
    path = Path(path)
    first_line: dict[str, int] = {}
    shapes: collections.Counter[tuple[str, int]] = collections.Counter()
    for number, job, named in _numbered_jobs(path, default_model, None):
        earlier = first_line.setdefault(job.id, number)
        if earlier != number:
            problem = f"id {job.id!r} already used on line {earlier}"
            if not named:
                problem += " (the same job, without an id: give each an 'id' to run both)"
            raise JobFileError(path, number, problem)
        shapes[job.model, job.output_number] += 1
    if not first_line:
        raise JobFileError(path, None, f"no jobs in {path}")
    return FileSummary(len(first_line), dict(shapes))


def check_file(path: str | os.PathLike[str], *, default_model: str = DEFAULT_MODEL) -> int:
    """Check every line (streaming); the number of jobs, or :class:`JobFileError`."""
    return scan_file(path, default_model=default_model).jobs
