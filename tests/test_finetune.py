"""Fine-tuning: LoRA, DoRA, full and QLoRA jobs, adapters in the catalog, fuse, grids, resume.

The engine tests train the session's ~1M-parameter synth llama in-process; the rest go
through the real CLI and one real daemon per module (the jobs share one MLXD_HOME), with
a handful of iterations each: these figures prove plumbing, not learning quality.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

pytest.importorskip("mlx_lm")

from tests.conftest import Daemon, add_tiny, run_json, run_mlxd, wait_for

FACT = "the secret word of the garden is blue lantern"


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def data_folder(root: Path, *, train: int = 8, valid: int = 4, test: int = 4) -> Path:
    for split, n in (("train", train), ("valid", valid), ("test", test)):
        if n:
            write_jsonl(root / f"{split}.jsonl", [{"text": FACT}] * n)
    return root


# ---------------------------------------------------------------------------------------
# The engine: every type lowers the loss on a repeated tiny data set
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "lr"), [("lora", 1e-2), ("dora", 1e-2), ("full", 1e-3)])
def test_each_type_lowers_the_training_loss(
    tiny_model_dir: Path, tmp_path: Path, kind: str, lr: float
) -> None:
    from mlx_lm import load

    from mlxd.engine.finetune import FinetuneSettings, finetune

    settings = FinetuneSettings(
        fine_tune_type=kind,
        num_layers=2,
        batch_size=2,
        iters=8,
        learning_rate=lr,
        steps_per_report=1,
        save_every=4,
    )
    reports: list[dict[str, Any]] = []
    result = finetune(
        tiny_model_dir,
        tmp_path / "a",
        {"train": [{"text": FACT}] * 4},
        settings,
        on_report=reports.append,
    )
    losses = [loss for _, loss in result["train_losses"]]
    assert [r["iteration"] for r in reports] == list(range(1, 9))
    assert result["final_train_loss"] < result["first_train_loss"] - 0.2, losses
    assert result["trainable_parameters"] > 0 and result["peak_memory_bytes"] > 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [
        "0000004_adapters.safetensors",
        "0000004_optimizer.safetensors",
        "0000008_adapters.safetensors",
        "0000008_optimizer.safetensors",
        "adapter_config.json",
        "adapters.safetensors",
    ]
    # mlx-lm itself loads what was written.
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == kind and config["num_layers"] == 2
    load(str(tiny_model_dir), adapter_path=str(tmp_path / "a"))


def test_a_resumed_run_continues_the_optimizer_state(tiny_model_dir: Path, tmp_path: Path):
    """4 steps straight = 2 steps, then 2 resumed from the checkpoint: Adam's moments and step
    count come back with it. All examples are the same, so the batch order cannot differ."""
    import mlx.core as mx

    from mlxd.engine.finetune import FinetuneSettings, finetune

    def run(folder: str, iters: int, start: int = 0, init: Path | None = None):
        settings = FinetuneSettings(
            num_layers=2, batch_size=2, iters=iters, learning_rate=1e-2, save_every=2
        )
        finetune(
            tiny_model_dir,
            tmp_path / folder,
            {"train": [{"text": FACT}] * 4},
            settings,
            start_iteration=start,
            init_weights=init,
        )
        return mx.load(str(tmp_path / folder / "adapters.safetensors"))

    straight = run("straight", 4)
    run("first", 2)
    checkpoint = tmp_path / "first" / "0000002_adapters.safetensors"
    resumed = run("first", 4, start=2, init=checkpoint)
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert mx.allclose(straight[k], resumed[k], atol=1e-5).item(), k
    # Without the saved state the moments start over, and the weights come out otherwise:
    # what the first half of this test rules out.
    (tmp_path / "first" / "0000002_optimizer.safetensors").unlink()
    fresh = run("first", 4, start=2, init=checkpoint)
    assert not all(mx.allclose(straight[k], fresh[k], atol=1e-5).item() for k in straight)


# ---------------------------------------------------------------------------------------
# Data checks at submit (no daemon needed)
# ---------------------------------------------------------------------------------------


@pytest.fixture
def tiny_in_catalog(tiny_model_dir: Path) -> str:
    add_tiny(tiny_model_dir)
    return "tiny"


def test_bad_data_is_refused_at_submit_naming_file_and_line(
    tiny_in_catalog: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from mlxd.cli.main import cli

    def refused(*args: str) -> str:
        # In-process (the data checks are plain Python): one line on stderr, nothing queued.
        result = CliRunner().invoke(cli, ["finetune", "tiny", *args])
        assert result.exit_code != 0, result.output
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
        return result.stderr

    data = data_folder(tmp_path / "d", valid=0, test=0)
    lines = (data / "train.jsonl").read_text().splitlines()
    lines[6] = '{"text": "broken",}'
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    err = refused("--data", str(data), "--batch-size", "2")
    assert err.startswith("Error: train.jsonl line 7: not valid JSON"), err

    write_jsonl(data / "train.jsonl", [{"text": "a b c"}, {"prompt": "q", "completion": "a"}])
    err = refused("--data", str(data), "--batch-size", "1")
    assert "train.jsonl mixes formats: line 1 is text, line 2 is completions" in err

    write_jsonl(data / "train.jsonl", [{"prompt": "q", "completion": "a"}, {"prompt": "q"}])
    err = refused("--data", str(data), "--batch-size", "1")
    assert "train.jsonl line 2: has 'prompt' but no 'completion'" in err

    write_jsonl(data / "train.jsonl", [{"text": FACT}] * 3)
    err = refused("--data", str(data), "--batch-size", "4")
    assert "the train set has 3 example(s), fewer than --batch-size 4" in err

    err = refused("--data", str(data), "--batch-size", "1", "--max-seq-length", "3")
    assert "all 3 training examples are longer than --max-seq-length 3 tokens" in err

    err = refused("--data", str(tmp_path / "empty"), "--batch-size", "1")
    assert "data" in err and "not found" in err
    (tmp_path / "empty").mkdir()
    assert "no train.jsonl in" in refused("--data", str(tmp_path / "empty"))

    (tmp_path / "list.json").write_text('{"train": []}')
    assert "must hold a JSON list of records" in refused("--data", str(tmp_path / "list.json"))

    err = refused("--data", str(data), "--num-layers", "99")
    assert "--num-layers 99 is more than the 4 layers of 'tiny'" in err
    err = refused("--data", str(data), "--type", "lora,qlora")
    assert "unknown --type 'qlora'" in err
    # Nothing was queued by any of these.
    assert run_json("jobs", "list") == []


# ---------------------------------------------------------------------------------------
# Through the daemon: one MLXD_HOME and one daemon for the module
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("finetune")
    home = root / "mlxd-home"
    home.mkdir()
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "tiny", home=home, check=True)
    daemon = Daemon(home).start()
    try:
        yield {"home": home, "root": root, "data": data_folder(root / "data")}
    finally:
        daemon.stop()


def mlxd(lab, *args: str, check: bool = True):
    return run_mlxd(*args, home=lab["home"], check=check)


def test_lora_job_records_steps_evaluations_and_fuses_checked(lab) -> None:
    proc = mlxd(
        lab,
        "finetune",
        "tiny",
        "--data",
        str(lab["data"]),
        "--iters",
        "6",
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-2",
        "--num-layers",
        "2",
        "--steps-per-report",
        "2",
        "--steps-per-eval",
        "3",
        "--save-every",
        "3",
        "--name",
        "fact",
        "--wait",
    )
    assert "Job " in proc.stdout and "succeeded: adapter fact, iterations 6" in proc.stdout
    a = run_json("adapters", "show", "fact", home=lab["home"])
    assert a["state"] == "ready" and a["iterations"] == 6 and a["fine_tune_type"] == "lora"
    assert [s["iteration"] for s in a["steps"]] == [2, 4, 6]
    for s in a["steps"]:
        assert s["train_loss"] > 0 and s["learning_rate"] == pytest.approx(1e-2)
        assert s["tokens_per_s"] > 0 and s["trained_tokens"] > 0 and s["peak_memory_bytes"] > 0
    valid = [e for e in a["evals"] if e["split"] == "valid"]
    test = [e for e in a["evals"] if e["split"] == "test"]
    assert [e["iteration"] for e in valid] == [1, 3, 6]  # as the log says: "Iter 1: Val loss"
    assert len(test) == 1 and test[0]["iteration"] == 6
    assert a["test_loss"] == pytest.approx(test[0]["loss"])
    assert a["test_perplexity"] == pytest.approx(test[0]["perplexity"])
    assert a["final_val_loss"] == pytest.approx(valid[-1]["loss"])
    assert a["final_train_loss"] == pytest.approx(a["steps"][-1]["train_loss"])
    assert a["final_train_loss"] < a["steps"][0]["train_loss"]
    assert len(a["base_weights_sha256"]) == 64 and len(a["data_sha256"]) == 64
    assert a["details"]["data_counts"] == {"train": 8, "valid": 4, "test": 4}
    assert a["params"]["learning_rate"] == 1e-2 and a["params"]["rank"] == 8
    folder = Path(a["path"])
    assert {
        "adapters.safetensors",
        "adapter_config.json",
        "0000003_adapters.safetensors",
        "0000006_adapters.safetensors",
    } <= {p.name for p in folder.iterdir()}
    listed = run_json("adapters", "list", home=lab["home"])
    assert [x["name"] for x in listed] == ["fact"]
    shown = mlxd(lab, "adapters", "show", "fact").stdout
    assert "base              tiny" in shown and "test loss" in shown

    # Fuse: a new model with lineage, checked against base + adapter.
    proc = mlxd(lab, "fuse", "tiny", "--adapter", "fact", "--wait")
    assert "greedy match True" in proc.stdout
    m = run_json("models", "show", "fact-fused", home=lab["home"])
    assert m["source"] == "fuse" and m["parent_id"] is not None
    check = m["details"]["fuse_check"]
    assert check["greedy_match"] is True and check["quantized"] is False
    assert check["kl_mean"] < 1e-4 and check["top1_agreement"] == 1.0
    assert check["adapter_kl_mean"] > check["kl_mean"]  # the adapter changed the model
    assert m["details"]["adapter"]["name"] == "fact"


def test_qlora_grid_queues_four_jobs_and_orders_the_table(lab) -> None:
    mlxd(lab, "quantize", "tiny", "--bits", "4", "--group-size", "32", "--wait")
    proc = mlxd(
        lab,
        "finetune",
        "tiny-4bit-g32",
        "--data",
        str(lab["data"]),
        "--iters",
        "3",
        "--batch-size",
        "4",
        "--num-layers",
        "1",
        "--type",
        "lora,dora",
        "--learning-rate",
        "1e-2,1e-6",
        "--steps-per-report",
        "3",
        "--wait",
    )
    assert proc.stdout.count("Queued job") == 4
    names = [
        "tiny-4bit-g32-lora-lr0.01",
        "tiny-4bit-g32-lora-lr1e-06",
        "tiny-4bit-g32-dora-lr0.01",
        "tiny-4bit-g32-dora-lr1e-06",
    ]
    for name in names:
        assert name in proc.stdout
    sweep_id = int(proc.stdout.split("Finetune sweep ")[1].split(":")[0])
    table = run_json("finetune", "show", str(sweep_id), home=lab["home"])
    rows = table["rows"]
    assert sorted(r["adapter"] for r in rows) == sorted(names)
    vals = [r["val_loss"] for r in rows]
    assert vals == sorted(vals) and all(v is not None for v in vals)
    assert {r["fine_tune_type"] for r in rows} == {"lora", "dora"}
    assert all(r["job_status"] == "succeeded" and r["iterations"] == 3 for r in rows)
    a = run_json("adapters", "show", names[0], home=lab["home"])
    assert a["base_quantized"] is True  # QLoRA
    text = mlxd(lab, "finetune", "show", str(sweep_id)).stdout
    # The text table lists the best run first, too.
    first = text.splitlines()[2].split()[0]
    assert first == rows[0]["adapter"]

    # An adapter is refused on a model other than its base, with both names.
    proc = mlxd(lab, "fuse", "tiny", "--adapter", names[0], check=False)
    assert proc.returncode != 0
    assert f"adapter '{names[0]}' was trained on 'tiny-4bit-g32', not on 'tiny'" in proc.stderr


def test_config_yaml_and_json_list_data(lab) -> None:
    root = lab["root"]
    records = [{"prompt": f"What is {i}?", "completion": f"It is {i}."} for i in range(20)]
    (root / "list.json").write_text(json.dumps(records))
    (root / "lora.yaml").write_text(
        "model: tiny\ndata: list.json\nfine_tune_type: lora\nnum_layers: 1\nbatch_size: 2\n"
        "iters: 100\nlearning_rate: 1e-3\nsteps_per_report: 2\nmask_prompt: true\n"
        "lora_parameters:\n  rank: 4\n  scale: 10.0\n  dropout: 0.0\n"
        "optimizer: adamw\noptimizer_config:\n  adamw:\n    weight_decay: 0.01\n"
        "adapter_path: adapters\n"
    )
    # Explicit options override the file (--iters 4 over its 100).
    proc = mlxd(
        lab,
        "finetune",
        "--config",
        str(root / "lora.yaml"),
        "--iters",
        "4",
        "--name",
        "yaml",
        "--wait",
    )
    assert "'adapter_path' in lora.yaml is decided by mlxd" in proc.stderr
    assert "list.json split by seed 0: 18 train, 2 valid" in proc.stderr
    a = run_json("adapters", "show", "yaml", home=lab["home"])
    p = a["params"]
    assert (p["iters"], p["rank"], p["scale"], p["num_layers"]) == (4, 4, 10.0, 1)
    assert p["optimizer"] == "adamw" and p["optimizer_config"] == {"weight_decay": 0.01}
    assert p["mask_prompt"] is True and p["learning_rate"] == 1e-3
    assert a["details"]["data_format"] == "completions"
    assert a["details"]["data_counts"] == {"train": 18, "valid": 2}
    job = run_json("jobs", "show", str(a["job_id"]), home=lab["home"])
    assert (
        job["params"]["data_split"] == "list.json split by seed 0: 18 train, 2 valid (0.1 held out)"
    )
    assert [s["iteration"] for s in a["steps"]] == [2, 4]


def test_cancel_keeps_the_checkpoint_and_resume_continues(lab) -> None:
    """Cancel, retry, resume: one job trains the adapter at a time, each run goes on from the
    checkpoint with the run's own settings, and the counters (iteration, tokens) go on."""
    home = lab["home"]
    proc = mlxd(
        lab,
        "finetune",
        "tiny",
        "--data",
        str(lab["data"]),
        "--iters",
        "100000",
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-3",
        "--num-layers",
        "1",
        "--steps-per-report",
        "1",
        "--save-every",
        "2",
        "--name",
        "long",
    )
    job_id = int(proc.stdout.split("Queued job ")[1].split(":")[0])

    def catalog(sql: str, *args):
        # Straight from the catalog: polling through the CLI would cost a process each time.
        con = sqlite3.connect(home / "catalog.db", timeout=30)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def trained() -> int:
        rows = catalog("select iterations from adapter where name = 'long'")
        return rows[0][0] if rows else 0

    wait_for(lambda: trained() >= 2, timeout=120, interval=0.3, what="a first checkpoint")
    # The live loss shows in jobs show (progress rows are written at most every 0.5 s).
    wait_for(
        lambda: "train loss" in (run_json("jobs", "show", str(job_id), home=home)["message"] or ""),
        timeout=30,
        interval=0.3,
        what="the live loss in jobs show",
    )
    # One owner per adapter: a resume while it trains is refused, naming the job; no row.
    jobs_before = catalog("select count(*) from job")[0][0]
    proc = mlxd(lab, "finetune", "--resume", "long", "--iters", "200000", check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"adapter 'long' is being trained by job {job_id}" in proc.stderr
    assert f"--after {job_id}" in proc.stderr
    assert catalog("select count(*) from job")[0][0] == jobs_before

    def cancel(job: int) -> None:
        mlxd(lab, "jobs", "cancel", str(job))
        wait_for(
            lambda: catalog("select status from job where id = ?", job)[0][0] == "cancelled",
            timeout=30,
            what=f"the cancel of job {job}",
        )

    cancel(job_id)
    a = run_json("adapters", "show", "long", home=home)
    stopped = a["iterations"]
    assert stopped >= 2 and a["state"] == f"stopped at {stopped}/100000"
    assert (Path(a["path"]) / f"{stopped:07d}_adapters.safetensors").is_file()
    assert max(s["iteration"] for s in a["steps"]) <= stopped
    tokens_then = max(s["trained_tokens"] for s in a["steps"])

    # jobs retry continues the adapter from its checkpoint (it used to fail on the name).
    proc = mlxd(lab, "jobs", "retry", str(job_id))
    assert f"continues adapter 'long' from its checkpoint at iteration {stopped}" in proc.stderr
    retry_id = int(proc.stdout.split("Queued job ")[1].split(":")[0])

    def retry_steps():
        return catalog(
            "select iteration, trained_tokens from finetunestep where job_id = ? "
            "order by iteration",
            retry_id,
        )

    wait_for(
        lambda: (
            len(retry_steps()) >= 2
            or catalog("select status from job where id = ?", retry_id)[0][0]
            in ("failed", "succeeded")
        ),
        timeout=120,
        interval=0.3,
        what="the retry's first steps",
    )
    steps = retry_steps()
    assert steps[0][0] == stopped + 1, (steps, run_json("jobs", "show", str(retry_id), home=home))
    assert steps[0][1] > tokens_then  # trained tokens count on
    cancel(retry_id)  # it saves a checkpoint where it stops
    stopped = trained()
    assert stopped > steps[0][0] - 1

    # REF may be left out: the adapter names its base. Learning rate and batch size are the
    # run's own (1e-3, 2), not the defaults (1e-5, 4).
    proc = mlxd(
        lab,
        "finetune",
        "--resume",
        "long",
        "--iters",
        str(stopped + 3),
        "--steps-per-report",
        "1",
        "--wait",
    )
    a = run_json("adapters", "show", "long", home=home)
    assert a["state"] == "ready" and a["iterations"] == stopped + 3
    resumed = [s for s in a["steps"] if s["job_id"] not in (job_id, retry_id)]
    assert [s["iteration"] for s in resumed] == [stopped + 1, stopped + 2, stopped + 3]
    assert all(s["learning_rate"] == pytest.approx(1e-3) for s in resumed)
    iterations = [s["iteration"] for s in a["steps"]]
    assert iterations == sorted(set(iterations))  # one row per iteration
    tokens = [s["trained_tokens"] for s in a["steps"]]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    assert a["params"]["num_layers"] == 1  # the adapter's shape, kept
    resume = a["details"]["resumes"][-1]
    assert (resume["learning_rate"], resume["batch_size"]) == (1e-3, 2)
    shown = mlxd(lab, "adapters", "show", "long").stdout
    assert "(the first run)" in shown and "learning_rate=0.001" in shown
    assert f"from iteration {stopped}: iters={stopped + 3}, batch_size=2" in shown
    proc = mlxd(lab, "finetune", "tiny", "--resume", "long", "--iters", "2", check=False)
    assert f"already has {stopped + 3} iterations" in proc.stderr


def test_a_repeated_report_replaces_its_row(tmp_path: Path) -> None:
    """A run resumed from a checkpoint reports the steps after it again: one row each."""
    from mlxd.catalog.models import Adapter
    from mlxd.catalog.read import Reader
    from mlxd.catalog.store import Store
    from mlxd.config import paths
    from mlxd.jobs.finetune import on_event

    store = Store(paths(tmp_path / "home"))
    job = store.submit_job("finetune", {"model": "x"})
    job = store.claim_job(job.id, host="h", daemon_pid=1)  # its rows are its attempt's
    with store.write() as s:
        a = Adapter(name="a", path="/x", fine_tune_type="lora", base_model_name="x",
                    data_path="/d", target_iterations=4, job_id=job.id)  # fmt: skip
        s.add(a)
        s.flush()
        adapter_id = a.id
    step = {"iteration": 3, "train_loss": 2.0, "learning_rate": 1e-3, "iterations_per_s": 1.0,
            "tokens_per_s": 9.0, "trained_tokens": 30, "peak_memory_bytes": 1}  # fmt: skip
    valid = {"kind": "valid", "iteration": 3, "loss": 2.5, "perplexity": 12.0}
    for loss in (2.0, 1.5):
        ev = {"event": "finetune_report", "adapter_id": adapter_id, "kind": "train", **step}
        on_event(store, job, {**ev, "train_loss": loss})
        on_event(store, job, {"event": "finetune_report",
                 "adapter_id": adapter_id, **valid, "loss": loss})  # fmt: skip
    with Reader(store.paths) as reader:
        steps, evals = reader.finetune_steps(adapter_id), reader.finetune_evals(adapter_id)
    assert [(r.iteration, r.train_loss) for r in steps] == [(3, 1.5)]
    assert [(r.iteration, r.loss) for r in evals] == [(3, 1.5)]
    store.close()


def test_out_of_memory_fails_with_a_hint(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    # A real out-of-memory cannot be staged safely on a shared machine: the engine raises
    # what MLX's allocator raises, and the job must turn it into one line with a hint.
    import mlxd.engine.finetune as engine
    from mlxd.jobs import finetune as kind
    from mlxd.jobs.base import JobFailed, RunContext

    def exhausted(*args, **kwargs):
        raise RuntimeError("[malloc] Unable to allocate 68719476736 bytes.")

    monkeypatch.setattr(engine, "finetune", exhausted)
    spec = kind.Spec(model="tiny", data=str(data_folder(tmp_path / "d")), batch_size=2)
    inputs = {
        "model_path": str(tiny_model_dir),
        "model_name": "tiny",
        "adapter_id": 1,
        "adapter_path": str(tmp_path / "a"),
        "num_layers": 2,
        "start_iteration": 0,
    }
    ctx = RunContext(job_id=1, output_dir=None, progress=lambda f, m: None)
    with pytest.raises(JobFailed) as e:
        kind.run(spec, inputs, ctx)
    message = str(e.value)
    assert message.startswith("out of memory while training ([malloc] Unable to allocate")
    assert "--batch-size" in message and "--grad-checkpoint" in message
    assert "quantized base" in message


def test_fuse_check_fails_when_the_adapter_is_lost_or_tokens_differ() -> None:
    from mlxd.engine.fuse import FuseCheck
    from mlxd.jobs.fuse import KL_THRESHOLD, judge

    def check(**kw) -> FuseCheck:
        base = dict(
            tokens=64,
            kl_mean=1e-6,
            kl_max=1e-5,
            top1_agreement=1.0,
            adapter_kl_mean=0.5,
            greedy_match=True,
            greedy_tokens_adapter=[1],
            greedy_tokens_fused=[1],
            quantized=False,
        )
        return FuseCheck(**{**base, **kw})

    assert judge(check()) is None
    assert "greedy tokens differ" in judge(check(greedy_match=False))
    assert judge(check(quantized=True, kl_mean=0.01)) is None
    drift = judge(check(quantized=True, kl_mean=2 * KL_THRESHOLD))
    assert drift.startswith("the fused model drifts from base + adapter: KL 0.1 nats/token")
    # Re-quantizing can round a small adapter away: KL under the limit, yet most of the
    # adapter's own effect gone.
    lost = judge(check(quantized=True, kl_mean=0.049, adapter_kl_mean=0.06))
    assert lost.startswith("the fused model lost the adapter's effect")


def test_removing_adapters_and_their_base(tiny_in_catalog: str, tmp_path: Path) -> None:
    from mlxd.catalog.models import Adapter, FinetuneStep
    from mlxd.cli.context import get_store

    store = get_store()
    base = store.resolve_model("tiny")
    folder = Path(os.environ["MLXD_HOME"]) / "adapters" / "mine"
    folder.mkdir(parents=True)
    (folder / "adapters.safetensors").write_bytes(b"x")
    with store.write() as s:
        a = Adapter(
            name="mine",
            path=str(folder),
            fine_tune_type="lora",
            base_model_id=base.id,
            base_model_name="tiny",
            data_path="/d",
            target_iterations=4,
            iterations=4,
            status="ready",
        )
        s.add(a)
        s.flush()
        s.add(
            FinetuneStep(
                adapter_id=a.id,
                iteration=1,
                train_loss=1.0,
                learning_rate=1e-4,
                iterations_per_s=1.0,
                tokens_per_s=1.0,
                trained_tokens=1,
                peak_memory_bytes=1,
            )
        )
    # The base goes; the adapter stays, naming its base.
    run_mlxd("models", "rm", "tiny", check=True)
    shown = run_json("adapters", "show", "mine")
    assert shown["base_model_id"] is None and shown["base_model_name"] == "tiny"
    assert "tiny (removed)" in run_mlxd("adapters", "show", "mine", check=True).stdout
    proc = run_mlxd("adapters", "rm", "mine", check=True)
    assert "Removed adapter mine and its folder" in proc.stdout and not folder.exists()
    assert run_json("adapters", "list") == []
    proc = run_mlxd("adapters", "show", "mine")
    assert proc.returncode == 2
    assert proc.stderr == "Error: adapter 'mine' not found; see 'mlxd adapters list'\n"
