"""Jobs files (JSON Lines, CSV): parsing, checks and refusals, without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncsdk._jobfile import JobFileError, read_jobs, scan_file

BOM = "\ufeff"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("jobs.jsonl", BOM + '{"prompt": "a kite", "id": "k1"}\n{"prompt": "a boat"}\n'),
        ("jobs.csv", BOM + "id,prompt\nk1,a kite\n,a boat\n"),
    ],
)
def test_a_byte_order_mark_is_accepted(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)
    jobs = list(read_jobs(path))
    assert [j.prompt for j in jobs] == ["a kite", "a boat"]
    assert jobs[0].id == "k1"
    assert scan_file(path).jobs == 2


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty.jsonl", ""),
        ("comments.jsonl", "# nothing yet\n\n   \n"),
        ("empty.csv", ""),
        ("header.csv", "id,prompt\n"),
        ("bom.csv", BOM),
    ],
)
def test_a_file_without_jobs_is_refused(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(JobFileError) as caught:
        scan_file(path)
    assert str(caught.value) == f"no jobs in {path}"


def test_an_id_used_twice_names_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "jobs.jsonl",
        '{"prompt": "a kite", "id": "x1"}\n{"prompt": "a boat", "id": "x1"}\n',
    )
    with pytest.raises(JobFileError) as caught:
        scan_file(path)
    assert str(caught.value) == f"{path}:2: id 'x1' already used on line 1"


def test_identical_jobs_without_ids_share_their_id_and_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.csv", "prompt\na kite\na boat\na kite\n")
    with pytest.raises(JobFileError) as caught:
        scan_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:4: id 'job-") and "already used on line 2" in message
    assert "give each an 'id'" in message


def test_shapes_count_jobs_per_model_and_images(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "jobs.jsonl",
        '{"prompt": "a"}\n{"prompt": "b", "output_number": 3}\n'
        '{"prompt": "c", "model": "bfl/flux-schnell", "output_number": 2}\n'
        '{"prompt": "d", "output_number": 3}\n',
    )
    summary = scan_file(path)
    assert summary.jobs == 4
    assert summary.shapes == {
        ("google/nano-banana", 1): 1,
        ("google/nano-banana", 3): 2,
        ("bfl/flux-schnell", 2): 1,
    }
    assert summary.per_model() == {"google/nano-banana": (3, 7), "bfl/flux-schnell": (1, 2)}


def test_start_by_comes_from_the_line_or_the_default(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.jsonl", '{"prompt": "a", "start_by": 5}\n{"prompt": "b"}\n')
    first, second = read_jobs(path, start_by=100.0)
    assert (first.start_by, second.start_by) == (5.0, 100.0)
    assert "start_by" not in first.params  # a deadline, not a model parameter
    bad = write(tmp_path, "bad.jsonl", '{"prompt": "a", "start_by": "soon"}\n')
    with pytest.raises(JobFileError, match=r"bad.jsonl:1: start_by"):
        scan_file(bad)


def test_the_request_is_canonical_and_excludes_id_and_deadline(tmp_path: Path) -> None:
    a = write(tmp_path, "a.jsonl", '{"prompt": "p", "seed": 1, "aspect_ratio": "1:1", "id": "x"}\n')
    b = write(tmp_path, "b.csv", "aspect_ratio,prompt,seed,id\n1:1,p,1,y\n")
    (ja,), (jb,) = list(read_jobs(a)), list(read_jobs(b, start_by=9.0))
    assert ja.request == jb.request
    assert ja.id != jb.id


def test_bad_encoding_and_csv_are_reported_as_job_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(JobFileError, match="not UTF-8"):
        scan_file(path)
    wide = write(tmp_path, "wide.csv", "prompt\na,b\n")
    with pytest.raises(JobFileError, match=r"wide.csv:2: more cells than the header"):
        scan_file(wide)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": ""}', "prompt: required, a non-empty string"),
        ('{"prompt": "' + "x" * 2001 + '"}', "prompt: at most 2000 characters, got 2001"),
        ('{"prompt": "a", "model": "nano-banana"}', "model: must look like 'lab/model'"),
        ('{"prompt": "a", "id": ""}', "id: must be a non-empty string"),
        ('{"prompt": "a", "output_number": 5}', "output_number: an integer from 1 to 4, got 5"),
        ('{"prompt": "a", "output_number": true}', "output_number: an integer from 1 to 4"),
        ('{"prompt": "a", "aspect_ratio": "7:3"}', "aspect_ratio: one of "),
        ('{"prompt": "a", "output_format": "gif"}', "output_format: one of png, jpg, webp"),
        ('{"prompt": "a", "name": "ab"}', "name: 3 to 30 characters, got 'ab'"),
        ('{"prompt": "a", "images": []}', "images: 1 to 10 images, got 0"),
        ('{"prompt": "a", "images": [1, 2]}', "images: a list of paths or URLs"),
        ('{"prompt": "a", "image_input": ["x.png"]}', "image_input: use the field 'images'"),
        ('{"prompt": "a"', "not valid JSON"),
        ('["a", "list"]', "each line must be a JSON object"),
    ],
)
def test_a_bad_field_is_refused_naming_the_file_the_line_and_the_field(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = write(tmp_path, "jobs.jsonl", '# a comment\n{"prompt": "fine"}\n\n' + line + "\n")
    with pytest.raises(JobFileError) as caught:
        scan_file(path)
    assert caught.value.line == 4  # comments and blank lines still count as lines
    assert str(caught.value).startswith(f"{path}:4: {problem}")


def test_csv_cells_read_as_json_values_and_images_split_on_bars(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "jobs.csv",
        "prompt,output_number,seed,upscale,style,images\n"
        'a kite,2,42,true,"{""not"": json",in/a.png | https://x.test/b.png\n',
    )
    (job,) = read_jobs(path)
    assert job.output_number == 2
    assert dict(job.params) == {
        "output_number": 2,
        "seed": 42,
        "upscale": True,
        "style": '{"not": json',  # not JSON: kept as text
        "images": ["in/a.png", "https://x.test/b.png"],
    }


def test_a_csv_without_a_prompt_column_and_other_suffixes_are_refused(tmp_path: Path) -> None:
    headless = write(tmp_path, "jobs.csv", "id,text\nk1,a kite\n")
    with pytest.raises(JobFileError, match=r"jobs.csv:1: the header row must name a 'prompt'"):
        scan_file(headless)
    other = write(tmp_path, "jobs.txt", '{"prompt": "a kite"}\n')
    with pytest.raises(JobFileError, match=r"use a \.jsonl or \.csv file") as caught:
        scan_file(other)
    assert caught.value.line is None


def test_jobs_are_read_lazily_and_the_default_model_applies(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "jobs.jsonl",
        '{"prompt": "a"}\n{"prompt": "b", "model": "bfl/flux-schnell"}\n{"prompt": ""}\n',
    )
    jobs = read_jobs(path, default_model="lab/default")
    first = next(jobs)  # the bad third line is not read yet
    assert (first.model, next(jobs).model) == ("lab/default", "bfl/flux-schnell")
    with pytest.raises(JobFileError, match=r"jobs.jsonl:3: prompt"):
        next(jobs)
