"""Where a job goes when several machines share the catalog (issue 13): the host that holds
its model, a pool with a machine that has the memory, or a one-line reason why none can."""

from __future__ import annotations

import json

from tests.conftest import add_tiny, run_mlxd


def _machines(*rows: tuple[str, list[str], int]) -> None:
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    store = Store(paths())
    for host, pools, budget in rows:
        store.machine_heartbeat(host, pools=pools, facts={"memory_budget_bytes": budget})
    store.close()


def _job(job_id: int) -> dict:
    return json.loads(run_mlxd("jobs", "show", str(job_id), "--json", check=True).stdout)


def _submitted(proc) -> int:
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[2].rstrip(":"))


def _on_shared_volume(monkeypatch, model_dir) -> None:
    """The model's folder is on the volume every host sees: no host holds it alone."""
    monkeypatch.setenv("MLXD_SHARED_MODELS", str(model_dir.parent))


def test_a_job_goes_to_the_host_that_holds_its_model(mlxd_home, tiny_model_dir):
    add_tiny(tiny_model_dir)
    _machines(("mac-a", ["default"], 10**12), ("mac-b", ["default"], 10**12))
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    store = Store(paths())
    with store.write() as s:
        from mlxd.catalog.models import Model

        m = s.get(Model, store.resolve_model("tiny").id)
        m.host = "mac-b"
        s.add(m)
    job = _submitted(run_mlxd("bench", "tiny", "-p", "8", "-g", "4"))
    assert _job(job)["pool"] == "@mac-b"
    # --pool wins; a pool nobody serves is said, not silently waited on.
    proc = run_mlxd("bench", "tiny", "-p", "8", "-g", "4", "--pool", "gpu-room")
    assert _job(_submitted(proc))["pool"] == "gpu-room"
    assert "no daemon serves pool gpu-room; last seen never; the job waits" in proc.stderr


def test_a_job_no_machine_can_hold_is_refused_with_the_figures(
    mlxd_home, tiny_model_dir, monkeypatch
):
    _on_shared_volume(monkeypatch, tiny_model_dir)
    add_tiny(tiny_model_dir)
    _machines(("mac-a", ["default"], 1000), ("mac-b", ["big"], 2000))
    proc = run_mlxd("bench", "tiny", "-p", "8", "-g", "4")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: no machine can run this job: it needs about ")
    assert proc.stderr.strip().endswith("and the largest budget is 2.0 KB (mac-b)")
    assert json.loads(run_mlxd("jobs", "list", "--json", check=True).stdout) == []


def test_a_pool_with_room_is_chosen_when_the_default_has_none(
    mlxd_home, tiny_model_dir, monkeypatch
):
    _on_shared_volume(monkeypatch, tiny_model_dir)
    add_tiny(tiny_model_dir)
    _machines(("mac-a", ["default"], 1000), ("studio", ["big"], 10**12))
    job = _submitted(run_mlxd("bench", "tiny", "-p", "8", "-g", "4"))
    assert _job(job)["pool"] == "big"
