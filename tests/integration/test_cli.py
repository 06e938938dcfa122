"""The installed `asyncsdk` command against the emulator, in a subprocess as a user runs it.

Every child is started with Ctrl-C's default handling (even when this test run itself ignores
SIGINT, as a background job of a non-interactive shell does) and killed if it runs past its
bound. Assertions about money come from the emulator's own records.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from asyncsdk import AsyncClient, Limits
from asyncsdk.emulator import Emulator

pytestmark = pytest.mark.anyio
SCALE = "0.02"
ASYNCSDK = Path(sys.executable).parent / "asyncsdk"
MODEL = "google/nano-banana"
#: Restores SIGINT's default disposition, then execs the command: exec keeps a default
#: disposition (and would keep an ignored one), and Python turns the default into
#: KeyboardInterrupt.
DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL);"
    " os.execv(sys.argv[1], sys.argv[1:])"
)


def command(*args: str) -> list[str]:
    return [sys.executable, "-c", DEFAULT_SIGINT, str(ASYNCSDK), *args]


@attrs.frozen
class Done:
    code: int
    out: str
    err: str

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


async def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> Done:
    """Run the command to its end; killed (and the test failed) after ``timeout`` seconds."""

    def blocking() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )

    done = await anyio.to_thread.run_sync(blocking)
    return Done(done.returncode, done.stdout, done.stderr)


def env_for(emu: Emulator | None, keys: list[str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BABYSEA_", "ASYNCSDK_"))}
    if emu is not None:
        env["BABYSEA_API_KEY"] = ",".join(keys or emu.tokens[:1])
    return env


async def cli(emu: Emulator, *args: str, keys: list[str] | None = None, **kw: Any) -> Done:
    return await run(
        "--base-url", emu.base_url, "--time-scale", SCALE, *args, env=env_for(emu, keys), **kw
    )


@contextlib.contextmanager
def started(emu: Emulator, *args: str, keys: list[str] | None = None) -> Iterator[Any]:
    """A command running in the background; killed on the way out if still running."""
    process = subprocess.Popen(
        command("--base-url", emu.base_url, "--time-scale", SCALE, *args),
        env=env_for(emu, keys),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


async def finish(process: Any, timeout: float = 30) -> Done:
    out, err = await anyio.to_thread.run_sync(lambda: process.communicate(timeout=timeout))
    return Done(process.returncode, out, err)


async def until(condition: Any, timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 (another process, no event to wait for)
            await anyio.sleep(0.005)


def posts(emu: Emulator) -> int:
    """Submissions the emulator received (accepted or not)."""
    return sum(len(times) for times in emu.stats.arrivals.values())


def created(emu: Emulator) -> int:
    return sum(emu.stats.created.values())


def status_reads(emu: Emulator) -> int:
    return emu.stats.requests["GET", "/api/v1/image-generation/{generationId}"]


def write_jobs(path: Path, *jobs: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    return path


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(accounts=2, time_scale=float(SCALE), processing_time=2.0) as emulator:
        yield emulator


@pytest.fixture
async def slow() -> AsyncIterator[Emulator]:
    """One account whose generations take 0.8 s (of a 1 s auto-cancel)."""
    async with Emulator(accounts=1, time_scale=float(SCALE), processing_time=40.0) as emulator:
        yield emulator


# -- the basics ----------------------------------------------------------------------------------
async def test_status_account_list(emu: Emulator) -> None:
    done = await cli(emu, "--json", "status")
    assert done.code == 0, done.err
    assert json.loads(done.out)["accountId"]
    done = await cli(emu, "account")
    assert done.code == 0 and "credits: 1000" in done.out
    done = await cli(emu, "--json", "list", "--all")
    assert done.code == 0 and json.loads(done.out) == []


async def test_generate_then_download(emu: Emulator, tmp_path: Path) -> None:
    done = await cli(
        emu, "--json", "generate", MODEL, "a red kite", "--output-number", "2",
        "--out", str(tmp_path / "a"),
    )  # fmt: skip
    assert done.code == 0, done.err
    record = json.loads(done.out)
    assert record["status"] == "succeeded" and len(record["paths"]) == 2
    for path in record["paths"]:
        assert (await anyio.Path(path).read_bytes()).startswith(b"\x89PNG")
    done = await cli(emu, "download", record["generationId"], "--out", str(tmp_path / "b"))
    assert done.code == 0 and len(done.out.split()) == 2
    done = await cli(emu, "list")
    assert done.code == 0 and record["generationId"] in done.out


async def test_version_and_global_options_after_the_command(emu: Emulator) -> None:
    from asyncsdk import __version__

    done = await run("--version")
    assert (done.code, done.out.strip()) == (0, f"asyncsdk {__version__}")
    done = await run(
        "status", "--json", "--base-url", emu.base_url, "--time-scale", SCALE, env=env_for(emu)
    )
    assert done.code == 0, done.err
    assert json.loads(done.out)["accountId"]


def test_every_option_says_its_default() -> None:
    from asyncsdk.cli import build_parser

    parser = build_parser()
    parsers = [parser, *parser._subparsers._group_actions[0].choices.values()]  # type: ignore[union-attr]
    checked = 0
    for each in parsers:
        for action in each._actions:
            if not action.option_strings or action.dest in ("help", "version"):
                continue
            assert action.help and "default" in action.help, (each.prog, action.dest)
            checked += 1
    assert checked > 40


async def test_help_version_and_usage_errors_do_not_import_aiohttp() -> None:
    for args, code in ((["--help"], 0), (["batch", "--help"], 0), (["--version"], 0),
                       (["batch"], 2), (["frobnicate"], 2)):  # fmt: skip
        importtime = [sys.executable, "-X", "importtime", str(ASYNCSDK), *args]
        process = await anyio.to_thread.run_sync(
            functools.partial(
                subprocess.run,
                importtime,
                capture_output=True,
                text=True,
                timeout=30,
                env=env_for(None),
            )
        )
        assert process.returncode == code, (args, process.stderr[-500:])
        imported = [line.split("|")[-1].strip() for line in process.stderr.splitlines()
                    if line.startswith("import time:")]  # fmt: skip
        assert "asyncsdk.cli" in imported
        assert not [m for m in imported if m.split(".")[0] in ("aiohttp", "yarl", "multidict")]


async def test_usage_errors(emu: Emulator, tmp_path: Path) -> None:
    done = await cli(emu, "--keys-file", str(tmp_path / "none"), "status")
    assert done.code == 2 and "--keys-file" in done.err
    done = await cli(emu, "batch", str(tmp_path / "missing.jsonl"))
    assert done.code == 2 and "missing.jsonl" in done.err
    done = await cli(emu, "status", keys=["bye_" + "0" * 32])
    assert done.code == 1 and "AuthenticationError" in done.err and "bye_" not in done.err
    done = await cli(emu, "batch", str(write_jobs(tmp_path / "j.jsonl", {"prompt": "a"})),
                     "--retry-failed")  # fmt: skip
    assert done.code == 2 and "--retry-failed needs --journal" in done.err


async def test_the_services_400_for_generate_exits_2(emu: Emulator, tmp_path: Path) -> None:
    done = await cli(emu, "generate", MODEL, "a kite", "--aspect-ratio", "7:3", "--out",
                     str(tmp_path))  # fmt: skip
    assert done.code == 2, done.err
    assert "VALIDATION_ERROR" in done.err and len(done.err.strip().splitlines()) == 1
    assert created(emu) == 0


async def test_keys_file_comments_blank_lines_and_bom(emu: Emulator, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(
        f"\ufeff# our accounts\n\n   # the second one is new\n  {emu.tokens[1]}  \n",
        encoding="utf-8",
    )
    done = await cli(emu, "--json", "--keys-file", str(keys), "status", keys=["unused"])
    assert done.code == 0, done.err
    assert json.loads(done.out)["apiKeyName"]


def non_loopback_address() -> str:
    """An address of this machine that is not loopback (skips the test if there is none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent over UDP connect
            address: str = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("no non-loopback address on this machine")
    return address


async def test_plain_http_to_another_host_needs_allow_insecure_http() -> None:
    async with Emulator(host=non_loopback_address(), time_scale=float(SCALE)) as emu:
        assert not emu.base_url.startswith("http://127.")
        done = await cli(emu, "status")
        assert done.code == 2 and "refusing to send the API key over plain http" in done.err
        done = await cli(emu, "--json", "status", "--allow-insecure-http")
        assert done.code == 0, done.err
        assert json.loads(done.out)["accountId"]


# -- jobs files ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": "x", "output_number": 9}\n',
         "bad.jsonl:2: output_number: an integer from 1 to 4"),
        ("bad.jsonl", '{"prompt": "ok"}\n\n{"prompt": "x"\n', "bad.jsonl:3: not valid JSON"),
        ("bad.jsonl", '{"model": "google/nano-banana"}\n', "bad.jsonl:1: prompt: required"),
        ("bad.jsonl", '["prompt"]\n', "bad.jsonl:1: each line must be a JSON object"),
        ("bad.csv", "id,text\n1,hello\n", "bad.csv:1: the header row must name a 'prompt'"),
        ("bad.csv", "prompt,aspect_ratio\nfine,1:1\nwide,7:3\n", "bad.csv:3: aspect_ratio"),
        ("bad.txt", "hello\n", "bad.txt: use a .jsonl or .csv file"),
        ("jobs.jsonl", '{"prompt": "a kite", "id": "x1"}\n{"prompt": "a boat", "id": "x1"}\n',
         "jobs.jsonl:2: id 'x1' already used on line 1"),
        ("same.csv", "prompt\na kite\na kite\n", "same.csv:3: id 'job-"),
        ("empty.jsonl", "", "no jobs in "),
        ("comments.jsonl", "# to do\n\n", "no jobs in "),
        ("empty.csv", "", "no jobs in "),
        ("header.csv", "\ufeffprompt,id\n", "no jobs in "),
    ],
)  # fmt: skip
async def test_bad_jobs_files_are_refused_before_anything_is_paid(
    emu: Emulator, tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    done = await cli(emu, "batch", name, cwd=tmp_path)
    assert done.code == 2
    assert f"asyncsdk: error: {message}" in done.err and len(done.err.splitlines()) == 1
    assert posts(emu) == 0


async def test_batch_jsonl_with_journal_and_rerun(emu: Emulator, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    lines = [json.dumps({"prompt": f"kite {i}", "id": f"kite-{i}"}) for i in range(6)]
    jobs.write_text("\ufeff# six kites\n" + "\n".join(lines) + "\n\n", encoding="utf-8")
    keys = tmp_path / "keys.txt"
    keys.write_text("\n".join(emu.tokens) + "\n")
    args = ["--keys-file", str(keys), "batch", str(jobs), "--journal",
            str(tmp_path / "j.sqlite"), "--out", str(tmp_path / "out"), "--json"]  # fmt: skip
    done = await cli(emu, *args)
    assert done.code == 0, done.err
    *results, summary = done.lines()
    assert len(results) == 6 and all(r["ok"] and r["status"] == "succeeded" for r in results)
    assert {r["account"] for r in results} == {"account 1", "account 2"}
    summary = summary["summary"]
    assert summary["succeeded"] == 6 and summary["credits"] == 12
    assert summary["out"] == str(tmp_path / "out")
    assert summary["jobs_per_minute"] is None  # far too short a run to mean anything
    assert len(list((tmp_path / "out").glob("kite-*-1.png"))) == 6
    done = await cli(emu, *args)
    *again, summary = done.lines()
    assert done.code == 0 and all(r["from_journal"] for r in again)
    assert summary["summary"]["from_journal"] == 6 and summary["summary"]["credits"] == 0
    assert created(emu) == 6


async def test_batch_csv_with_bom_and_failed_jobs_exit_1(emu: Emulator, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "\ufeffid,prompt,aspect_ratio,output_number,seed\n"
        "a,a calm lake,16:9,1,42\n"
        "b,a nude statue,1:1,1,7\n",
        encoding="utf-8",
    )
    done = await cli(emu, "--json", "batch", str(jobs))
    assert done.code == 1, done.err
    results = {r["id"]: r for r in done.lines()[:-1]}
    assert results["a"]["ok"] and results["a"]["generation"]["aspectRatio"] == "16:9"
    assert results["b"]["error_code"] == "NSFW_CONTENT_DETECTED"
    assert results["b"]["retryable"] is False


async def test_a_job_changed_under_a_journal_id_is_refused(emu: Emulator, tmp_path: Path) -> None:
    journal = str(tmp_path / "j.sqlite")
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"prompt": "a kite", "id": "x1"})
    assert (await cli(emu, "batch", str(jobs), "--journal", journal)).code == 0
    write_jobs(jobs, {"prompt": "a boat", "id": "x2"}, {"prompt": "a red kite", "id": "x1"})
    done = await cli(emu, "batch", str(jobs), "--journal", journal)
    assert done.code == 2
    assert "job 'x1' differs from the job the journal" in done.err and "(prompt)" in done.err
    assert posts(emu) == 1


