"""One CLI grammar: the same formats on every list and show, the same job options on every
submitting command, comma lists = repeated flags, documented commands, script-friendly exits."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from tests.conftest import add_tiny, run_json, run_mlxd
from tests.test_cli import COMMANDS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
LEAVES = [(p, c) for p, c in COMMANDS if not isinstance(c, click.Group)]


def _options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in getattr(p, "opts", [])}


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_subcommand_is_in_the_readme(path):
    assert f"mlxd {' '.join(path)}" in README, f"README.md does not show 'mlxd {' '.join(path)}'"


def test_every_list_and_show_has_the_same_formats():
    lists = shows = 0
    for path, cmd in LEAVES:
        kind = getattr(cmd.callback, "output_kind", None)
        tables = (("results",), ("sweep", "show"), ("finetune", "show"))  # shows of many rows
        if path[-1] == "list" or path in tables:
            assert kind == "list", f"mlxd {' '.join(path)} is a list without output_options()"
        elif path[-1] in ("show", "status"):
            assert kind == "show", f"mlxd {' '.join(path)} is a show without output_options"
        opts = _options(cmd)
        if kind == "list":
            lists += 1
            assert {"--json", "--csv", "--md", "--jsonl"} <= opts, path
        elif kind == "show":
            shows += 1
            assert "--json" in opts and "--csv" not in opts, path
    assert lists >= 5 and shows >= 4  # the walk found the commands at all


def test_every_submitting_command_takes_the_job_options():
    submitting = [p for p, c in LEAVES if "--wait" in _options(c) and p != ("jobs", "retry")]
    assert ("sweep", "run") in submitting and ("quantize",) in submitting
    for path in submitting:
        cmd = dict(LEAVES)[path]
        assert {"--wait", "--after", "--priority", "--timeout"} <= _options(cmd), path


def test_two_formats_at_once_are_refused():
    proc = run_mlxd("jobs", "list", "--json", "--csv")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Error: Cannot use --json and --csv together"


def test_comma_lists_and_repeated_flags_mean_the_same(tiny_model_dir):
    add_tiny(tiny_model_dir)
    run_mlxd("bench", "tiny", "-p", "16,32", "-b", "1", check=True)
    run_mlxd("bench", "tiny", "-p", "16", "-p", "32", "-b", "1", check=True)
    jobs = run_json("jobs", "list")
    assert jobs[0]["params"]["prompt_tokens"] == jobs[1]["params"]["prompt_tokens"] == [16, 32]
    run_mlxd("jobs", "cancel", str(jobs[0]["id"]), check=True)
    by_comma = run_json("jobs", "list", "--status", "queued,cancelled")
    by_repeat = run_json("jobs", "list", "--status", "queued", "--status", "cancelled")
    assert by_comma == by_repeat and len(by_comma) == 2
    bad = run_mlxd("jobs", "list", "--status", "queued,lost")
    assert bad.returncode == 2 and "'lost' is not one of" in bad.stderr


def test_machine_formats_carry_the_same_rows(tiny_model_dir):
    add_tiny(tiny_model_dir)
    for _ in range(3):
        run_mlxd("quantize", "tiny", "--bits", "4", "--name", f"q{_}", check=True)
    as_json = run_json("jobs", "list")
    lines = run_mlxd("jobs", "list", "--jsonl", check=True).stdout.splitlines()
    assert [json.loads(line) for line in lines] == as_json
    md = run_mlxd("jobs", "list", "--md", check=True).stdout.splitlines()
    assert md[0].startswith("| ID | KIND |") and len(md) == 2 + 3
    csv_lines = run_mlxd("jobs", "list", "--csv", check=True).stdout.splitlines()
    assert csv_lines[0].split(",")[:2] == ["id", "kind"] and len(csv_lines) == 4


def test_jobs_list_says_when_it_shows_only_the_newest(tiny_model_dir):
    add_tiny(tiny_model_dir)
    for i in range(3):
        run_mlxd("quantize", "tiny", "--bits", "4", "--name", f"q{i}", check=True)
    proc = run_mlxd("jobs", "list", "--limit", "2", "--json", check=True)
    assert [j["name"] for j in (x["params"] for x in json.loads(proc.stdout))] == ["q1", "q2"]
    assert proc.stderr.strip() == "Note: the newest 2 of 3 jobs (--limit 0: all)"
    assert run_mlxd("jobs", "list", "--limit", "0", check=True).stderr == ""


@pytest.mark.parametrize(
    "args,message",
    [
        (["jobs", "list", "--limit", "-1"], "-1 is not in the range x>=0"),
        (["results", "--limit", "-1"], "-1 is not in the range x>=0"),
        (["bench", "tiny", "--seed", "-1"], "-1 is not in the range"),
        (["bench", "tiny", "--priority", "99999999999"], "is not in the range"),
        (["quantize", "tiny", "--after", "0"], "0 is not in the range x>=1"),
        (["models", "synth", "x", "--seed", str(2**40)], "is not in the range"),
        (["quantize", "tiny", "--name", "x" * 101], "at most 100"),
    ],
)
def test_ranges_are_checked_the_same_everywhere(args, message, tiny_model_dir):
    add_tiny(tiny_model_dir)
    proc = run_mlxd(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr
    assert run_json("jobs", "list") == []


def test_exit_statuses_for_scripts(tiny_model_dir):
    status = run_mlxd("daemon", "status")
    assert status.returncode == 3 and "not running" in status.stdout
    add_tiny(tiny_model_dir)
    run_mlxd("quantize", "tiny", "--bits", "4", check=True)
    # The wait runs out before the job ends: its own status, not 1 (which means "failed").
    proc = run_mlxd("jobs", "wait", "1", "--wait-timeout", "0.3")
    assert proc.returncode == 124, proc.stderr
    assert proc.stderr.strip() == "Error: job 1 still queued after 0.3 s"


def test_old_option_spellings_work_with_a_note(tiny_model_dir):
    add_tiny(tiny_model_dir)
    proc = run_mlxd("quality", "tiny", "--max-tokens", "64", check=True)
    assert "Note: --max-tokens is now --text-tokens" in proc.stderr
    assert run_json("jobs", "list")[0]["params"]["max_tokens"] == 64
    stop = run_mlxd("daemon", "stop", "--timeout", "5")
    assert "Note: --timeout is now --stop-timeout" in stop.stderr
    assert stop.stderr.strip().endswith("Error: the daemon is not running")
