"""The `asyncsdk` command against the emulator, in a subprocess like a user runs it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from asyncsdk.emulator import Emulator

pytestmark = pytest.mark.anyio
SCALE = "0.02"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(accounts=2, time_scale=float(SCALE), processing_time=2.0) as emulator:
        yield emulator


async def cli(
    emu: Emulator, *args: str, keys: list[str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    env = dict(os.environ, BABYSEA_API_KEY=",".join(keys or emu.tokens[:1]))
    env.pop("BABYSEA_BASE_URL", None)
    command = [sys.executable, "-m", "asyncsdk.cli", "--base-url", emu.base_url,
               "--time-scale", SCALE, *args]  # fmt: skip
    with anyio.fail_after(60):
        done = await anyio.run_process(command, env=env, cwd=cwd, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_status_account_list(emu: Emulator) -> None:
    code, out, err = await cli(emu, "--json", "status")
    assert code == 0, err
    assert json.loads(out)["accountId"]
    code, out, _ = await cli(emu, "account")
    assert code == 0 and "credits: 1000" in out
    code, out, _ = await cli(emu, "--json", "list", "--all")
    assert code == 0 and json.loads(out) == []


async def test_generate_then_download(emu: Emulator, tmp_path: Path) -> None:
    code, out, err = await cli(
        emu, "--json", "generate", "google/nano-banana", "a red kite", "--output-number", "2",
        "--out", str(tmp_path / "a"),
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["status"] == "succeeded" and len(record["paths"]) == 2
    for path in record["paths"]:
        assert (await anyio.Path(path).read_bytes()).startswith(b"\x89PNG")
    code, out, _ = await cli(emu, "download", record["generationId"], "--out", str(tmp_path / "b"))
    assert code == 0 and len(out.split()) == 2
    code, out, _ = await cli(emu, "list")
    assert code == 0 and record["generationId"] in out


async def test_batch_jsonl_with_journal_and_rerun(emu: Emulator, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    lines = [json.dumps({"prompt": f"kite {i}", "id": f"kite-{i}"}) for i in range(6)]
    jobs.write_text("# six kites\n" + "\n".join(lines) + "\n\n")
    keys = tmp_path / "keys.txt"
    keys.write_text("\n".join(emu.tokens) + "\n")
    args = ["--keys-file", str(keys), "--json", "batch", str(jobs), "--journal",
            str(tmp_path / "j.sqlite"), "--out", str(tmp_path / "out")]  # fmt: skip
    code, out, err = await cli(emu, *args)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    results, summary = records[:-1], records[-1]["summary"]
    assert len(results) == 6 and all(r["ok"] for r in results)
    assert {r["account"] for r in results} == {"account 1", "account 2"}
    assert summary["succeeded"] == 6 and summary["credits"] == 12
    assert len(list((tmp_path / "out").glob("kite-*-1.png"))) == 6
    code, out, _ = await cli(emu, *args)
    again = [json.loads(line) for line in out.splitlines()][:-1]
    assert code == 0 and all(r["from_journal"] for r in again)
    assert sum(emu.stats.created.values()) == 6


async def test_batch_csv_and_failed_jobs_exit_1(emu: Emulator, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "id,prompt,aspect_ratio,output_number,seed\n"
        "a,a calm lake,16:9,1,42\n"
        "b,a nude statue,1:1,1,7\n"
    )
    code, out, err = await cli(emu, "--json", "batch", str(jobs))
    assert code == 1, err
    results = {r["id"]: r for r in map(json.loads, out.splitlines()[:-1])}
    assert results["a"]["ok"] and results["a"]["generation"]["aspectRatio"] == "16:9"
    assert results["b"]["error_code"] == "NSFW_CONTENT_DETECTED"


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
        ("bad.txt", "hello\n", "use a .jsonl or .csv file"),
    ],
)  # fmt: skip
async def test_malformed_jobs_files_name_line_and_field(
    emu: Emulator, tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    code, _, err = await cli(emu, "batch", str(path))
    assert code == 2
    assert message in err
    assert sum(emu.stats.created.values()) == 0  # nothing was submitted


async def test_usage_errors(emu: Emulator, tmp_path: Path) -> None:
    code, _, err = await cli(emu, "--keys-file", str(tmp_path / "none"), "status")
    assert code == 2 and "--keys-file" in err
    code, _, err = await cli(emu, "batch", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl" in err
    code, _, err = await cli(emu, "status", keys=["bye_" + "0" * 32])
    assert code == 1 and "AuthenticationError" in err and "bye_" not in err


async def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "asyncsdk", "demo", "--jobs", "6", "--scale", "0.02",
               "--out", str(tmp_path / "out")]  # fmt: skip
    with anyio.fail_after(60):
        done = await anyio.run_process(command, check=False)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "Compressed clock" in out and "summary" in out and "0 rate-limit errors" in out
    assert len(list((tmp_path / "out").glob("demo-*.png"))) == 6


async def test_emulator_command_serves() -> None:
    command = [sys.executable, "-m", "asyncsdk", "emulator", "--port", "0", "--accounts", "2"]
    async with await anyio.open_process(command) as process:
        assert process.stdout is not None
        with anyio.fail_after(20):
            first = (await process.stdout.receive()).decode()
        process.terminate()
    assert "/api/v1" in first and ":0/" not in first


async def test_a_batch_whose_accounts_all_fail_says_so(emu: Emulator, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "a kite"}\n{"prompt": "a boat"}\n')
    emu.revoke(emu.tokens[0])
    for output in ([], ["--json"]):
        code, _, err = await cli(emu, *output, "batch", str(jobs))
        assert code == 1, err
        assert "every account was taken out" in err and "Traceback" not in err