# -- money and output ------------------------------------------------------------------------------
async def test_an_unusable_out_is_refused_before_anything_is_paid(
    emu: Emulator, tmp_path: Path
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file")
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"prompt": "a kite"})
    for where in (taken, taken / "below"):
        done = await cli(emu, "batch", str(jobs), "--out", str(where))
        assert done.code == 2 and f"--out {where}" in done.err, done.err
        done = await cli(emu, "generate", MODEL, "a kite", "--out", str(where))
        assert done.code == 2 and f"--out {where}" in done.err
        assert len(done.err.strip().splitlines()) == 1 and "Traceback" not in done.err
    done = await cli(emu, "batch", str(jobs), "--results", str(taken / "results.jsonl"))
    assert done.code == 2 and "--results" in done.err
    assert posts(emu) == 0


async def test_images_not_saved_are_saved_by_the_rerun(slow: Emulator, tmp_path: Path) -> None:
    out, journal = tmp_path / "out", str(tmp_path / "j.sqlite")
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"prompt": "a kite", "id": "kite"})
    args = ["batch", str(jobs), "--journal", journal, "--out", str(out), "--results",
            str(tmp_path / "r.jsonl")]  # fmt: skip
    with started(slow, *args) as process:
        await until(lambda: created(slow) == 1)
        out.rmdir()  # the disk went away while the generation ran
        out.write_text("not a directory any more")
        done = await finish(process)
    assert done.code == 1
    (line,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert line["status"] == "download_failed" and line["retryable"] and line["credits"] == 2
    out.unlink()
    done = await cli(slow, *args)
    assert done.code == 0, done.err
    assert list(out.glob("kite-1.png")) and created(slow) == 1  # saved, not paid again
    assert f"images saved under {out}" in done.out


async def test_an_unreachable_service_stops_the_batch_within_seconds(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    jobs = write_jobs(tmp_path / "jobs.jsonl", *({"prompt": f"p{i}"} for i in range(40)))
    env = dict(env_for(None), BABYSEA_API_KEY=f"bye_{'1' * 32},bye_{'2' * 32}")
    base = f"http://127.0.0.1:{port}/api/v1"
    with anyio.fail_after(30):
        started_at = anyio.current_time()
        done = await run("--base-url", base, "--time-scale", SCALE, "batch", str(jobs), env=env)
        elapsed = anyio.current_time() - started_at
    assert done.code == 1
    (line,) = done.err.strip().splitlines()
    assert "every account was taken out of the batch (all 2: unreachable" in line
    assert "journal" not in line and "Traceback" not in done.err
    assert elapsed < 10


async def test_max_credits_stops_cleanly_and_a_rerun_goes_on(emu: Emulator, tmp_path: Path) -> None:
    emu.set_credits(emu.tokens[1], 1)
    journal = str(tmp_path / "j.sqlite")
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", *({"prompt": f"p{i}", "id": f"job{i}"} for i in range(6))
    )
    done = await cli(emu, "batch", str(jobs), "--journal", journal, "--max-credits", "5",
                     "--json", keys=emu.tokens)  # fmt: skip
    assert done.code == 1, done.err
    assert created(emu) == 2  # 2 credits each: a third would make 6 > 5
    assert "stopped before the budget ran out" in done.err
    assert "4 jobs not started (pending in the journal: rerun to go on)" in done.err
    *results, summary = done.lines()
    assert len(results) == 2 and summary["summary"]["stopped"]
    done = await cli(emu, "batch", str(jobs), "--journal", journal, "--max-credits", "100",
                     "--json", keys=emu.tokens)  # fmt: skip
    assert done.code == 0, done.err
    assert "account 2 has 1 credit, less than a job costs (2): it runs nothing" in done.err
    assert created(emu) == 6 and emu.stats.created[emu.tokens[1]] == 0


async def test_dry_run_estimates_and_submits_nothing(emu: Emulator, tmp_path: Path) -> None:
    async with AsyncClient(
        emu.tokens[0], base_url=emu.base_url, limits=Limits(window=1.2), poll_interval=0.02
    ) as client:
        await client.generate(MODEL, "seen in the history")  # the price: 2 credits
    emu.set_credits(emu.tokens[1], 1)
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        {"prompt": "a"}, {"prompt": "b"}, {"prompt": "c", "output_number": 2},
        {"prompt": "d", "model": "bfl/flux-schnell"}, {"prompt": "e", "model": "bfl/flux-schnell"},
    )  # fmt: skip
    sent = posts(emu)
    done = await cli(emu, "batch", str(jobs), "--dry-run", keys=emu.tokens)
    assert done.code == 0, done.err
    text = done.out
    assert "5 jobs, every line valid" in text
    assert re.search(r"google/nano-banana +3 jobs +4 images +~8 credits\n", text)
    assert re.search(r"bfl/flux-schnell +2 jobs +2 images +credits unknown", text)
    assert "account 1: 998 credits" in text
    assert "account 2: 1 credit, can't afford a job (2 credits)" in text
    assert "time: at least 1 s (5 jobs / (1 account x 10 per 1.2 s))" in text
    assert "dry run: nothing was submitted" in text
    journal = tmp_path / "not-yet.sqlite"
    done = await cli(emu, "batch", str(jobs), "--dry-run", "--json", "--journal", str(journal),
                     keys=emu.tokens)  # fmt: skip
    assert not journal.exists()  # a dry run leaves nothing behind
    plan = json.loads(done.out)
    assert plan["estimated_credits"] is None and plan["known_credits"] == 8
    assert plan["unknown_models"] == ["bfl/flux-schnell"] and plan["submitted"] == 0
    assert [a["can_afford"] for a in plan["accounts"]] == [True, False]
    assert posts(emu) == sent  # not one submission


