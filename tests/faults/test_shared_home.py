"""A home shared by a group: files the group can use, nothing for others; cancelling another
user's job takes --force."""

from __future__ import annotations

import stat


def test_a_group_shared_home_gets_group_writable_files_and_nothing_for_others(fh):
    fh.home.chmod(0o2770)  # setgid, group-writable: /Users/Shared/mlxd style
    fh.mlxd("jobs", "list")  # makes the catalog
    for path in (fh.home / "catalog.db", fh.home / "catalog.migrate.lock"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o060 == 0o060, f"{path} {oct(mode)}"
        assert mode & 0o007 == 0, f"{path} {oct(mode)}"
    (fh.home / "open.log").write_text("")
    (fh.home / "open.log").chmod(0o666)
    proc = fh.mlxd("doctor", "--no-mlx", "--fix", check=False)
    assert "FAIL  permissions: home shared with its group" in proc.stdout
    assert "fixed: removed write permission for others from 1 path(s)" in proc.stdout
    assert stat.S_IMODE((fh.home / "open.log").stat().st_mode) == 0o664


def test_cancelling_another_users_job_needs_force(fh_tiny):
    j = fh_tiny.queue("quantize", model="tiny", bits=4)
    import sqlite3

    con = sqlite3.connect(fh_tiny.home / "catalog.db")
    con.execute("update job set submitted_by = 'alice' where id = ?", (j,))
    con.commit()
    con.close()
    proc = fh_tiny.mlxd("jobs", "cancel", str(j), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"Error: job {j} was submitted by alice; cancel another user's job with --force"
    )
    assert fh_tiny.job(j)["status"] == "queued"
    assert fh_tiny.mlxd("jobs", "cancel", str(j), "--force").returncode == 0
    assert fh_tiny.job(j)["status"] == "cancelled"
