"""Seam 2: every kind ran on one daemon, in sequence (the fill itself is in conftest.py).
Seam 1: every command that reads the catalog, on the catalog the fill made, once per backend,
through the read path only: none imports the Store's SQLAlchemy, SQLModel or Alembic, nor huey.
(One file: `make test`'s workers keep a file together, so the fill is made once per backend.) Each reader x format x backend is its own test: it must exit 0 and show the
figures the jobs made (seam 3: what a job stores is what the reader shows).

The readers are found by walking the Click tree (every list and show command, each format), so
a new list or show without an entry in ARGS fails here instead of going untested.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click
import pytest

from mlxd.jobs import KINDS

if TYPE_CHECKING:
    from tests.seams.conftest import Fill

LIST_FORMATS = ("text", "json", "csv", "md", "jsonl")
SHOW_FORMATS = ("text", "json")


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


def _reader_commands() -> list[tuple[tuple[str, ...], str]]:
    from mlxd.cli.main import cli

    out = []

    def walk(group: click.Group, ctx: click.Context, path: tuple[str, ...]):
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            if isinstance(cmd, click.Group):
                walk(cmd, click.Context(cmd, parent=ctx), (*path, name))
            elif kind := getattr(cmd.callback, "output_kind", None):
                out.append(((*path, name), kind))

    walk(cli, click.Context(cli), ())
    return out


# Arguments of each reader (a function of the fill: ids come from the catalog).
ARGS: dict[tuple[str, ...], Callable[[Fill], list[str]]] = {
    ("adapters", "list"): lambda f: [],
    ("adapters", "show"): lambda f: [f.adapter],
    ("daemon", "status"): lambda f: [],
    ("doctor",): lambda f: [],
    ("finetune", "list"): lambda f: [],
    ("finetune", "show"): lambda f: [str(f.json_once("finetune", "list")[0]["id"])],
    ("jobs", "list"): lambda f: ["--limit", "1000"],
    ("jobs", "show"): lambda f: [str(f.jobs["push"])],
    ("machines", "list"): lambda f: [],
    ("models", "du"): lambda f: [],
    ("models", "list"): lambda f: [],
    ("models", "show"): lambda f: ["tiny-q4"],
    ("quality", "list"): lambda f: [],
    ("eval", "list"): lambda f: [],
    # The fill's own eval (with --base), not one of the sweep's (scored without a base).
    ("eval", "show"): lambda f: [
        str(
            next(
                r["id"]
                for r in f.json_once("eval", "list")
                if r["job_id"] == f.jobs["eval"] and r["base"]
            )
        )
    ],
    ("recommend",): lambda f: ["tiny", "--memory", "16GB"],
    ("regressions",): lambda f: [],
    ("results",): lambda f: [],
    ("sweep", "list"): lambda f: [],
    ("sweep", "show"): lambda f: [str(f.json_once("sweep", "list")[0]["id"])],
    ("system", "show"): lambda f: [],
    ("users", "list"): lambda f: [],
}
NOT_CATALOG_READERS = {("models", "scan")}  # registers models: a writer

# What a reader must not import once the catalog is at head: the Store's libraries and the
# queue's (reads go through catalog/read.py's Reader, on the stdlib driver or psycopg).
WRITE_PATH_MODULES = {"sqlalchemy", "sqlmodel", "alembic", "huey"}
# Readers allowed to: doctor checks huey's queue against the catalog and its --fix writes
# through the Store.
MAY_IMPORT_WRITE_PATH = {("doctor",)}
# `python -m mlxd ARGS` that also writes, as it exits, the top-level modules it imported.
_LIST_IMPORTS = """\
import atexit, os, runpy, sys
def _imported():
    with open(os.environ["MLXD_TEST_IMPORTED"], "w") as f:
        f.write(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
atexit.register(_imported)
sys.argv[0] = "mlxd"
runpy.run_module("mlxd", run_name="__main__", alter_sys=True)
"""


def run_listing_imports(fill: Fill, args: list[str], tmp_path) -> tuple[object, set[str]]:
    """Run ``mlxd ARGS`` as ``fill.run`` does; also the top-level modules it imported."""
    listed = tmp_path / "imported.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _LIST_IMPORTS, *args],
        capture_output=True,
        text=True,
        env={**fill.env, "MLXD_TEST_IMPORTED": str(listed)},
        timeout=300,
    )
    assert listed.exists(), f"mlxd {' '.join(args)} exited without its exit hooks: {proc.stderr}"
    return proc, set(listed.read_text().split())


# Readers beyond the list/show walk: (id, args, format).
EXTRA = [
    ("results --compare", ["results", "--compare", "tiny", "tiny-q4"], "text"),
    ("results --compare --json", ["results", "--compare", "tiny", "tiny-q4", "--json"], "json"),
    ("results --compare --md", ["results", "--compare", "tiny", "tiny-q4", "--md"], "md"),
    ("results --sql", ["results", "--sql"], "sql"),
    ("report md", ["report", "--format", "md", "-o", "-"], "report-md"),
    ("report html", ["report", "--format", "html", "-o", "-"], "report-html"),
    ("jobs logs", ["jobs", "logs", "{finetune}"], "log"),
    ("cache-prompt --list", ["cache-prompt", "--list"], "text"),
    ("cache-prompt --list --json", ["cache-prompt", "--list", "--json"], "json"),
]


def _cells():
    cells = []
    for path, kind in _reader_commands():
        if path in NOT_CATALOG_READERS:
            continue
        for fmt in LIST_FORMATS if kind == "list" else SHOW_FORMATS:
            cells.append(pytest.param(path, kind, fmt, id=f"{' '.join(path)}-{fmt}"))
    return cells


@pytest.mark.parametrize(("path", "kind", "fmt"), _cells())
def test_reader(filled_catalog: Fill, path, kind, fmt, tmp_path):
    assert path in ARGS, f"mlxd {' '.join(path)} reads the catalog: give it ARGS here"
    args = [*path, *ARGS[path](filled_catalog)]
    if fmt != "text":
        args.append(f"--{fmt}")
    proc, imported = run_listing_imports(filled_catalog, args, tmp_path)
    assert proc.returncode == 0, f"mlxd {' '.join(args)}: {proc.stderr}"
    if path not in MAY_IMPORT_WRITE_PATH:
        assert not imported & WRITE_PATH_MODULES, (
            f"mlxd {' '.join(args)} imported {sorted(imported & WRITE_PATH_MODULES)}: "
            "read the catalog through catalog/read.py's Reader"
        )
    json_rows = (
        parse(proc.stdout, "json")
        if fmt == "json"
        else filled_catalog.json_once(*[a for a in args if a != f"--{fmt}"])
    )
    listed = list_rows(json_rows)
    if listed == [] and fmt in ("csv", "jsonl"):
        return  # nothing to show (regressions of one mlx version); the header is another matter
    assert proc.stdout.strip(), f"mlxd {' '.join(args)} printed nothing"
    rows = parse(proc.stdout, fmt)
    if fmt in ("jsonl", "csv"):
        assert len(rows) == len(listed), (len(rows), len(listed))
        assert [set(r) for r in rows] == [set(r) for r in listed]
    elif fmt in ("text", "md") and kind == "list":
        check_table(proc.stdout, fmt, json_rows)
    check_figures(path, json_rows, filled_catalog)


@pytest.mark.parametrize(("args", "fmt"), [pytest.param(a, f, id=i) for i, a, f in EXTRA])
def test_other_reader(filled_catalog: Fill, args, fmt, tmp_path):
    args = [a.format(**filled_catalog.jobs) for a in args]
    proc, imported = run_listing_imports(filled_catalog, args, tmp_path)
    assert proc.returncode == 0, f"mlxd {' '.join(args)}: {proc.stderr}"
    assert not imported & WRITE_PATH_MODULES, f"mlxd {' '.join(args)} imported {imported}"
    out = proc.stdout
    assert out.strip()
    if fmt == "json":
        assert json.loads(out)
    elif fmt == "sql":
        assert out.lower().count("insert into") >= 10
    elif fmt == "report-md":
        check_report_md(out, filled_catalog)
    elif fmt == "report-html":
        check_report_html(out)
    elif fmt == "log":
        assert "iteration" in out.lower() or "loss" in out.lower()


def list_rows(value):
    """The rows of a list's --json: the list itself, or a table's "rows" (sweep show)."""
    return value["rows"] if isinstance(value, dict) and "rows" in value else value


# Table columns blank on purpose although --json has the field: progress shows while running.
BLANK_BY_DESIGN = {"PROGRESS"}


def parse(out: str, fmt: str):
    if fmt == "json":
        return json.loads(out)
    if fmt == "jsonl":
        return [json.loads(line) for line in out.splitlines() if line.strip()]
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(out)))
    return out


def check_table(out: str, fmt: str, json_rows) -> None:
    """A table (text or Markdown) of a list shows every row, and a column whose field has
    data in --json is not empty."""
    rows_of = list_rows(json_rows)
    if not rows_of:
        return
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if fmt != "md":
        assert len(lines) > len(rows_of)  # a header, then a line per row at least
        return
    body = [ln for ln in lines if ln.startswith("|")]
    header, rows = body[0], body[2:]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    names = [c.strip() for c in header.strip("|").split("|")]
    assert len(rows) >= len(rows_of)
    for i, name in enumerate(names):
        if name in BLANK_BY_DESIGN or any(r[i] not in ("", "-") for r in cells if i < len(r)):
            continue
        key = re.sub(r"\W+", "_", name.lower()).strip("_")
        with_data = [
            k
            for k in rows_of[0]
            if (k == key or k.startswith(key + "_"))
            and any(r.get(k) not in (None, "", [], {}, 0, False) for r in rows_of)
        ]
        assert not with_data, f"column {name} is empty but --json has {with_data}"


def check_figures(path, rows, fill: Fill) -> None:
    """What the jobs made, as this reader must show it (from its --json form)."""
    key = " ".join(path)
    if key == "results":
        assert all(r["generation_tps_mean"] for r in rows if r.get("mode") != "batch"), rows
        modes = {r.get("mode") for r in rows}
        assert {"generate", "serve", "batch"} <= modes, modes
        assert any(r.get("acceptance_rate") is not None for r in rows)  # --draft-model
        assert any(r.get("ttft_cached_s_mean") for r in rows)  # --prompt-cache
        assert any(r.get("adapter") == fill.adapter for r in rows)  # --adapter
        assert any(r.get("perplexity") for r in rows)  # quality joined in
    elif key == "models list":
        names = {r["name"] for r in rows}
        assert {"tiny", "hubtiny", "tiny-mlx", "tiny-q4", "tiny-fact", "gtiny"} <= names, names
    elif key == "jobs list":
        assert len(rows) >= 30 and {r["status"] for r in rows} == {"succeeded"}
    elif key == "eval list":
        assert rows and all(r["items"] and r["synthetic"] for r in rows)
        assert any(r["accuracy_drop"] is not None for r in rows)
    elif key == "eval show":
        assert rows["details"]["tasks"] and rows["base_run_id"]
    elif key == "quality list":
        assert rows and all(float(r["perplexity"]) > 0 for r in rows)
    elif key == "adapters list":
        assert len(rows) == 2 and all(a["final_train_loss"] and a["final_val_loss"] for a in rows)
    elif key == "adapters show":
        assert rows["steps"] and rows["final_train_loss"] and rows["final_val_loss"]
    elif key == "finetune show":
        assert len(rows["rows"]) == 2, rows
        for r in rows["rows"]:
            assert r["train_loss"] and r["val_loss"] and r["tokens_per_s"], r
    elif key == "sweep show":
        table = rows["rows"] if isinstance(rows, dict) else rows
        for r in table:
            assert r.get("generation_tps") and r.get("perplexity"), r
    elif key == "models du":
        assert rows
    elif key == "recommend":
        assert rows
    elif key == "doctor":
        assert rows


SECTION = re.compile(r"^##+ (.+)$", re.M)


def check_report_md(out: str, fill: Fill) -> None:
    sections = SECTION.findall(out)
    # Every section has something under it (no heading over nothing).
    parts = SECTION.split(out)
    for title, body in zip(parts[1::2], parts[2::2], strict=True):
        assert body.strip(), f"section {title} is empty"
    assert "Fine-tuning runs" in out, sections
    ft = out.split("Fine-tuning runs", 1)[1].split("\n\n")[1]
    rows = [r for r in ft.splitlines() if r.startswith("|")][2:]
    assert len(rows) == 2, ft
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert re.fullmatch(r"\d+(\.\d+)?", cells[4]), f"no final train loss: {r}"
        assert re.fullmatch(r"\d+(\.\d+)?", cells[5]), f"no final validation loss: {r}"
    for name in ("tiny", "tiny-q4", "tiny-8bit-g64"):
        assert name in out


def check_report_html(out: str) -> None:
    assert out.lstrip().lower().startswith("<!doctype html")
    assert out.count("<svg") >= 2
    assert "loss" in out.lower()
    assert re.search(r"<svg[^>]*>(?:(?!</svg>).)*loss", out, re.S | re.I), "no loss chart"


# ---------------------------------------------------------------------------------------
# Seam 4: the team server on the same catalog. Its API answers each read with the CLI's
# own --json; every dashboard page renders for every model and every job the fill made;
# /metrics counts the same jobs. (In this file: the fill is made once per backend.)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(filled_catalog: Fill):
    from tests.server.conftest import start_server

    extra = {k: v for k, v in filled_catalog.env.items() if k.startswith("MLXD_")}
    server = start_server(filled_catalog.home, env=extra)
    try:
        yield server
    finally:
        server.stop()


def test_the_team_server_reads_the_filled_catalog_as_the_cli_does(filled_catalog: Fill, served):
    cli = filled_catalog.json_once
    models = cli("models", "list")
    jobs = cli("jobs", "list", "--limit", "500")
    assert len(models) >= 6 and len(jobs) >= 30
    with served.client("viewer") as api:
        # The API's reads are the CLI's --json (field names, values), on this backend.
        assert api.get("/api/v1/models").json() == models
        assert [j["id"] for j in api.get("/api/v1/jobs", params={"limit": 500}).json()] == [
            j["id"] for j in jobs
        ]
        assert api.get("/api/v1/results").json() == cli("results")
        assert api.get("/api/v1/evals").json() == cli("eval", "list")
        for m in models:
            r = api.get(f"/api/v1/models/{m['name']}")
            assert r.status_code == 200, (m["name"], r.text)
            assert r.json()["name"] == m["name"]
        # Every page, for every model and job the fill made: rendered, naming what it shows.
        for path in ("/", "/ui/queue", "/models", "/machines", "/submit", "/reports"):
            r = api.get(path)
            assert r.status_code == 200, (path, r.text[:300])
        for m in models:
            r = api.get(f"/models/{m['name']}")
            assert r.status_code == 200 and m["name"] in r.text, (m["name"], r.text[:300])
        for j in jobs:
            r = api.get(f"/jobs/{j['id']}")
            assert r.status_code == 200 and j["kind"] in r.text, (j["id"], r.text[:300])
            r = api.get(f"/ui/jobs/{j['id']}")
            assert r.status_code == 200 and r.json()["status"] == j["status"], r.text[:300]
        # The metrics count the jobs the catalog holds.
        text = api.get("/metrics").text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("mlxd_jobs{") and 'state="succeeded"' in line
        )
        assert counted == sum(1 for j in jobs if j["status"] == "succeeded")