async def test_results_file_and_retry_failed(emu: Emulator, tmp_path: Path) -> None:
    journal, results = str(tmp_path / "j.sqlite"), tmp_path / "results.jsonl"
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        {"prompt": "a nude statue", "id": "nsfw"}, {"prompt": "unlucky", "id": "crash"},
        {"prompt": "fine", "id": "fine"},
    )  # fmt: skip
    emu.faults.fail_generations(1, reason="model crashed")
    done = await cli(emu, "batch", str(jobs), "--journal", journal, "--results", str(results))
    assert done.code == 1
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["nsfw", "crash", "fine"]  # as they finished
    nsfw, crash, fine = lines
    assert (nsfw["status"], nsfw["error_code"], nsfw["retryable"]) == (
        "failed", "NSFW_CONTENT_DETECTED", False)  # fmt: skip
    assert (crash["status"], crash["retryable"], crash["credits"]) == ("failed", True, 0)
    assert crash["generation_id"] and "model crashed" in crash["error"]
    assert (fine["status"], fine["credits"], len(fine["images"])) == ("succeeded", 2, 1)
    sent = posts(emu)
    done = await cli(emu, "batch", str(jobs), "--journal", journal, "--results", str(results),
                     "--retry-failed")  # fmt: skip
    assert posts(emu) == sent + 1  # only the job retrying could help
    again = {line["id"]: line for line in map(json.loads, results.read_text().splitlines())}
    assert again["crash"]["status"] == "succeeded" and not again["crash"]["from_journal"]
    assert again["nsfw"]["from_journal"] and again["fine"]["from_journal"]


