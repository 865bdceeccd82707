"""The catalog: migrations to head, concurrent writers, lineage and deletion."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel, select

from mlxd.catalog import schema
from mlxd.catalog.models import BenchRun, BenchTrial, Model
from mlxd.catalog.store import Store
from mlxd.config import paths


def test_head_revision_constant_matches_the_migration_scripts():
    script = ScriptDirectory.from_config(schema.alembic_config())
    assert script.get_current_head() == schema.HEAD_REVISION


@pytest.mark.sqlite_only
def test_empty_db_upgrades_to_head_and_matches_the_models(tmp_path):
    store = Store(paths(tmp_path / "h"))
    assert schema.current_revision(store.db_path) == schema.HEAD_REVISION
    with store._write_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"models and migrations differ: {diff}"
    mode = sqlite3.connect(store.db_path).execute("pragma journal_mode").fetchone()[0]
    assert mode == "wal"


def test_concurrent_writers_never_see_database_is_locked(tmp_path):
    p = paths(tmp_path / "h")
    Store(p)
    errors = []

    def writer(n):
        try:
            s = Store(p)
            for i in range(40):
                job = s.submit_job("convert", {"model": f"m{n}-{i}"})
                s.update_job(job.id, progress=0.5, message="half")
                s.claim_job(job.id, host="h", daemon_pid=1)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(Store(p).list_jobs()) == 160


def test_claim_is_exclusive(tmp_path):
    s = Store(paths(tmp_path / "h"))
    job = s.submit_job("convert", {"model": "x"})
    assert s.claim_job(job.id, host="h", daemon_pid=1).status == "running"
    assert s.claim_job(job.id, host="h", daemon_pid=2) is None


def test_deleting_a_parent_keeps_children_and_drops_its_benchmarks(tmp_path):
    s = Store(paths(tmp_path / "h"))
    parent = s.add_model(Model(name="p", path="/p", format="hf", source="local"))
    s.add_model(Model(name="c", path="/c", format="mlx", source="quantize", parent_id=parent.id))
    system = s.system_for(
        {
            "host": "h",
            "os_name": "Linux",
            "os_version": "6",
            "cpu": "x",
            "backend": "cpu",
            "python_version": "3.11",
            "mlx_version": "1",
            "mlx_lm_version": "1",
            "mlxd_version": "0",
        }
    )
    run = s.add_bench_run(
        BenchRun(
            model_id=parent.id,
            system_id=system.id,
            prompt_tokens=1,
            gen_tokens=1,
            trials=1,
            warmup=0,
        ),
        [
            BenchTrial(
                run_id=0,
                trial_index=0,
                prompt_tokens=1,
                generated_tokens=1,
                prompt_tps=1,
                generation_tps=1,
                ttft_s=1,
                total_s=1,
                peak_memory_bytes=1,
            )
        ],
    )
    assert s.trials(run.id)
    s.delete_model(parent.id)
    assert s.resolve_model("c").parent_id is None
    assert s.bench_runs() == [] and s.trials(run.id) == []
    assert (
        s.system_for(
            {
                "host": "h",
                "os_name": "Linux",
                "os_version": "6",
                "cpu": "x",
                "backend": "cpu",
                "python_version": "3.11",
                "mlx_version": "1",
                "mlx_lm_version": "1",
                "mlxd_version": "0",
            }
        ).id
        == system.id
    )
    assert [m.name for m in s.list_models()] == ["c"]  # the child stays, parentless


@pytest.mark.sqlite_only
def test_an_old_catalog_with_data_upgrades_to_head(tmp_path):
    from sqlalchemy import create_engine, text

    db = tmp_path / "h" / "catalog.db"
    db.parent.mkdir()
    engine = create_engine(f"sqlite:///{db}")
    schema.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into model (name, path, format, source, synthetic, managed, details, created_at)"
                " values ('old', '/old', 'hf', 'local', 0, 1, '{}', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "insert into system (fingerprint, host, os_name, os_version, cpu, backend,"
                " python_version, mlx_version, mlx_lm_version, mlxd_version, created_at) values"
                " ('f', 'h', 'Darwin', '15', 'Apple M3', 'metal', '3.12', '0.30', '0.30', '0.1',"
                " '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text(
                "insert into benchrun (model_id, system_id, created_at, prompt_tokens, gen_tokens,"
                " batch_size, depth, trials, warmup, seed, details) values"
                " (1, 1, '2026-01-01 00:00:00', 128, 64, 1, 0, 3, 1, 0, '{}')"
            )
        )
        # Trials point at the run: rebuilding benchrun must not break them.
        conn.execute(
            text(
                "insert into benchtrial (run_id, trial_index, prompt_tokens, generated_tokens,"
                " prompt_tps, generation_tps, ttft_s, total_s, peak_memory_bytes) values"
                " (1, 0, 128, 64, 500.0, 50.0, 0.25, 1.5, 1000000)"
            )
        )
    engine.dispose()
    assert schema.current_revision(db) == "0001"
    store = Store(paths(db.parent))  # opening migrates
    assert schema.current_revision(db) == schema.HEAD_REVISION
    [run] = store.bench_runs()
    assert run.noisy is False and run.prompt_tokens == 128
    assert [t.generation_tps for t in store.trials(run.id)] == [50.0]
    assert store.resolve_model("old").path == "/old"
    assert run.adapter_id is None  # 0010: runs from before adapters are of the model alone


@pytest.mark.sqlite_only
def test_a_0008_catalog_with_adapters_and_runs_upgrades_and_keeps_them(tmp_path):
    """0010 rebuilds benchrun and qualityrun (SQLite batch mode) under rows that point at
    them (trials) and rows they point at (adapters): all survive, and the new column
    refers to adapters."""
    from sqlalchemy import create_engine, text
    from sqlmodel import select

    from mlxd.catalog.models import QualityRun

    db = tmp_path / "h" / "catalog.db"
    db.parent.mkdir()
    engine = create_engine(f"sqlite:///{db}")
    schema.upgrade(engine, "0008")
    t = "'2026-01-01 00:00:00'"
    with engine.begin() as conn:
        for sql in (
            "insert into model (name, path, format, source, synthetic, managed, details,"
            f" created_at) values ('old', '/old', 'mlx', 'local', 0, 1, '{{}}', {t})",
            "insert into system (fingerprint, host, os_name, os_version, cpu, backend,"
            " python_version, mlx_version, mlx_lm_version, mlxd_version, created_at) values"
            f" ('f', 'h', 'Darwin', '15', 'M3', 'metal', '3.12', '0.30', '0.30', '0.1', {t})",
            "insert into benchrun (model_id, system_id, created_at, prompt_tokens, gen_tokens,"
            " batch_size, depth, trials, warmup, seed, details, noisy, mode) values"
            f" (1, 1, {t}, 128, 64, 1, 0, 1, 1, 0, '{{}}', 0, 'generate')",
            "insert into benchtrial (run_id, trial_index, prompt_tokens, generated_tokens,"
            " prompt_tps, generation_tps, ttft_s, total_s, peak_memory_bytes) values"
            " (1, 0, 128, 64, 500.0, 50.0, 0.25, 1.5, 1000000)",
            "insert into qualityrun (model_id, created_at, text_name, text_sha256, tokens,"
            f" perplexity, details) values (1, {t}, 'default', 'x', 10, 5.0, '{{}}')",
            "insert into adapter (name, path, fine_tune_type, status, base_model_id,"
            " base_model_name, base_quantized, data_path, iterations, target_iterations,"
            f" params, details, created_at, updated_at) values ('ad', '/ad', 'lora', 'ready',"
            f" 1, 'old', 0, '/d', 4, 4, '{{}}', '{{}}', {t}, {t})",
        ):
            conn.execute(text(sql))
    engine.dispose()
    store = Store(paths(db.parent))  # opening migrates (and checks foreign keys)
    assert schema.current_revision(db) == schema.HEAD_REVISION
    [run] = store.bench_runs()
    assert run.adapter_id is None and [x.generation_tps for x in store.trials(run.id)] == [50.0]
    with store.read() as s:
        [q] = s.exec(select(QualityRun)).all()
    assert q.adapter_id is None and q.perplexity == 5.0
    # The new column takes an adapter; removing the adapter removes what was measured with it.
    adapter = store.resolve_adapter("ad")
    with store.write() as s:
        s.add(BenchRun(**{**run.model_dump(exclude={"id"}), "adapter_id": adapter.id}))
    assert sorted(r.adapter_id or 0 for r in store.bench_runs()) == [0, adapter.id]
    store.delete_adapter(adapter.id)
    assert [r.id for r in store.bench_runs()] == [run.id]
    con = sqlite3.connect(db)
    fks = con.execute("pragma foreign_key_list(benchrun)").fetchall()
    assert ("adapter", "adapter_id", "id") in {(f[2], f[3], f[4]) for f in fks}


# -- fenced writes (issue 18): a running attempt's writes hold only while it is still its own


def _taken_back(store):
    """A job claimed by host a (attempt 1), taken back and claimed by host b (attempt 2):
    (a's stale claim, b's current one)."""
    job = store.submit_job("finetune", {"name": "x"})
    stale = store.claim_job(job.id, host="a", daemon_pid=1)
    assert store.take_back(stale, "host a stopped during this job (1x); queued again")
    current = store.claim_job(job.id, host="b", daemon_pid=2)
    assert (current.host, current.attempts) == ("b", 2)
    return stale, current


def _commit_a_model(store, job):
    from types import SimpleNamespace

    from mlxd.daemon.runner import commit_result

    def finish(spec, inputs, result, fin):
        fin.store.add_model(
            Model(name=f"made-by-{job.host}", path=f"/m/{job.host}", format="mlx", source="t"),
            session=fin.session,
        )

    commit_result(store, job, SimpleNamespace(finish=finish), None, {}, {}, None)


def _finetune_event(event: str, **fields):
    """The fine-tuning event ``event`` (as a training child reports it) handed by the runner
    to the kind's ``on_event`` hook for ``job``, on the adapter 'ad'."""
    from mlxd.daemon.runner import Runner

    def write(st, job):
        ev = {"event": event, "adapter_id": st.resolve_adapter("ad").id, **fields}
        Runner(st, st.paths)._kind_event(job, ev)  # FencedOut: it reaches the runner

    return write


