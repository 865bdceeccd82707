"""The CLI contract: help everywhere, --json that parses, one-line errors with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mlxd.cli.main import cli
from tests.conftest import add_tiny, run_json, run_mlxd


def all_commands(group: click.Group, ctx: click.Context, prefix=()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, ctx, (*prefix, name))


COMMANDS = list(all_commands(cli, click.Context(cli)))


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help(path, cmd):
    assert cmd.help and cmd.help.strip(), f"mlxd {' '.join(path)} has no help"
    first = cmd.help.strip().splitlines()[0]
    assert len(first) <= 80, f"first help line of {path} is too long for a listing"
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert first.split()[0] in result.output


def test_help_does_not_import_mlx_or_the_catalog():
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom mlxd.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\nassert r.exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'sqlmodel')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lists_and_shows_give_json_and_csv(tiny_model_dir):
    add_tiny(tiny_model_dir)
    models = run_json("models", "list")
    assert models[0]["name"] == "tiny" and models[0]["architecture"] == "llama"
    assert run_json("models", "show", "tiny")["num_parameters"] == models[0]["num_parameters"]
    run_mlxd("quantize", "tiny", "--bits", "4", check=True)  # queued, no daemon
    jobs = run_json("jobs", "list")
    assert jobs[0]["kind"] == "quantize" and jobs[0]["status"] == "queued"
    assert run_json("jobs", "show", str(jobs[0]["id"]))["params"]["bits"] == 4
    assert run_json("results") == []
    status = run_mlxd("daemon", "status", "--json")
    assert status.returncode == 3 and json.loads(status.stdout)["running"] is False
    csv_out = run_mlxd("models", "list", "--csv", check=True).stdout.splitlines()
    assert csv_out[0].startswith("id,name,path") and csv_out[1].startswith("1,tiny,")
    assert run_mlxd("jobs", "list", "--csv", check=True).stdout.startswith("id,kind,")


@pytest.mark.parametrize(
    "args,message",
    [
        (["quantize", "tiny", "--bits", "7"], "'7' is not one of"),
        (["quantize", "nosuch"], "model 'nosuch' not found; see 'mlxd models list'"),
        (["bench", "tiny", "-p", "abc"], "-p must be a comma-separated list"),
        (["bench", "tiny", "-p", "0"], "prompt tokens must be positive"),
        (["convert", "tiny", "--name", "bad name!"], "invalid model name 'bad name!'"),
        (
            ["quantize", "tiny", "--bits", "4", "--name", "tiny"],
            "a model named 'tiny' already exists",
        ),
        (["models", "add", "/nonexistent/folder"], "is not a folder"),
        (["models", "show", "nosuch"], "model 'nosuch' not found"),
        (["jobs", "show", "999"], "job 999 not found"),
        (["jobs", "list", "--status", "weird"], "'weird' is not one of"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
        (["bench", "tiny", "--after", "999"], "job 999 not found"),
        (["jobs", "list", "--kind", "bogus"], "'bogus' is not one of 'synth', 'convert'"),
        (
            ["generate", "tiny", "--prompt", "x", "--max-tokens", "100000"],
            "--max-tokens is 100,000 tokens; model 'tiny' has a context of 2,048",
        ),
    ],
)
def test_bad_arguments_give_one_error_line_and_exit_2(args, message, tiny_model_dir):
    add_tiny(tiny_model_dir)
    proc = run_mlxd(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_models_add_refuses_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notamodel").mkdir()
    proc = run_mlxd("models", "add", str(tmp_path / "notamodel"))
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("is not a model folder (no config.json)")


def test_wait_without_a_daemon_is_refused_and_nothing_is_queued(tiny_model_dir):
    add_tiny(tiny_model_dir)
    proc = run_mlxd("convert", "tiny", "--wait")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: the daemon is not running")
    assert run_json("jobs", "list") == []


def test_cancel_queued_job_and_its_dependents(tiny_model_dir):
    add_tiny(tiny_model_dir)
    run_mlxd("convert", "tiny", check=True)
    run_mlxd("bench", "tiny-mlx", "--after", "1", check=True)
    out = run_mlxd("jobs", "cancel", "1", check=True).stdout
    assert "Cancelled job 1" in out and "[2]" in out
    jobs = {j["id"]: j for j in run_json("jobs", "list")}
    assert jobs[1]["status"] == "cancelled"
    assert jobs[2]["status"] == "failed" and "prerequisite job 1 cancelled" in jobs[2]["error"]
    again = run_mlxd("jobs", "cancel", "1")
    assert again.returncode == 1 and "already cancelled" in again.stderr
    retried = run_mlxd("jobs", "retry", "1", check=True).stdout
    assert "Queued job 3: retry of job 1 (convert tiny -> tiny-mlx)" in retried


def test_models_rm_keeps_files_it_did_not_make(tiny_model_dir):
    add_tiny(tiny_model_dir)
    proc = run_mlxd("models", "rm", "tiny", "--files")
    assert proc.returncode == 1 and "was not made by mlxd" in proc.stderr
    run_mlxd("models", "rm", "tiny", check=True)
    assert run_json("models", "list") == []
    assert (tiny_model_dir / "config.json").exists()


def test_synth_makes_a_catalog_model_without_a_daemon(mlxd_home):
    out = run_mlxd("models", "synth", "mini", "--arch", "qwen2", check=True).stdout
    assert "Made model 1: mini (qwen2" in out
    m = run_json("models", "show", "mini")
    assert m["synthetic"] and m["source"] == "synth" and m["format"] == "hf"
    assert m["details"]["tokenizer"]["tokens"] == 1024  # recorded by the job that made it
    assert (mlxd_home / "models" / "mini" / "tokenizer.json").exists()
    text = run_mlxd("models", "show", "mini", check=True).stdout
    assert "random weights" in text
    dup = run_mlxd("models", "synth", "mini")
    assert dup.returncode == 2 and "already exists" in dup.stderr


def test_generate_streams_text_and_is_deterministic_at_temp_0(tiny_model_dir):
    add_tiny(tiny_model_dir)
    first = run_mlxd("generate", "tiny", "--prompt", "Hello there", "--max-tokens", "6", check=True)
    second = run_mlxd(
        "generate", "tiny", "--prompt", "Hello there", "--max-tokens", "6", check=True
    )
    assert first.stdout.strip() and first.stdout == second.stdout
    assert "6 generated" in first.stderr and "tok/s" in first.stderr
    raw = run_mlxd(
        "generate",
        "tiny",
        "--prompt",
        "Hello",
        "--raw",
        "--max-tokens",
        "3",
        "--no-stats",
        check=True,
    )
    assert raw.stderr == ""
    bad = run_mlxd("generate", "tiny", "--prompt", "x", "--max-tokens", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: ")


def test_every_command_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for path, _ in COMMANDS:
        if len(path) == 1:
            assert f"mlxd {path[0]}" in readme, f"README.md does not show 'mlxd {path[0]}'"


@pytest.mark.parametrize(
    "args,message",
    [
        (["convert", "tiny", "--timeout", "-1"], "-1.0 is not in the range"),
        (["convert", "tiny", "--timeout", "nan"], "--timeout must be a number of seconds"),
        (["daemon", "stop", "--timeout", "-1"], "-1.0 is not in the range"),
        (["results", "--since", "99999999d"], "further back than any date"),
    ],
)
def test_out_of_range_values_are_usage_errors(args, message, tiny_model_dir):
    add_tiny(tiny_model_dir)
    proc = run_mlxd(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr


def test_a_group_alone_prints_its_help():
    proc = run_mlxd("jobs")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "Commands:" in proc.stdout and "cancel" in proc.stdout


def test_a_model_named_by_id_gives_outputs_its_name(tiny_model_dir):
    add_tiny(tiny_model_dir)
    out = run_mlxd("quantize", "1", "--bits", "4", check=True).stdout
    assert "quantize tiny -> tiny-4bit-g64" in out


def test_jobs_after_a_failed_job_are_refused_and_retry_keeps_the_prerequisite(tiny_model_dir):
    add_tiny(tiny_model_dir)
    run_mlxd("convert", "tiny", check=True)  # job 1
    run_mlxd("bench", "tiny-mlx", "--after", "1", check=True)  # job 2
    run_mlxd("jobs", "cancel", "1", check=True)  # fails job 2 too
    proc = run_mlxd("bench", "tiny", "--after", "1")
    assert proc.returncode == 2 and "job 1 is cancelled; retry it first" in proc.stderr
    run_mlxd("jobs", "retry", "1", check=True)  # job 3
    assert run_mlxd("jobs", "retry", "2").returncode == 2  # still waits on cancelled job 1
    run_mlxd("jobs", "retry", "2", "--after", "3", check=True)  # job 4
    assert run_json("jobs", "show", "4")["after_job_id"] == 3


def test_removing_a_model_with_quality_scores_and_a_sweep(tiny_model_dir):
    from mlxd.catalog.models import QualityRun, Sweep
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    add_tiny(tiny_model_dir)
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "other", check=True)
    store = Store(paths())
    with store.write() as s:
        s.add(
            QualityRun(
                model_id=1,
                base_model_id=2,
                text_name="t",
                text_sha256="x",
                tokens=10,
                perplexity=5.0,
            )
        )
        s.add(
            QualityRun(
                model_id=2,
                base_model_id=1,
                text_name="t",
                text_sha256="x",
                tokens=10,
                perplexity=6.0,
            )
        )
        s.add(Sweep(base_model_id=1))
    refused = run_mlxd("models", "rm", "tiny")
    assert refused.returncode == 1
    assert "model 'tiny' has 2 quality runs, 1 sweep; 'mlxd models rm tiny --force'" in (
        refused.stderr
    )
    run_mlxd("models", "rm", "tiny", "--force", check=True)
    with store.read() as s:
        from sqlmodel import select

        runs = list(s.exec(select(QualityRun)))
        assert [(r.model_id, r.base_model_id) for r in runs] == [(2, None)]
        assert list(s.exec(select(Sweep))) == []
    store.close()


def test_generate_on_a_deleted_folder_says_so(tmp_path, tiny_model_dir):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    run_mlxd("models", "add", str(copy), "--name", "gone", check=True)
    shutil.rmtree(copy)
    proc = run_mlxd("generate", "gone", "--prompt", "hi")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: model 'gone' has no folder at {copy} (was it deleted?)"


def test_compare_and_quality_need_two_different_models(tiny_model_dir):
    add_tiny(tiny_model_dir)
    proc = run_mlxd("quality", "tiny", "--base", "tiny")
    assert proc.returncode == 2 and "is the model itself" in proc.stderr
    proc = run_mlxd("results", "--compare", "tiny", "tiny")
    assert proc.returncode == 2 and "two different models" in proc.stderr


def test_quality_refuses_a_text_that_is_not_utf8(tmp_path, tiny_model_dir):
    add_tiny(tiny_model_dir)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\xe9 au lait, s'il vous pla\xeet.".encode("latin-1"))
    proc = run_mlxd("quality", "tiny", "--text", str(latin1))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"Error: text file '{latin1}' is not UTF-8 text"


def test_an_empty_list_names_the_filters_that_matched_nothing(tiny_model_dir):
    add_tiny(tiny_model_dir)
    for args, line in (
        (["results", "--since", "2030-01-01"], "No benchmark results since 2030-01-01 00:00:00."),
        (["results", "--model", "tiny"], "No benchmark results of model 'tiny'."),
        (["results"], "No benchmark results yet. Queue one with 'mlxd bench REF'."),
        (
            ["jobs", "list", "--kind", "bench", "--status", "failed,cancelled"],
            "No jobs of kind bench with status failed or cancelled.",
        ),
        (["quality", "list", "--model", "tiny"], "No quality runs of model 'tiny'."),
        (["adapters", "list", "--model", "tiny"], "No adapters of base model 'tiny'."),
    ):
        proc = run_mlxd(*args, check=True)
        assert proc.stdout == line + "\n", (args, proc.stdout)


def test_a_broken_weights_file_of_a_registered_model_is_one_line_naming_it(
    tmp_path, tiny_model_dir
):
    import shutil

    copy = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, copy)
    run_mlxd("models", "add", str(copy), "--name", "broken", check=True)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4096])  # an interrupted copy
    for args in (["generate", "broken", "--prompt", "hi"], ["chat", "broken", "--once"]):
        proc = run_mlxd(*args)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith(
            f"Error: model 'broken' cannot be loaded: {weights} is truncated: tensor "
        ), proc.stderr
        assert proc.stderr.count("\n") == 1 and "internal error" not in proc.stderr


def test_synth_like_a_malformed_config_names_the_file_and_queues_nothing(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama", "hidden_size": 64,}')
    proc = run_mlxd("models", "synth", "s", "--like", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"Error: --like {bad} is not valid JSON (")
    assert proc.stderr.endswith(" at line 1, column 43)\n")
    bad.write_text('{"model_type": "llama", "hidden_size": 64}')
    proc = run_mlxd("models", "synth", "s", "--like", str(bad))
    assert proc.returncode == 2 and "gives no positive whole num_hidden_layers" in proc.stderr
    assert run_json("jobs", "list") == [] and run_json("models", "list") == []


def test_one_exit_status_per_kind_of_error_whichever_command_says_it(tmp_path, tiny_model_dir):
    """An adapter named with another base is a usage error (2) in every command that takes
    one (as 'fuse' said it, while 'bench' said 1); a registered prompt cache whose file is
    gone is a refusal (1) in every command (a missing model folder is one too)."""
    import shutil

    from mlxd.catalog.models import Adapter, PromptCache
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # other weights, the same shape
    weights.write_bytes(bytes(data))
    add_tiny(tiny_model_dir)
    run_mlxd("models", "add", str(other), "--name", "other", check=True)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"hello"\n')
    store = Store(paths())
    other_id = store.resolve_model("other").id
    with store.write() as s:
        s.add(
            Adapter(
                name="ad",
                path=str(tmp_path / "ad"),
                fine_tune_type="lora",
                status="ready",
                base_model_id=other_id,
                base_model_name="other",
                data_path=str(tmp_path),
                iterations=10,
                target_iterations=10,
            )
        )
        s.add(
            PromptCache(
                name="gone",
                path=str(tmp_path / "gone.safetensors"),
                model_id=other_id,
                model_fingerprint="x",
                num_tokens=4,
                text_sha256="x",
            )
        )
    store.close()

    def batch(model: str, cache: str) -> list[str]:
        out = str(tmp_path / f"{model}-{cache}.out.jsonl")
        return ["batch", model, "--prompts", str(prompts), "-o", out, "--prompt-cache", cache]

    adapter = "Error: adapter 'ad' was trained on 'other', not on 'tiny'; apply it to 'other'\n"
    gone = f"Error: prompt cache 'gone' has no file at {tmp_path / 'gone.safetensors'}\n"
    cases = [
        *[
            (args, 2, adapter)
            for args in (
                ["bench", "tiny", "--adapter", "ad"],
                ["quality", "tiny", "--adapter", "ad"],
                ["generate", "tiny", "--prompt", "x", "--adapter", "ad"],
                ["chat", "tiny", "--adapter", "ad"],
                ["fuse", "tiny", "--adapter", "ad"],
            )
        ],
        *[
            (args, 1, gone)
            for args in (
                ["bench", "other", "--prompt-cache", "gone"],
                ["generate", "other", "--prompt", "x", "--prompt-cache", "gone"],
                ["chat", "other", "--prompt-cache", "gone"],
                batch("other", "gone"),
            )
        ],
    ]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda case: run_mlxd(*case[0]), cases))
    wrong = [
        f"mlxd {' '.join(args)} -> {proc.returncode}: {proc.stderr.strip()}"
        for (args, code, message), proc in zip(cases, procs, strict=True)
        if proc.returncode != code or not proc.stderr.startswith(message)
    ]
    assert not wrong, "\n".join(wrong)
    assert run_json("jobs", "list") == []


def test_a_draft_or_a_base_with_another_tokenizer_is_refused_naming_both(tmp_path, tiny_model_dir):
    """Token ids must mean the same text in both models: the same vocabulary size is not
    enough (here: the same 1,024 tokens, two merges in another order). A model whose folder
    is on another host is judged by the tokenizer the catalog recorded for it."""
    import shutil

    from mlxd.catalog.models import Model
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    om = tmp_path / "other-merges"
    shutil.copytree(tiny_model_dir, om)
    tok = json.loads((om / "tokenizer.json").read_text())
    merges = tok["model"]["merges"]
    merges[-1], merges[-2] = merges[-2], merges[-1]
    (om / "tokenizer.json").write_text(json.dumps(tok))
    add_tiny(tiny_model_dir)
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "twin", check=True)
    run_mlxd("models", "add", str(om), "--name", "om", check=True)
    recorded = run_json("models", "show", "om")["details"]["tokenizer"]
    assert recorded["tokens"] == 1024
    shown = run_mlxd("models", "show", "om", check=True).stdout
    assert f"tokenizer     1,024 tokens, {recorded['sha256'][:12]}\n" in shown
    store = Store(paths())
    store.add_model(  # on another machine: no folder here, only what the catalog recorded
        Model(
            name="far",
            path="/elsewhere/far",
            format="hf",
            source="local",
            host="macb",
            details={"tokenizer": recorded},
        )
    )
    store.close()
    both = "Error: 'tiny' and '{}' have different tokenizers ('tiny': 1,024 tokens, "
    draft = "a draft model must share the model's tokenizer"
    for args, other, why in (
        (["bench", "tiny", "--draft-model", "om"], "om", draft),
        (["generate", "tiny", "--prompt", "x", "--draft-model", "om"], "om", draft),
        (["quality", "tiny", "--base", "om"], "om", "quality compares a model with a base"),
        (["bench", "tiny", "--draft-model", "far"], "far", draft),
        (["quality", "tiny", "--base", "far"], "far", "quality compares a model with a base"),
    ):
        proc = run_mlxd(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(both.format(other)), proc.stderr
        assert f"'{other}': 1,024 tokens, {recorded['sha256'][:12]}); {why}" in proc.stderr
    assert run_json("jobs", "list") == []
    run_mlxd("bench", "tiny", "--draft-model", "twin", check=True)  # one tokenizer: queued


def test_a_draft_whose_tokenizer_changed_after_submit_fails_the_job_naming_both(
    tmp_path, tiny_model_dir
):
    import shutil

    from mlxd.cli.submit import foreground_runner

    twin = tmp_path / "twin"
    shutil.copytree(tiny_model_dir, twin)
    add_tiny(tiny_model_dir)
    run_mlxd("models", "add", str(twin), "--name", "twin", check=True)
    run_mlxd("bench", "tiny", "--draft-model", "twin", "-p", "8", "-g", "4", check=True)
    tok = json.loads((twin / "tokenizer.json").read_text())
    merges = tok["model"]["merges"]
    merges[0], merges[1] = merges[1], merges[0]
    (twin / "tokenizer.json").write_text(json.dumps(tok))
    [job] = run_json("jobs", "list")
    outcome = foreground_runner().handle(job["id"])  # prepare refuses before any child
    assert outcome is not None and outcome.status == "failed"
    assert outcome.error.startswith("'tiny' and 'twin' have different tokenizers ('tiny': ")
    assert run_json("results") == []