async def test_start_within_expires_jobs_unpaid_and_results_flush(
    slow: Emulator, tmp_path: Path
) -> None:
    results = tmp_path / "results.jsonl"
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", *({"prompt": f"p{i}", "id": f"job{i}"} for i in range(4))
    )
    with started(slow, "batch", str(jobs), "--start-within", "0.3", "--results",
                 str(results)) as process:  # fmt: skip
        # Lines come as jobs end: the expired ones while the first generation still runs.
        await until(lambda: results.exists() and results.read_text().count("\n") >= 3)
        (running,) = slow.generations(slow.tokens[0])
        assert running["status"] in ("starting", "processing")
        done = await finish(process)
    assert done.code == 1
    lines = {line["id"]: line for line in map(json.loads, results.read_text().splitlines())}
    assert lines["job0"]["status"] == "succeeded"
    assert [lines[f"job{i}"]["status"] for i in (1, 2, 3)] == ["expired"] * 3
    assert created(slow) == 1 and posts(slow) == 1  # never sent late


# -- interruptions ---------------------------------------------------------------------------------
async def test_ctrl_c_during_generate_names_the_running_generation(
    slow: Emulator, tmp_path: Path
) -> None:
    with started(slow, "generate", MODEL, "a kite", "--out", str(tmp_path)) as process:
        # Created, and its answer read by the command: it polls the generation's status.
        await until(lambda: created(slow) == 1 and status_reads(slow) >= 1)
        process.send_signal(signal.SIGINT)
        done = await finish(process)
    (generation,) = slow.generations(slow.tokens[0])
    assert done.code == 130
    assert f"generation {generation['generationId']} is still running" in done.err
    assert f"asyncsdk download {generation['generationId']}" in done.err
    assert "journal" not in done.err and "Traceback" not in done.err