def _resume_prep(st, job):
    """What a fine-tune's start (``prepare``) writes for a resume: the adapter claimed, the
    step rows past its checkpoint forgotten."""
    aid = st.resolve_adapter("ad").id
    assert st.claim_adapter(aid, job.id, fence=job) is None
    st.forget_finetune_rows_after(aid, 0, fence=job)


STEP = dict(
    iteration=10,
    train_loss=2.0,
    learning_rate=1e-4,
    iterations_per_s=5.0,
    tokens_per_s=100.0,
    trained_tokens=1000,
    peak_memory_bytes=1 << 20,
)

FENCED_WRITES = {
    "heartbeat": lambda st, job: st.update_running(job, progress=0.5, message="half"),
    "finish": lambda st, job: st.finish_job(job.id, "failed", error="boom", fence=job),
    "commit_result": _commit_a_model,
    "requeue_after_crash": lambda st, job: st.requeue_after_crash(job, "killed by SIGKILL"),
    "give_back": lambda st, job: st.give_back_job(job, "the daemon stopped"),
    "ship_log": lambda st, job: st.append_job_log(job.id, job.host, job.attempts, "a line\n"),
    "take_back": lambda st, job: st.take_back(job, "taken back"),  # False when fenced out
    # a's housekeeper found its daemon dead, read the row before b's claim: no match either
    "requeue_after_interruption": lambda st, job: st.requeue_after_interruption(job, "stopped"),
    "finetune_step": _finetune_event("finetune_report", kind="train", **STEP),
    "finetune_eval": _finetune_event(
        "finetune_report", kind="val", iteration=10, loss=1.5, perplexity=4.5
    ),
    "finetune_checkpoint": _finetune_event("finetune_checkpoint", iteration=10),
    "finetune_started": _finetune_event("finetune_started", data_sha256="d" * 64),
    "finetune_resume": _resume_prep,
}
FINETUNE_WRITES = ("finetune_step", "finetune_eval", "finetune_checkpoint", "finetune_started")


