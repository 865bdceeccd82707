"""The JSON API under /api/v1: each read is the CLI's --json, each submit the CLI's job, with
the CLI's one-line messages; who may cancel what; no path out of MLXD_HOME.

One `mlxd serve` for the module (tests/server/conftest.py) on a catalog of hand-made results
(benchmarks/fill_catalog.py) and the session's tiny model; no daemon (the jobs stay queued).
The CLI side runs in this process (Click's runner) on the server's home.
"""

from __future__ import annotations

import sqlite3

import pytest

from tests.server.cli import Local

FILLED_RUNS = 30
SERVER_ENV = {"MLXD_QUEUE_LIMIT_PER_USER": "2"}  # the server's own: its 429


@pytest.fixture(scope="module")
def catalog(server, tiny_model_dir):
    """The server's catalog: filled results and the tiny model registered as 'tiny'."""
    from benchmarks.fill_catalog import fill_results

    fill_results(server.home, FILLED_RUNS)
    local = Local(server.home)
    assert local.invoke("models", "add", str(tiny_model_dir), "--name", "tiny").exit_code == 0
    for args in (["quantize", "tiny", "--bits", "8", "--name", "seed-q8"], ["jobs", "cancel", "1"]):
        assert local.invoke(*args).exit_code == 0  # job 1, cancelled: a row that stays put
    return server


def _a_model(local: Local) -> str:
    return next(m["name"] for m in local.json("models", "list") if m["name"] != "tiny")


def test_every_read_endpoint_answers_the_clis_json(catalog):
    local = Local(catalog.home)
    model = _a_model(local)
    hosts = sorted({r["host"] for r in local.json("results")})
    reads = [
        ("/api/v1/jobs", ["jobs", "list"]),
        ("/api/v1/jobs?status=succeeded&limit=5", ["jobs", "list", "--status", "succeeded", "--limit", "5"]),
        ("/api/v1/jobs/1", ["jobs", "show", "1"]),
        ("/api/v1/models", ["models", "list"]),
        (f"/api/v1/models/{model}", ["models", "show", model]),
        ("/api/v1/results", ["results"]),
        (f"/api/v1/results?model={model}&limit=3", ["results", "--model", model, "--limit", "3"]),
        (f"/api/v1/results?machine={hosts[0]}&wide=true", ["results", "--machine", hosts[0], "--wide"]),
        (f"/api/v1/compare?a={hosts[0]}&b={hosts[1]}", ["results", "--compare", *hosts[:2]]),
        (f"/api/v1/recommend/{model}", ["recommend", model]),
        ("/api/v1/regressions", ["regressions"]),
        ("/api/v1/machines", ["machines", "list"]),
        ("/api/v1/sweeps", ["sweep", "list"]),
        ("/api/v1/adapters", ["adapters", "list"]),
        ("/api/v1/quality", ["quality", "list"]),
        ("/api/v1/evals", ["eval", "list"]),
        ("/api/v1/finetunes", ["finetune", "list"]),
    ]  # fmt: skip
    with catalog.client("viewer") as c:
        for url, args in reads:
            r = c.get(url)
            assert r.status_code == 200, (url, r.text)
            assert r.json() == local.json(*args), url
        assert len(c.get("/api/v1/results").json()) == FILLED_RUNS  # not an empty catalog


def test_a_submit_queues_the_clis_row_for_the_principal(catalog):
    local = Local(catalog.home)
    fields = {"model": "tiny", "bits": 4, "group_size": 32, "priority": 3, "name": "api-q4"}
    with catalog.client("submitter") as c:
        r = c.post("/api/v1/jobs/quantize", json=fields)
        assert r.status_code == 201, r.text
        answer = r.json()
        assert answer["output"] == [f"Queued job {answer['job_id']}: quantize tiny -> api-q4"]
        row = local.json("jobs", "show", str(answer["job_id"]))
        assert row["submitted_by"] == catalog.users["submitter"]
        assert c.post(f"/api/v1/jobs/{row['id']}/cancel").status_code == 200
    cli = local.invoke(
        "quantize",
        "tiny",
        "--bits",
        "4",
        "--group-size",
        "32",
        "--priority",
        "3",
        "--name",
        "api-q4",
    )
    assert cli.exit_code == 0, cli.output
    cli_row = local.json("jobs", "show", cli.stdout.split()[2].rstrip(":"))
    for key in ("kind", "params", "priority", "pool", "max_attempts", "timeout_s", "status"):
        assert cli_row[key] == row[key], key


@pytest.mark.parametrize(
    ("kind", "fields", "cli_args", "status"),
    [
        ("quantize", {"model": "tiny", "bits": 7}, ["quantize", "tiny", "--bits", "7"], 400),
        ("quantize", {"model": "nope", "bits": 4}, ["quantize", "nope", "--bits", "4"], 404),
        (
            "quantize",
            {"model": "tiny", "mode": "mxfp4", "bits": 8},
            ["quantize", "tiny", "--mode", "mxfp4", "--bits", "8"],
            400,
        ),
        ("bench", {"model": "tiny", "trials": 0}, ["bench", "tiny", "-n", "0"], 400),
        ("sweep", {"model": "tiny", "bits": "4,9"}, ["sweep", "run", "tiny", "--bits", "4,9"], 400),
    ],
)
def test_bad_values_get_the_clis_message(catalog, kind, fields, cli_args, status):
    code, message = Local(catalog.home).error(*cli_args)
    with catalog.client("submitter") as c:
        r = c.post(f"/api/v1/jobs/{kind}", json=fields)
    assert (r.status_code, r.json()) == (status, {"error": message, "exit_code": code})


