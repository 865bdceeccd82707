"""Seam 2: every kind, one daemon, in sequence (the fill itself is in conftest.py)."""

from __future__ import annotations

ALL_KINDS = {
    "synth", "download", "convert", "quantize", "bench", "quality", "sweep", "finetune",
    "fuse", "bench_pair", "cache_prompt", "serve_bench", "batch", "push", "import_gguf", "probe",
}  # fmt: skip


def test_every_kind_ran_in_one_queue_and_the_daemon_kept_going(filled_catalog):
    fill = filled_catalog
    assert ALL_KINDS <= set(fill.kinds)
    jobs = fill.json("jobs", "list", "--limit", "1000")
    assert jobs and {j["status"] for j in jobs} == {"succeeded"}, [
        (j["id"], j["kind"], j["status"]) for j in jobs if j["status"] != "succeeded"
    ]
    ran = {j["kind"] for j in jobs}
    assert ALL_KINDS - {"sweep"} <= ran, ALL_KINDS - ran
    assert not fill.wal_events, fill.wal_events
    print(
        f"\nfill on {fill.backend}: {fill.seconds:.0f} s, {len(jobs)} jobs, probe starts "
        + ", ".join(f"{k} {v:.1f}" for k, v in fill.start_delays.items())
    )


def test_doctor_agrees_after_the_fill(filled_catalog):
    proc = filled_catalog.run("doctor", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
