"""A machine has one host id, its daemon's, and everything made or run there is filed under
it; a queued job never waits without saying why (issue 17, seam 4).

Two daemons (``--host-id maca``, ``--host-id macb``) on one fresh PostgreSQL catalog, each with
its own MLXD_HOME, as in test_scaleout.py; a "laptop" is a home with no daemon."""

from __future__ import annotations

import json
import socket

from tests.conftest import run_json, run_mlxd
from tests.test_scaleout import hosts  # noqa: F401 (fixture)


def _queued(proc) -> int:
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[2].rstrip(":"))


def test_what_a_machine_makes_and_runs_is_filed_under_its_daemons_host_id(
    hosts,  # noqa: F811
    pg_url,
):
    a, b = hosts("maca").start(), hosts("macb")
    # Made before macb's daemon ever ran (under the hostname): filed under macb at its start.
    run_mlxd("models", "synth", "early", home=b.home, check=True)
    b.start()
    assert run_json("models", "show", "early", home=b.home)["host"] == "macb"
    run_mlxd("models", "synth", "ptiny", home=a.home, check=True)
    assert run_json("models", "show", "ptiny", home=a.home)["host"] == "maca"
    # The daemon recorded its id where every command run with its home reads it.
    assert 'host_id = "maca"' in (a.home / "config.toml").read_text()
    [synth] = [j for j in run_json("jobs", "list", home=a.home) if j["params"]["name"] == "ptiny"]
    assert synth["kind"] == "synth" and synth["host"] == "maca"
    # A job on it goes to maca, and runs there (it waited forever in pool @<hostname>).
    quant = _queued(run_mlxd("quantize", "ptiny", "--bits", "4", home=a.home))
    bench = _queued(
        run_mlxd("bench", "ptiny", "-p", "8", "-g", "2", "-n", "1", "--warmup", "0", home=a.home)
    )
    proc = run_mlxd("jobs", "wait", str(quant), str(bench), "--wait-timeout", "120", home=a.home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for job_id in (quant, bench):
        job = run_json("jobs", "show", str(job_id), home=a.home)
        assert (job["pool"], job["host"], job["status"]) == ("@maca", "maca", "succeeded")
    assert run_json("models", "show", "ptiny-4bit-g64", home=a.home)["host"] == "maca"
    # Its runs are maca's: `results --machine maca` finds them, from any machine.
    runs = run_json("results", "--machine", "maca", home=b.home)
    assert runs and {r["host"] for r in runs} == {"maca"}
    # A folder registered with `models add` on macb is macb's.
    run_mlxd("models", "add", str(a.home / "models" / "ptiny"), "--name", "p-b", home=b.home)
    assert run_json("models", "show", "p-b", home=b.home)["host"] == "macb"


def test_a_job_nobody_serves_says_why_at_submit_in_lists_doctor_and_wait(
    hosts,  # noqa: F811
    pg_url,
    mlxd_home,
):
    a, b = hosts("maca").start(), hosts("macb").start()
    me = socket.gethostname()  # a laptop without a daemon: its host id is its hostname
    laptop = mlxd_home / "laptop"
    run_mlxd("models", "synth", "lt", home=laptop, check=True)
    assert run_json("models", "show", "lt", home=laptop)["host"] == me
    proc = run_mlxd("quantize", "lt", "--bits", "4", home=laptop)
    on_laptop = _queued(proc)
    assert (
        f"Note: model 'lt' is only on host {me}; no daemon serves pool @{me}; last seen never; "
        f"start the daemon on host {me}"
    ) in proc.stderr
    unserved = _queued(run_mlxd("quantize", "lt", "--bits", "8", "--pool", "vm-gpu", home=laptop))
    run_mlxd("models", "synth", "mb", home=b.home, check=True)
    b.stop()
    host_down = _queued(run_mlxd("quantize", "mb", "--bits", "4", home=a.home))

    why = {j["id"]: j["waiting"] for j in run_json("jobs", "list", home=a.home)}
    assert why[on_laptop] == f"no daemon serves pool @{me}; last seen never"
    assert why[unserved] == "no daemon serves pool vm-gpu; last seen never"
    assert why[host_down].startswith("host macb down since ")
    listing = run_mlxd("jobs", "list", home=laptop, check=True).stdout
    assert "no daemon serves pool vm-gpu; last seen never" in listing
    shown = run_mlxd("jobs", "show", str(host_down), home=laptop, check=True).stdout
    assert "waiting    host macb down since " in shown
    # doctor looks at every pool and says the same.
    out = run_mlxd("doctor", "--no-mlx", home=a.home).stdout
    assert f"FAIL  pool vm-gpu: job(s) {unserved} wait: no daemon serves pool vm-gpu" in out
    assert f"FAIL  pool @macb: job(s) {host_down} wait: host macb down since " in out
    assert "not in the queue" not in out
    # jobs wait gives up, saying why, instead of waiting forever.
    proc = run_mlxd("jobs", "wait", str(unserved), "--wait-timeout", "60", home=laptop)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith(
        f"Error: job {unserved} is queued but no daemon serves pool vm-gpu; last seen never; "
        "start a daemon that serves it ('mlxd daemon start --pool vm-gpu')"
    ), proc.stderr
    assert (
        json.loads(run_mlxd("jobs", "show", str(unserved), "--json", home=a.home).stdout)["status"]
        == "queued"
    )


def test_why_a_queued_job_waits_is_never_empty():
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace as Row

    from mlxd.daemon.hosts import wait_reason

    now = datetime.now(UTC)
    live = Row(host_id="maca", pools=["default"], heartbeat_at=now, stopped_at=None)
    gone = Row(
        host_id="macb", pools=["gpu"], heartbeat_at=now - timedelta(hours=30), stopped_at=None
    )

    def job(id_, pool="default", status="queued", after=None, priority=0, message=None, wait=None):
        return Row(
            id=id_,
            pool=pool,
            status=status,
            after_job_id=after,
            priority=priority,
            message=message,
            wait_code=wait,
        )

    running, first, second = job(1, status="running"), job(2), job(3)
    urgent = job(4, priority=5)
    pending = [running, first, second, urgent, job(5, after=2)]
    assert wait_reason(first, [live, gone], 60, pending) == "behind job 4"
    assert wait_reason(urgent, [live, gone], 60, pending) == "behind job 1"
    assert wait_reason(second, [live], 60, pending) == "behind job 2"
    assert wait_reason(pending[-1], [live], 60, pending) == "waiting for job 2"
    memory = job(6, message="waiting: memory (needs 3 GB)", wait="wait_memory")
    assert wait_reason(memory, [live], 60, [memory]) == "waiting: memory (needs 3 GB)"
    assert wait_reason(job(7), [live], 60, []) == "next in pool default"
    assert wait_reason(job(8, pool="gpu"), [live, gone], 60, []).startswith(
        "no daemon serves pool gpu; last seen "
    )
    assert wait_reason(job(9, pool="@macb"), [live, gone], 60, []).startswith(
        "host macb down since "
    )
    assert wait_reason(job(10, pool="@vm"), [live], 60, []) == (
        "no daemon serves pool @vm; last seen never"
    )


def test_the_host_id_is_recorded_in_config_toml_keeping_the_other_settings(tmp_path, monkeypatch):
    import tomllib

    from mlxd.config import host_id, paths, record_host_id

    monkeypatch.delenv("MLXD_HOST_ID", raising=False)
    p = paths(tmp_path / "home")
    assert host_id(p) == socket.gethostname()
    assert not record_host_id(p, socket.gethostname())  # the default needs no line
    assert not (p.home / "config.toml").exists()
    p.home.mkdir()
    (p.home / "config.toml").write_text('database_url = "postgresql://x@h/db"\n[extra]\nk = 1\n')
    assert record_host_id(p, "maca") and host_id(p) == "maca"
    assert record_host_id(p, "macb") and not record_host_id(p, "macb")
    cfg = tomllib.loads((p.home / "config.toml").read_text())
    assert cfg == {"host_id": "macb", "database_url": "postgresql://x@h/db", "extra": {"k": 1}}
    monkeypatch.setenv("MLXD_HOST_ID", "studio")  # a daemon's own --host-id wins in its process
    assert host_id(p) == "studio"


def test_a_job_is_judged_by_the_lease_its_holder_promised_not_the_judges():
    """A CLI running a job in the foreground with the default lease renews less often than a
    daemon with a 3 s lease judges: the daemon must not take it back while it is in lease."""
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace as Row

    from mlxd.daemon import hosts as placement

    beat = datetime.now(UTC) - timedelta(seconds=10)
    job = Row(heartbeat_at=beat, started_at=beat, host="laptop", lease_s=60.0)
    assert not placement.job_host_dead(job, {}, 3.0, 1.0)
    job.lease_s = None  # a row claimed before the lease was recorded: the judge's own
    assert placement.job_host_dead(job, {}, 3.0, 1.0)
    # A machine row is judged by the lease its daemon wrote in its facts.
    m = Row(host_id="maca", heartbeat_at=beat, stopped_at=None, facts={"lease_s": 30.0})
    assert placement.live_machines([m], 3.0) == [m]
    m.facts = {}
    assert placement.live_machines([m], 3.0) == []