def test_unknown_kinds_and_fields_are_refused_in_one_line(catalog):
    with catalog.client("submitter") as c:
        r = c.post("/api/v1/jobs/frobnicate", json={"model": "tiny"})
        assert r.status_code == 404 and r.json()["error"].startswith("unknown job kind")
        r = c.post("/api/v1/jobs/quantize", json={"model": "tiny", "bitz": 4})
        assert r.status_code == 400 and "unknown field 'bitz'" in r.json()["error"]
        r = c.post("/api/v1/cli", json={"argv": ["daemon", "stop"]})
        assert r.status_code == 400
        assert r.json()["error"] == (
            "'mlxd daemon stop' needs the machine it runs on; run it there, without MLXD_URL"
        )
        r = c.post("/api/v1/cli", json={"argv": ["results", "--sql"]})
        assert r.status_code == 400 and "--sql" in r.json()["error"]
    with catalog.client("viewer") as c:
        r = c.post("/api/v1/jobs/quantize", json={"model": "tiny", "bits": 4})
        assert r.status_code == 403


def test_submitters_cancel_their_own_jobs_and_admins_anyones(catalog):
    def queue(c, name: str) -> int:
        r = c.post("/api/v1/jobs/quantize", json={"model": "tiny", "bits": 8, "name": name})
        assert r.status_code == 201, r.text
        return r.json()["job_id"]

    with catalog.client("admin") as admin, catalog.client("submitter") as alice:
        theirs = queue(admin, "admins-q8")
        r = alice.post(f"/api/v1/jobs/{theirs}/cancel")
        assert r.status_code == 403
        assert r.json()["error"].startswith(f"job {theirs} was submitted by admin")
        assert alice.post(f"/api/v1/jobs/{theirs}/retry").status_code == 403
        mine = queue(alice, "alices-q8")
        r = alice.post(f"/api/v1/jobs/{mine}/cancel")
        assert r.status_code == 200 and r.json()["output"] == [f"Cancelled job {mine}"]
        assert admin.post(f"/api/v1/jobs/{theirs}/cancel").status_code == 200
        statuses = {j["id"]: j["status"] for j in alice.get("/api/v1/jobs").json()}
        assert statuses[mine] == statuses[theirs] == "cancelled"
        r = alice.post(f"/api/v1/jobs/{mine}/retry")  # a new job, same parameters
        assert r.status_code == 201 and r.json()["job_id"] > theirs
        assert alice.post(f"/api/v1/jobs/{r.json()['job_id']}/cancel").status_code == 200


def test_logs_and_reports_stay_inside_mlxd_home(catalog, tmp_path):
    home = catalog.home
    secret = tmp_path / "outside.md"
    secret.write_text("# not for the API\n")
    reports = home / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "nightly.md").write_text("# digest\n")
    (reports / "link.md").symlink_to(secret)
    with catalog.client("viewer") as c:
        listed = [r["name"] for r in c.get("/api/v1/reports").json()]
        assert listed == ["nightly.md"]  # the link is not offered
        r = c.get("/api/v1/reports/nightly.md")
        assert r.status_code == 200 and r.text == "# digest\n"
        for bad in ("link.md", "..%2Fcatalog.db", "%2E%2E/%2E%2E/etc/hostname", str(secret)):
            r = c.get(f"/api/v1/reports/{bad}")
            assert r.status_code in (403, 404), bad
            assert "not for the API" not in r.text
        assert c.get("/api/v1/reports/link.md").status_code == 403

    # A job whose log is a link out of MLXD_HOME, and one whose row names a path outside.
    (home / "logs").mkdir(exist_ok=True)
    (home / "logs" / "job-1.log").symlink_to(secret)
    con = sqlite3.connect(home / "catalog.db")
    with con:
        con.execute("update job set log_path = ? where id = 1", (str(home / "logs/job-1.log"),))
        con.execute("update job set log_path = ? where id = 2", (str(home / "logs/../../x.log"),))
    con.close()
    with catalog.client("viewer") as c:
        for job_id in (1, 2):
            r = c.get(f"/api/v1/jobs/{job_id}/logs")
            assert r.status_code == 403, r.text
            assert "outside the server's MLXD_HOME" in r.json()["error"]
    with catalog.client("submitter") as c:  # a file option naming a file outside
        for path in (secret, tmp_path / "missing.jsonl"):  # whether it exists: not said
            r = c.post("/api/v1/jobs/batch", json={"model": "tiny", "prompts": str(path)})
            assert r.status_code == 403 and "outside the server's MLXD_HOME" in r.json()["error"]
        # Files named by options that are not checked for existence by Click: the same rule.
        for kind, field in (
            ("finetune", "data"),
            ("finetune", "config"),
            ("quality", "text"),
            ("eval", "task"),
        ):
            r = c.post(f"/api/v1/jobs/{kind}", json={"model": "tiny", field: str(secret)})
            assert r.status_code == 403, (kind, field, r.text)
            assert "outside the server's MLXD_HOME" in r.json()["error"]


def test_the_per_user_limit_is_429_with_the_schedulers_line(catalog):
    with catalog.client("submitter") as c:
        ids = []
        for i in range(2):
            r = c.post(
                "/api/v1/jobs/quantize", json={"model": "tiny", "bits": 3, "name": f"lim-{i}"}
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["job_id"])
        r = c.post("/api/v1/jobs/quantize", json={"model": "tiny", "bits": 3, "name": "lim-2"})
        assert r.status_code == 429, r.text
        assert r.json()["exit_code"] == 1 and "alice" in r.json()["error"]
        for job_id in ids:
            assert c.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