@pytest.mark.parametrize("write", list(FENCED_WRITES))
def test_a_taken_back_attempts_write_is_fenced_out_and_changes_nothing(
    catalog_backend, mlxd_home, write
):
    from mlxd.catalog.models import Adapter, FinetuneEval, FinetuneStep, Job, JobLog
    from mlxd.catalog.store import FencedOut

    store = Store(paths(mlxd_home))
    stale, current = _taken_back(store)
    with store.write() as s:  # the adapter the job trains, with a step row past iteration 0
        ad = Adapter(
            name="ad",
            path="/a/ad",
            fine_tune_type="lora",
            base_model_name="m",
            data_path="d",
            target_iterations=20,
        )
        s.add(ad)
        s.flush()
        s.add(FinetuneStep(adapter_id=ad.id, job_id=stale.id, **{**STEP, "iteration": 5}))
    store.claim_adapter(ad.id, stale.id)

    def snapshot():
        with store.read() as s:
            row = s.get(Job, stale.id).model_dump()
            logs = len(list(s.exec(select(JobLog))))
            rows = [len(list(s.exec(select(t)))) for t in (FinetuneStep, FinetuneEval)]
            adapter = s.get(Adapter, ad.id).model_dump()
        return row, logs, [m.name for m in store.list_models()], rows, adapter

    before = snapshot()
    if write in ("take_back", "requeue_after_interruption"):  # the row read before b's claim
        assert FENCED_WRITES[write](store, stale) is False
    else:
        with pytest.raises(FencedOut) as e:
            FENCED_WRITES[write](store, stale)
        assert str(e.value) == f"job {stale.id} attempt 1 was taken back by b; discarding"
    assert snapshot() == before  # nothing changed: no row, no model, no log piece
    FENCED_WRITES[write](store, current)  # the attempt that holds the job writes as ever
    after = store.get_job(current.id)
    assert (
        after.host == "b"
        and after.status != "running"
        or write
        in (
            "heartbeat",
            "ship_log",
            "finetune_resume",
            *FINETUNE_WRITES,
        )
    )
    if write in FINETUNE_WRITES:
        assert snapshot()[3:] != before[3:]  # b's step, loss, checkpoint or hashes recorded
    if write == "finetune_resume":
        assert snapshot()[3][0] == 0  # b forgets the step past its checkpoint
    if write == "commit_result":
        assert after.status == "succeeded" and [m.name for m in store.list_models()] == [
            "made-by-b"
        ]


