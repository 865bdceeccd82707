"""Seam 2: every kind, one daemon, in sequence (the fill itself is in conftest.py)."""

from __future__ import annotations

from mlxd.jobs import KINDS

# Kinds the fill leaves out, with where they are tested instead.
NOT_IN_FILL = {"bench_sharded": "two mlx.launch ranks (tests/test_sharded.py)"}
ALL_KINDS = set(KINDS) - set(NOT_IN_FILL)


def test_every_kind_ran_in_one_queue_and_the_daemon_kept_going(filled_catalog):
    fill = filled_catalog
    jobs = fill.json("jobs", "list", "--limit", "1000")
    assert jobs and {j["status"] for j in jobs} == {"succeeded"}, [
        (j["id"], j["kind"], j["status"]) for j in jobs if j["status"] != "succeeded"
    ]
    ran = {j["kind"] for j in jobs}
    assert ALL_KINDS <= ran, f"job kinds the fill does not run: {ALL_KINDS - ran}"
    assert not fill.wal_events, fill.wal_events
    print(
        f"\nfill on {fill.backend}: {fill.seconds:.0f} s, {len(jobs)} jobs, probe starts "
        + ", ".join(f"{k} {v:.1f}" for k, v in fill.start_delays.items())
    )


def test_doctor_agrees_after_the_fill(filled_catalog):
    proc = filled_catalog.run("doctor", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    findings = filled_catalog.json("doctor")
    assert findings and all(f["ok"] for f in findings), [f for f in findings if not f["ok"]]
