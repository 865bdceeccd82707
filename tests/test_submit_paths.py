"""Every submitting path obeys --pool, admission (memory) and the per-user queue limit
(issue 17, seam 5): a single submit, a quantization sweep, a fine-tune grid, `finetune
--fuse`, and the pull a hub id queues before its job all go through the scheduling room
(``mlxd.scheduling.submit_graph``). A graph is refused whole, never half queued.

No daemon: the jobs only need to be queued (SQLite, in the test's own MLXD_HOME)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import add_tiny, mlxd_env, run_mlxd

DATA = "finetune-data"
BITS = "bits"  # new bits each time: the same variant again would be refused as a duplicate

PATHS = {
    "single": ["quantize", "tiny", "--bits", BITS],
    "sweep": ["sweep", "tiny", "--bits", BITS, "-n", "1"],
    "finetune grid": ["finetune", "tiny", "--data", DATA, "--iters", "2", "--rank", "2,4"],
    "finetune --fuse": ["finetune", "tiny", "--data", DATA, "--iters", "2", "--fuse"],
    "hub pull first": ["quantize", "org/tiny-repo", "--bits", BITS],
}


def _submit(*args: str, home) -> subprocess.CompletedProcess:
    """``mlxd ARGS`` with the hub online (at a dead address): a hub id is queued as a pull,
    and the hub is asked only when the pull runs."""
    env = dict(mlxd_env(home), HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    cmd = [sys.executable, "-m", "mlxd", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _jobs(home) -> list[dict]:
    return json.loads(run_mlxd("jobs", "list", "--json", home=home, check=True).stdout)


@pytest.mark.parametrize("path", PATHS)
def test_each_submitting_path_obeys_pool_admission_and_the_per_user_limit(
    path, mlxd_home, tiny_model_dir, monkeypatch
):
    add_tiny(tiny_model_dir)
    data = mlxd_home.parent / DATA
    data.mkdir()
    (data / "train.jsonl").write_text('{"text": "the garden is blue"}\n' * 8)
    (data / "valid.jsonl").write_text('{"text": "the garden is blue"}\n' * 4)

    def args(bits: str) -> list[str]:
        return [{DATA: str(data), BITS: bits}.get(a, a) for a in PATHS[path]]

    proc = _submit(*args("4"), "--pool", "gpu-room", home=mlxd_home)
    assert proc.returncode == 0, proc.stderr
    queued = _jobs(mlxd_home)
    assert len(queued) >= 2 or path == "single", queued
    assert {j["pool"] for j in queued} == {"gpu-room"}, queued
    # Said at submit and stored where every reader sees it: nobody serves that pool.
    assert "no daemon serves pool gpu-room; last seen never" in proc.stderr
    assert {j["waiting"] for j in queued if j["after_job_id"] is None} == {
        "no daemon serves pool gpu-room; last seen never"
    }

    # The per-user limit counts every job the command would queue: all of them, or none.
    # Room for one more job, not for all of a graph's (a pull and its job are two).
    room = 0 if path == "single" else 1
    monkeypatch.setenv("MLXD_QUEUE_LIMIT_PER_USER", str(len(queued) + room))
    proc = _submit(*args("3"), home=mlxd_home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the limit per user (MLXD_QUEUE_LIMIT_PER_USER=" in proc.stderr
    assert len(_jobs(mlxd_home)) == len(queued)
    monkeypatch.delenv("MLXD_QUEUE_LIMIT_PER_USER")

    if path == "hub pull first":
        return  # the model is not here yet: its memory is known when the pull has run
    # Admission: a job that can never fit this machine's memory is refused, nothing queued.
    monkeypatch.setenv("MLXD_MEMORY_BUDGET_BYTES", "1000")
    proc = _submit(*args("6"), home=mlxd_home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("Error: this job needs about "), proc.stderr
    assert "this machine's budget is 1.0 KB" in proc.stderr
    assert len(_jobs(mlxd_home)) == len(queued)


def test_a_retry_keeps_the_pool_its_job_was_queued_to(mlxd_home, tiny_model_dir):
    """``jobs retry`` queues the new job where the old one was sent (``--pool``), not where
    placement would send a job given no pool."""
    add_tiny(tiny_model_dir)
    run_mlxd("quantize", "tiny", "--bits", "4", "--pool", "gpu-room", check=True)  # job 1
    run_mlxd("jobs", "cancel", "1", check=True)
    proc = run_mlxd("jobs", "retry", "1", check=True)
    assert "Queued job 2: retry of job 1" in proc.stdout
    assert [(j["id"], j["pool"]) for j in _jobs(mlxd_home)] == [(1, "gpu-room"), (2, "gpu-room")]
