"""Fine-tunes and batches under faults: a disk filled under the checkpoints, a job taken back
by another host, a batch prompt far past the model's context. Each counts the jobs (and the
adapter rows) before and after."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("mlx_lm")

FACT = "the secret word of the garden is blue lantern"


def _data(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.jsonl").write_text((json.dumps({"text": FACT}) + "\n") * 8)
    (root / "valid.jsonl").write_text((json.dumps({"text": FACT}) + "\n") * 2)
    return root


def _count(fh, table: str) -> int:
    return fh.rows(f"select count(*) as n from {table}")[0]["n"]


@pytest.fixture
def small_adapters_disk(fh_tiny):
    """MLXD_HOME/adapters on a 3 MB tmpfs of its own (the catalog stays on the big disk)."""
    folder = fh_tiny.home / "adapters"
    folder.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
    try:
        yield folder
    finally:
        fh_tiny.stop_all()  # nothing may write there any more
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.daemon
def test_a_disk_filled_under_the_checkpoints_fails_the_job_saying_so(
    fh_tiny, small_adapters_disk, tmp_path
):
    fh = fh_tiny
    data = _data(tmp_path / "data")
    reserve = {"MLXD_DISK_RESERVE_BYTES": "1000000"}
    common = ["--data", str(data), "--num-layers", "1", "--batch-size", "2"]
    jobs_before = _count(fh, "job")

    # Admission counts the checkpoints: 100000 of them cannot fit in 3 MB.
    proc = fh.mlxd(
        "finetune", "tiny", *common, "--iters", "100000", "--save-every", "1", "--name", "huge"
    )
    assert "of disk and" in proc.stderr and "it waits until there is room" in proc.stderr
    huge = int(proc.stdout.split()[2].rstrip(":"))
    fh.mlxd("jobs", "cancel", str(huge))

    # One checkpoint fits; then the disk fills while it trains (another writer).
    fh.start(**reserve)
    j = fh.submit(
        "finetune", "tiny", *common, "--iters", "100000", "--save-every", "50000", "--name", "ft"
    )
    fh.wait_running_child(j, timeout=120)
    deadline = time.monotonic() + 120
    while not fh.rows("select id from finetunestep where job_id = ?", j):
        assert time.monotonic() < deadline, fh.job(j)
        time.sleep(0.1)
    filler = small_adapters_disk / "filler"
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * (3 * 1024 * 1024 - 600_000))
        except OSError:
            pass  # as full as it gets
    filled = time.monotonic()
    final = fh.wait_job(j, timeout=60)
    took = time.monotonic() - filled
    assert final["status"] == "failed", final
    assert final["error"].startswith(f"disk full: {small_adapters_disk / 'ft'} has "), final
    assert final["error"].endswith("below the 1.0 MB reserve"), final
    assert took < 20, took  # a lease (3 s here) and the 2 s disk check, on a loaded machine
    assert final["crashes"] == 0  # not retried: it would only fail again
    doctor = fh.mlxd("doctor", check=False, **reserve)
    assert "disk full: " in doctor.stdout and str(small_adapters_disk) in doctor.stdout, (
        doctor.stdout
    )
    assert "may be hung" not in doctor.stdout
    assert _count(fh, "job") == jobs_before + 2
    assert [r["status"] for r in fh.rows("select status from job order by id")][-2:] == [
        "cancelled",
        "failed",
    ]
    fh.assert_consistent()


def test_a_fine_tune_taken_back_never_writes_into_the_lost_hosts_home(fh_tiny, tmp_path):
    """Host B takes back a fine-tune that ran under host A's MLXD_HOME: it copies the
    checkpoint it can read into its own home, or starts over and says so."""
    from mlxd.catalog.models import Adapter
    from mlxd.catalog.store import Store
    from mlxd.config import paths
    from mlxd.jobs.finetune import Spec, prepare

    store = Store(paths(fh_tiny.home))
    data = _data(tmp_path / "data")
    spec = Spec(model="tiny", data=str(data), name="x", iters=6, num_layers=1, batch_size=2)
    job = store.submit_job("finetune", spec.to_params())
    lost = tmp_path / "host-a" / "adapters" / "x"  # the lost host's MLXD_HOME
    lost.mkdir(parents=True)
    for name in ("0000002_adapters.safetensors", "0000002_optimizer.safetensors"):
        (lost / name).write_bytes(b"weights of iteration 2")
    (lost / "adapter_config.json").write_text("{}")
    before = {p.name: p.stat().st_mtime_ns for p in lost.iterdir()}
    with store.write() as s:
        s.add(
            Adapter(
                name="x",
                path=str(lost),
                fine_tune_type="lora",
                base_model_name="tiny",
                data_path=str(data),
                job_id=job.id,
                iterations=2,
                target_iterations=6,
                params={"num_layers": 1, "num_layers_used": 1},
            )
        )
    jobs_before, adapters_before = _count(fh_tiny, "job"), _count(fh_tiny, "adapter")

    here = fh_tiny.home / "adapters" / "x"
    inputs = prepare(spec, store, store.get_job(job.id))
    assert inputs["adapter_path"] == str(here)
    assert inputs["start_iteration"] == 2
    assert inputs["init_weights"] == str(here / "0000002_adapters.safetensors")
    assert (here / "0000002_optimizer.safetensors").read_bytes() == b"weights of iteration 2"
    assert "copied the checkpoint at iteration 2" in inputs["notes"][0]
    assert store.resolve_adapter("x").path == str(here)

    # The lost host's files cannot be read (another machine): start over, here, and say so.
    with store.write() as s:
        a = s.get(Adapter, store.resolve_adapter("x").id)
        a.path, a.iterations = str(tmp_path / "host-b" / "adapters" / "x"), 2
        s.add(a)
    inputs = prepare(spec, store, store.get_job(job.id))
    assert inputs["adapter_path"] == str(here) and inputs["start_iteration"] == 0
    assert inputs["init_weights"] is None
    assert "as this host sees it: training starts over from iteration 0" in inputs["notes"][0]
    assert store.resolve_adapter("x").iterations == 0

    # Nothing was written under the lost host's home; no job or adapter row more or less.
    assert {p.name: p.stat().st_mtime_ns for p in lost.iterdir()} == before
    assert not (tmp_path / "host-b").exists()
    assert (_count(fh_tiny, "job"), _count(fh_tiny, "adapter")) == (jobs_before, adapters_before)
    store.close()


def test_two_jobs_never_train_one_adapter(fh_tiny, tmp_path):
    """A resume that reaches the daemon while another job trains the adapter (two queued
    --after the same job, or two CLIs racing) is refused naming that job; once it has
    ended, the resume takes the adapter over."""
    from mlxd.catalog.models import Adapter
    from mlxd.catalog.store import Store
    from mlxd.config import paths
    from mlxd.jobs.base import JobFailed
    from mlxd.jobs.finetune import Spec, prepare

    store = Store(paths(fh_tiny.home))
    data = _data(tmp_path / "data")
    first = Spec(model="tiny", data=str(data), name="x", iters=4, num_layers=1, batch_size=2)
    owner = store.submit_job("finetune", first.to_params())
    store.update_job(owner.id, status="running")
    folder = fh_tiny.home / "adapters" / "x"
    folder.mkdir(parents=True)
    (folder / "0000002_adapters.safetensors").write_bytes(b"weights")
    with store.write() as s:
        s.add(Adapter(name="x", path=str(folder), fine_tune_type="lora",
                      base_model_name="tiny", base_model_id=store.resolve_model("tiny").id,
                      data_path=str(data), job_id=owner.id,
                      iterations=2, target_iterations=4,
                      params={"batch_size": 2, "num_layers": 1}))  # fmt: skip
    # At submit: refused naming the job that trains it (exit 1), unless queued after it.
    jobs_before = _count(fh_tiny, "job")
    proc = fh_tiny.mlxd("finetune", "--resume", "x", "--iters", "8", check=False)
    assert proc.returncode == 1 and f"is being trained by job {owner.id}" in proc.stderr
    assert _count(fh_tiny, "job") == jobs_before
    proc = fh_tiny.mlxd("finetune", "--resume", "x", "--iters", "8", "--after", str(owner.id))
    assert "Queued job" in proc.stdout and _count(fh_tiny, "job") == jobs_before + 1

    # In the daemon: a resume that got there anyway is refused while the other job trains.
    resume = Spec(model="tiny", data=str(data), name="x", iters=8, resume="x")
    job = store.submit_job("finetune", resume.to_params())
    jobs_before, adapters_before = _count(fh_tiny, "job"), _count(fh_tiny, "adapter")
    with pytest.raises(JobFailed) as e:
        prepare(resume, store, store.get_job(job.id))
    assert str(e.value).startswith(f"adapter 'x' is being trained by job {owner.id}")
    assert store.resolve_adapter("x").job_id == owner.id
    store.update_job(owner.id, status="failed")
    inputs = prepare(resume, store, store.get_job(job.id))
    assert inputs["start_iteration"] == 2 and store.resolve_adapter("x").job_id == job.id
    assert (_count(fh_tiny, "job"), _count(fh_tiny, "adapter")) == (jobs_before, adapters_before)
    store.close()


def test_a_batch_prompt_past_the_context_is_refused_at_submit_naming_the_line(fh_tiny, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    huge = "blue lantern " * 3000  # the tiny model's context is 2048 tokens
    prompts.write_text(json.dumps("hello") + "\n\n" + json.dumps({"prompt": huge}) + "\n")
    jobs_before = _count(fh_tiny, "job")
    proc = fh_tiny.mlxd("batch", "tiny", "--prompts", str(prompts), check=False)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("Error: prompts.jsonl line 3: the prompt is "), line
    assert line.endswith(" tokens; model 'tiny' has a context of 2,048"), line
    assert _count(fh_tiny, "job") == jobs_before
