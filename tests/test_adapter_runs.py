"""bench --adapter and quality --adapter: the unfused adapter measured against its base (and the
fused model) in one job, rows stored under each side, read back by results and quality list.

One real daemon and one MLXD_HOME for the module (as tests/test_finetune.py's lab): the tiny
synth llama, a second tiny model with other weights, one LoRA adapter of a few iterations.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

pytest.importorskip("mlx_lm")

from tests.conftest import Daemon, run_json, run_mlxd
from tests.test_finetune import data_folder

GRID = ("-p", "16", "-g", "4", "-n", "2", "--warmup", "1")


@pytest.fixture(scope="module")
def lab(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("adapter-runs")
    home = root / "mlxd-home"
    home.mkdir()
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "tiny", home=home, check=True)
    run_mlxd("models", "synth", "other", "--seed", "7", home=home, check=True)
    daemon = Daemon(home).start()
    try:
        data = data_folder(root / "data")
        run_mlxd(
            *("finetune", "tiny", "--data", str(data), "--iters", "6", "--batch-size", "2"),
            *("--learning-rate", "1e-2", "--num-layers", "2", "--name", "fact", "--wait"),
            home=home,
            check=True,
        )
        yield home
    finally:
        daemon.stop()


def mlxd(home: Path, *args: str, check: bool = True):
    return run_mlxd(*args, home=home, check=check)


def rows_of(home: Path, sql: str, *params) -> list[tuple]:
    con = sqlite3.connect(home / "catalog.db")
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def test_an_adapter_of_another_base_and_other_benches_are_refused_at_submit(lab: Path) -> None:
    proc = mlxd(lab, "bench", "other", "--adapter", "fact", *GRID, check=False)
    assert proc.returncode != 0
    assert proc.stderr == (
        "Error: adapter 'fact' was trained on 'tiny', not on 'other'; apply it to 'tiny'\n"
    )
    proc = mlxd(lab, "quality", "other", "--adapter", "fact", check=False)
    assert proc.returncode != 0 and "'tiny', not on 'other'" in proc.stderr
    for extra, flag in (
        (("--serve",), "--serve"),
        (("--draft-model", "other"), "--draft-model"),
        (("--ranks", "2"), "--ranks"),
    ):
        proc = mlxd(lab, "bench", "tiny", "--adapter", "fact", *extra, check=False)
        assert proc.stderr == f"Error: --adapter cannot be combined with {flag}\n", proc.stderr
    proc = mlxd(lab, "bench", "tiny", "other", "--adapter", "fact", check=False)
    assert proc.stderr.startswith("Error: --adapter takes one model")
    assert not [j for j in run_json("jobs", "list", home=lab) if j["kind"] in ("bench", "quality")]


def test_bench_adapter_measures_base_adapter_and_fused_side_by_side(lab: Path) -> None:
    [adapter] = run_json("adapters", "list", home=lab)
    proc = mlxd(lab, "bench", "tiny", "--adapter", "fact", *GRID, "--wait")
    assert "Side by side in one job" in proc.stdout
    table = proc.stdout.split("Side by side in one job")[1]
    assert "tiny+fact" in table and " base " in table and "fused" not in table
    runs = rows_of(
        lab,
        "select r.job_id, m.name, r.adapter_id, r.trials from benchrun r "
        "join model m on m.id = r.model_id order by r.id",
    )
    assert [(name, a) for _, name, a, _ in runs] == [("tiny", None), ("tiny", adapter["id"])]
    assert len({job for job, *_ in runs}) == 1 and all(n == 2 for *_, n in runs)
    # Every side got its own trials, with the same number of tokens.
    trials = rows_of(lab, "select run_id, prompt_tokens, generated_tokens from benchtrial")
    assert len(trials) == 4 and {(p, g) for _, p, g in trials} == {(16, 4)}

    # With a model fused from the adapter in the catalog, it joins the same job.
    mlxd(lab, "fuse", "tiny", "--adapter", "fact", "--wait")
    proc = mlxd(lab, "bench", "tiny", "--adapter", "fact", *GRID, "--wait")
    table = proc.stdout.split("Side by side in one job")[1]
    lines = [line.split() for line in table.splitlines() if line.startswith("p=16 g=4")]
    assert [cells[2] for cells in lines] == ["base", "adapter", "fused"]
    assert lines[1][3] == "tiny+fact" and lines[2][3] == "fact-fused"
    for cells in lines[1:]:
        assert cells.count("±") == 3  # tok/s and TTFT ratios with their CIs; one peak: none
    job = max(j for j, *_ in rows_of(lab, "select job_id from benchrun"))
    runs = rows_of(
        lab,
        "select m.name, r.adapter_id, r.details from benchrun r "
        "join model m on m.id = r.model_id where r.job_id = ? order by r.id",
        job,
    )
    assert [(n, a) for n, a, _ in runs] == [
        ("tiny", None),
        ("tiny", adapter["id"]),
        ("fact-fused", None),
    ]
    assert all('"side_by_side"' in d for *_, d in runs)

    # results: the adapter side is labelled, has its column, and --adapter filters.
    only = run_json("results", "--adapter", "fact", home=lab)
    assert [r["model"] for r in only] == ["tiny+fact", "tiny+fact"]
    assert {r["adapter"] for r in only} == {"fact"}
    assert {r["adapter_id"] for r in only} == {adapter["id"]}
    everything = run_json("results", home=lab)
    assert {r["adapter"] for r in everything if r["model"] != "tiny+fact"} == {None}
    csv = mlxd(lab, "results", "--adapter", "fact", "--csv").stdout.splitlines()
    assert "adapter" in csv[0].split(",") and len(csv) == 3
    proc = mlxd(lab, "results", "--adapter", "nope", check=False)
    assert proc.returncode != 0 and "adapter 'nope' not found" in proc.stderr
    # Comparing models compares them alone.
    cmp = run_json("results", "--compare", "tiny", "fact-fused", home=lab)
    assert cmp and all(c["a_n"] == 4 for c in cmp if c["metric"] == "prompt_tps")


def test_quality_adapter_scores_against_the_base_alone(lab: Path) -> None:
    proc = mlxd(lab, "quality", "tiny", "--adapter", "fact", "--text-tokens", "200", "--wait")
    assert "tiny+fact" in proc.stdout
    [row] = run_json("quality", "list", "--adapter", "fact", home=lab)
    assert row["model"] == "tiny+fact" and row["adapter"] == "fact" and row["base"] == "tiny"
    assert row["kl_mean"] > 0 and row["base_perplexity"] != row["perplexity"]
    assert row["adapter_id"] == run_json("adapters", "show", "fact", home=lab)["id"]

    shown = run_json("adapters", "show", "fact", home=lab)
    assert [q["run_id"] for q in shown["quality_runs"]] == [row["run_id"]]
    assert shown["bench_runs"] and {b["model"] for b in shown["bench_runs"]} == {"tiny+fact"}
    text = mlxd(lab, "adapters", "show", "fact").stdout
    assert "Benchmarks with fact unfused" in text and "Quality with fact unfused" in text

    # Removing the adapter removes what was measured with it; the base's own rows stay.
    before = rows_of(lab, "select count(*) from benchrun where adapter_id is null")
    mlxd(lab, "adapters", "rm", "fact")
    assert rows_of(lab, "select count(*) from benchrun where adapter_id is not null") == [(0,)]
    assert rows_of(lab, "select count(*) from qualityrun where adapter_id is not null") == [(0,)]
    assert rows_of(lab, "select count(*) from benchrun where adapter_id is null") == before
    assert rows_of(lab, "pragma foreign_key_check") == []