@pytest.mark.parametrize("taken_back", [False, True])
def test_a_supervisor_bug_fails_its_own_attempt_only(
    catalog_backend, mlxd_home, monkeypatch, taken_back
):
    """An unexpected error while the daemon runs a job ends that attempt "failed" (internal
    error), fenced like its other ends: if another host took the job back meanwhile, the
    run there goes on untouched."""
    from mlxd.daemon.runner import INTERNAL_ERROR, Runner
    from mlxd.daemon.service import make_handler

    store = Store(paths(mlxd_home))
    job = store.submit_job("synth", {"name": "x"})

    def attempt(self, claimed, joblog):
        if taken_back:  # this host froze past its lease; b took the job back and runs it
            assert store.take_back(claimed, "taken back")
            assert store.claim_job(claimed.id, host="b", daemon_pid=2) is not None
        raise RuntimeError("a bug in the supervisor")

    monkeypatch.setattr(Runner, "_attempt", attempt)
    make_handler(Runner(store, store.paths))(job.id)
    after = store.get_job(job.id)
    if taken_back:
        assert (after.status, after.host, after.attempts, after.error) == ("running", "b", 2, None)
    else:
        assert (after.status, after.error) == ("failed", INTERNAL_ERROR)


@pytest.mark.parametrize("claimed_meanwhile", [False, True])
def test_a_refusal_at_admission_fails_the_job_only_while_it_is_still_queued(
    catalog_backend, mlxd_home, monkeypatch, claimed_meanwhile
):
    """A daemon that refuses a queued job (it can never fit) ends it as it read it: a run
    that another host claimed meanwhile is not failed under it."""
    from mlxd.daemon import admission
    from mlxd.daemon.runner import Runner

    store = Store(paths(mlxd_home))
    job = store.submit_job("synth", {"name": "x"})

    def decide(est, in_use_bytes, models_path):
        if claimed_meanwhile:
            assert store.claim_job(job.id, host="b", daemon_pid=2) is not None
        raise admission.AdmissionError("needs more memory than this machine has")

    monkeypatch.setattr(admission, "decide", decide)
    outcome = Runner(store, store.paths).handle(job.id)
    after = store.get_job(job.id)
    if claimed_meanwhile:
        assert outcome is None and (after.status, after.host, after.error) == ("running", "b", None)
    else:
        assert outcome.status == "failed" and after.status == "failed"
        assert after.error == "needs more memory than this machine has"


def test_a_delete_that_fails_to_commit_leaves_the_files_in_place(tmp_path):
    """Files go only after the rows' delete committed: a rolled-back delete must not leave
    rows that name files which are gone."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from mlxd.catalog.models import PromptCache

    s = Store(paths(tmp_path / "h"))
    model = s.add_model(Model(name="m", path=str(tmp_path / "m"), format="mlx", source="local"))
    files = {}
    for name in ("one", "two"):
        files[name] = tmp_path / f"{name}.safetensors"
        files[name].write_bytes(b"kv")
        s.add_prompt_cache(
            PromptCache(
                name=name,
                path=str(files[name]),
                model_id=model.id,
                model_fingerprint="f",
                num_tokens=1,
                text_sha256="t",
            )
        )
    one = s.resolve_prompt_cache("one")

    def refuse(session):
        raise RuntimeError("the commit failed")

    event.listen(Session, "before_commit", refuse)
    try:
        with pytest.raises(RuntimeError, match="the commit failed"):
            s.delete_prompt_cache(one.id)
        with pytest.raises(RuntimeError, match="the commit failed"):
            s.delete_model(model.id)
    finally:
        event.remove(Session, "before_commit", refuse)
    assert files["one"].exists() and files["two"].exists()
    assert {c.name for c in s.list_prompt_caches()} == {"one", "two"}

    s.delete_prompt_cache(one.id)  # committed: now the file goes
    assert not files["one"].exists() and files["two"].exists()
    s.delete_model(model.id)
    assert not files["two"].exists() and s.list_prompt_caches() == []