async def test_ctrl_c_during_batch_mentions_a_journal_only_with_one(
    slow: Emulator, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", *({"prompt": f"p{i}"} for i in range(3)))
    for extra in ([], ["--journal", str(tmp_path / "j.sqlite")]):
        before = created(slow)
        with started(slow, "batch", str(jobs), *extra) as process:
            await until(lambda b=before: created(slow) > b)
            process.send_signal(signal.SIGINT)
            done = await finish(process)
        assert done.code == 130 and "interrupted" in done.err
        assert ("journal" in done.err) == bool(extra), done.err


# -- the other commands ----------------------------------------------------------------------------
async def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    done = await run("demo", "--jobs", "6", "--scale", "0.02", "--out", str(tmp_path / "out"),
                     env=env_for(None))  # fmt: skip
    assert done.code == 0, done.err
    assert "Compressed clock" in done.out and "summary" in done.out
    assert "0 rate-limit errors" in done.out and "throughput" not in done.out
    assert len(list((tmp_path / "out").glob("demo-*.png"))) == 6


def test_make_demo_installs_only_the_cli_extra() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["make", "-n", "-B", "demo"], cwd=root, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "-e '.[cli]'" in done.stdout and ".[dev]" not in done.stdout


async def test_the_emulator_prints_a_line_to_paste() -> None:
    process = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        command("emulator", "--port", "0", "--accounts", "2", "--time-scale", SCALE),
        stdout=subprocess.PIPE, text=True, env=env_for(None),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = ""
        with anyio.fail_after(20):
            while not line.startswith("export "):
                line = await anyio.to_thread.run_sync(
                    process.stdout.readline, abandon_on_cancel=True
                )
                assert line, "the emulator ended without printing an export line"
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                ["bash", "-c", f"{line.strip()} && {ASYNCSDK} --json --time-scale {SCALE} status"],
                capture_output=True,
                text=True,
                timeout=30,
                env=env_for(None),
            )
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["accountId"]
        assert line.count("bye_") == 2 and "BABYSEA_BASE_URL=http://127.0.0.1:" in line
    finally:
        process.kill()
        process.communicate(timeout=10)


async def test_a_batch_whose_accounts_all_fail_says_so(emu: Emulator, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", {"prompt": "a kite"}, {"prompt": "a boat"})
    emu.revoke(emu.tokens[0])
    for output in ([], ["--json"]):
        done = await cli(emu, *output, "batch", str(jobs))
        assert done.code == 1, done.err
        assert "every account was taken out" in done.err and "Traceback" not in done.err
        assert "journal" not in done.err
