"""Reports from a planted catalog: Markdown, HTML in a real Chromium, SQL export,
recommendations and regressions; and from real jobs, what a person sees after them."""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from mlxd.catalog.models import (
    Adapter,
    BenchRun,
    BenchTrial,
    FinetuneEval,
    FinetuneStep,
    Model,
    QualityRun,
)
from mlxd.catalog.store import Store
from mlxd.config import paths
from mlxd.vocab.stats import summarize
from tests.conftest import add_tiny, mlxd_env, run_json, run_mlxd

GB = 1_000_000_000


def _system(store, mlx: str, host: str = "studio"):
    return store.system_for(
        {
            "host": host,
            "os_name": "Darwin",
            "os_version": "15.1",
            "cpu": "Apple M3",
            "chip": "Apple M3 Max",
            "backend": "metal",
            "ram_bytes": 16 * GB,
            "python_version": "3.11",
            "mlx_version": mlx,
            "mlx_lm_version": "0.28.0",
            "mlxd_version": "0.1",
        }
    )


def _model(store, name, parent=None, *, size, bpw=None, bits=None, mode="affine", group=64):
    quant = (
        dict(quant_bits=bits, quant_group_size=group, quant_mode=mode)
        if bits or mode != "affine"
        else {}
    )  # noqa: E501
    return store.add_model(
        Model(
            name=name,
            path=f"/nowhere/{name}",
            format="mlx",
            source="quantize" if parent else "local",
            dtype="float32",
            size_bytes=size,
            bits_per_weight=bpw,
            parent_id=parent.id if parent else None,
            **quant,
        )
    )


def _run(store, model, system, gen, *, peak, depth=0, when=None, prompt=None):
    prompt = prompt or [g * 10 for g in gen]
    sp, sg = summarize(prompt), summarize(gen)
    run = BenchRun(
        model_id=model.id,
        system_id=system.id,
        prompt_tokens=512,
        gen_tokens=128,
        depth=depth,
        prefill_step_size=2048,
        trials=len(gen),
        warmup=1,
        prompt_tps_mean=sp.mean,
        prompt_tps_std=sp.std,
        prompt_tps_ci95=sp.ci95,
        generation_tps_mean=sg.mean,
        generation_tps_std=sg.std,
        generation_tps_ci95=sg.ci95,
        ttft_s_mean=0.1,
        ttft_s_std=0.0,
        peak_memory_bytes=peak,
        model_memory_bytes=model.size_bytes,
        created_at=when or datetime.now(UTC),
    )
    trials = [
        BenchTrial(
            run_id=0,
            trial_index=i,
            prompt_tokens=512,
            generated_tokens=128,
            prompt_tps=prompt[i],
            generation_tps=g,
            ttft_s=0.1,
            total_s=1.0,
            peak_memory_bytes=peak,
        )
        for i, g in enumerate(gen)
    ]
    return store.add_bench_run(run, trials)


def _quality(store, model, base, ppl, kl, top1):
    with store.write() as s:
        s.add(
            QualityRun(
                model_id=model.id,
                base_model_id=base.id if base else None,
                text_name="default",
                text_sha256="x",
                tokens=511,
                perplexity=ppl,
                kl_mean=kl,
                top1_agreement=top1,
            )
        )


# The planted family: generation tok/s, peak memory, KL. With 16 GB and KL <= 0.05 the 4-bit
# variant wins; at 0.85 GB it no longer fits and mxfp4 does.
PLANTED = {
    "llama": (None, 4.0, 32.0, [20.0, 20.5, 19.5], 4.4, None),
    "llama-8bit": (8, 1.1, 8.5, [40.0, 40.4, 39.6], 1.4, 0.001),
    "llama-4bit": (4, 0.6, 4.5, [60.0, 60.5, 59.5], 0.9, 0.02),
    "llama-mxfp4": ("mxfp4", 0.55, 4.25, [55.0, 55.3, 54.7], 0.8, 0.03),
    "llama-3bit": (3, 0.45, 3.5, [70.0, 70.4, 69.6], 0.7, 0.2),
}


@pytest.fixture
def planted(mlxd_home):
    store = Store(paths())
    old, new = _system(store, "0.30.0"), _system(store, "0.31.0")
    base = None
    models = {}
    for name, (bits, size, bpw, gen, peak, kl) in PLANTED.items():
        kw = {"mode": bits, "bits": 4, "group": 32} if bits == "mxfp4" else {"bits": bits}
        m = _model(store, name, base, size=int(size * GB), bpw=bpw, **kw)
        base = base or m
        models[name] = m
        _run(store, m, old, gen, peak=int(peak * GB))
        _quality(
            store,
            m,
            None if m is base else base,
            8.0 + (kl or 0) * 10,
            kl,
            None if kl is None else 1 - kl,
        )
    # depth sweep of the 4-bit variant
    for depth, g in ((1024, 50.0), (4096, 40.0)):
        _run(
            store, models["llama-4bit"], old, [g, g + 0.2, g - 0.2], peak=int(1.0 * GB), depth=depth
        )
    # qwen: 20% slower after the mlx upgrade; phi: 5% apart, well inside its noise
    day = datetime.now(UTC) - timedelta(days=2)
    qwen = _model(store, "qwen", size=2 * GB)
    _run(store, qwen, old, [100.0, 101.0, 99.0], peak=3 * GB, when=day)
    _run(store, qwen, new, [80.0, 81.0, 79.0], peak=3 * GB)
    phi = _model(store, "phi", size=2 * GB)
    _run(store, phi, old, [100.0, 130.0, 70.0], peak=3 * GB, when=day)
    _run(store, phi, new, [95.0, 125.0, 65.0], peak=3 * GB)
    _model(store, "gemma", size=GB)  # never measured
    # jobs of the last night: one succeeded, one failed; a fine-tuning run with its losses
    ok = store.submit_job("bench", {"model": "llama"})
    store.update_job(ok.id, status="running", started_at=datetime.now(UTC) - timedelta(minutes=5))
    store.finish_job(ok.id, "succeeded")
    bad = store.submit_job("quantize", {"model": "llama", "bits": 2})
    store.finish_job(bad.id, "failed", error="Traceback...\nMemoryError: out of memory")
    # What a fine-tuning job stores (jobs/finetune.py): the adapter row, a row per loss report
    # and per validation, and a short summary in the job's result.
    ft = store.submit_job("finetune", {"model": "llama", "model_id": base.id})
    with store.write() as s:
        adapter = Adapter(
            name="llama-lora",
            path="/adapters/llama-lora",
            fine_tune_type="lora",
            status="ready",
            base_model_id=base.id,
            base_model_name="llama",
            data_path="/data",
            job_id=ft.id,
            iterations=30,
            target_iterations=30,
            final_train_loss=1.25,
            final_val_loss=1.5,
        )
        s.add(adapter)
        s.flush()
        for it, loss in ((10, 2.0), (20, 1.5), (30, 1.25)):
            s.add(
                FinetuneStep(
                    adapter_id=adapter.id,
                    job_id=ft.id,
                    iteration=it,
                    train_loss=loss,
                    learning_rate=1e-4,
                    iterations_per_s=1.0,
                    tokens_per_s=100.0,
                    trained_tokens=100 * it,
                    peak_memory_bytes=GB,
                )
            )
        for it, loss in ((15, 1.8), (30, 1.5)):
            s.add(
                FinetuneEval(
                    adapter_id=adapter.id,
                    job_id=ft.id,
                    split="valid",
                    iteration=it,
                    loss=loss,
                    perplexity=math.exp(loss),
                )
            )
    store.finish_job(
        ft.id,
        "succeeded",
        result={"adapter": "llama-lora", "iterations": 30, "train_loss": 1.25, "val_loss": 1.5},
    )
    store.close()
    return models


def _md_rows(md: str, table_header: str) -> list[list[str]]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(table_header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_markdown_report_holds_the_planted_rows(planted, mlxd_home, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mlxd", "report"],
        cwd=tmp_path,
        env=mlxd_env(mlxd_home),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "reports").glob("mlxd-report-*.md")
    assert datetime.now().strftime("%Y-%m-%d") in path.name and str(path.name) in proc.stdout
    md = path.read_text()
    assert md.startswith("# mlxd performance report")
    assert "## Model: llama" in md and "## Model: qwen" in md
    rows = _md_rows(md, "| Variant | Method | Model | Bits/weight")
    methods = {r[2]: r[1] for r in rows}
    assert methods["llama-4bit"] == "rtn" and methods["llama"] == ""
    rows = [[r[0], *r[2:]] for r in rows]  # the rest as before the method column
    by_model = {r[1]: r for r in rows}
    assert list(by_model) == ["llama", "llama-8bit", "llama-4bit", "llama-mxfp4", "llama-3bit"]
    four = by_model["llama-4bit"]
    assert four[0] == "4bit-g64" and four[2] == "4.50" and four[3] == "600.0 MB"
    assert four[5].startswith("60.0 ± 1.2")  # mean ± 95% CI of [60, 60.5, 59.5]
    assert four[6] == "900.0 MB" and four[8] == "0.02" and four[9] == "98.0%"
    assert by_model["llama-mxfp4"][0] == "mxfp4"  # the one label: a mode fixes its group size
    assert by_model["llama"][7] == "8" and by_model["llama"][8] == ""
    assert "KL and top-1 agreement are against llama." in md
    assert "S1 = studio: Apple M3 Max, 16.0 GB, Darwin 15.1, metal, mlx 0.30.0, mlx-lm 0.28.0" in md
    # the recommendation for a 16 GB machine (no KL bound in a report: the fastest that fits)
    assert "Recommendation: llama-3bit (3bit-g64) on studio: 70.0 tok/s" in md
    depth = _md_rows(md, "| Model | Machine | Point | Depth")
    assert [(r[0], r[3], r[5]) for r in depth] == [
        ("llama-4bit", "0", "60.0"),
        ("llama-4bit", "1024", "50.0"),
        ("llama-4bit", "4096", "40.0"),
    ]
    ft = _md_rows(md, "| Job | Model | Output | Iterations")
    assert [(r[1], r[3], r[4], r[5]) for r in ft] == [("llama", "30", "1.25", "1.5")]
    regress = _md_rows(md, "| Verdict | Model | Machine")
    assert [(r[0], r[1], r[4], r[-2]) for r in regress] == [
        ("slower", "qwen", "generation tok/s", "-20.0%"),
        ("slower", "qwen", "prompt tok/s", "-20.0%"),
    ]
    assert "1 failed, 2 succeeded" in md and "MemoryError: out of memory" in md
    # filters: one family, one machine
    only = run_mlxd("report", "--model", "llama-4bit", "-o", "-", check=True).stdout
    assert "## Model: llama" in only and "## Model: qwen" not in only
    bad = run_mlxd("report", "--machine", "nowhere", "-o", "-")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: no benchmarks from machine")


def test_recommend_picks_the_planted_best_and_changes_when_memory_shrinks(planted):
    out = run_mlxd("recommend", "llama", "--memory", "16GB", "--max-kl", "0.05", check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("llama-4bit (4bit-g64) on studio: 60.0 tok/s generation")
    assert "Runner-up llama-mxfp4" in lines[1]
    assert "faster but ruled out: llama-3bit (70.0 tok/s, KL 0.2 > 0.05)" in lines[1]
    small = run_json("recommend", "llama", "--memory", "0.85GB", "--max-kl", "0.05")
    assert small["pick"]["model"] == "llama-mxfp4" and small["runner_up"] is None
    assert "llama-4bit (60.0 tok/s, needs 900.0 MB)" in small["explanation"][1]
    none = run_mlxd("recommend", "llama", "--memory", "100MB")
    assert none.returncode == 1 and "No variant of llama" in none.stdout
    missing = run_mlxd("recommend", "gemma")
    assert missing.returncode == 1 and "Queue them with: mlxd sweep gemma" in missing.stdout
    assert run_mlxd("recommend", "llama", "--memory", "lots").stderr.startswith(
        "Error: --memory takes a size"
    )


def test_regressions_flag_a_planted_slowdown_and_ignore_noise(planted):
    changes = run_json("regressions")
    assert {(c["model"], c["metric"], c["verdict"]) for c in changes} == {
        ("qwen", "generation_tps", "slower"),
        ("qwen", "prompt_tps", "slower"),
    }
    gen = next(c for c in changes if c["metric"] == "generation_tps")
    assert gen["ratio"] == pytest.approx(0.8) and gen["change_pct"] == pytest.approx(-20.0)
    assert gen["before"] == "mlx 0.30.0 / mlx-lm 0.28.0" and gen["after"].startswith("mlx 0.31.0")
    text = run_mlxd("regressions", "--model", "qwen", check=True).stdout
    assert "-20.0%" in text and "95% confidence intervals" in text
    assert run_json("regressions", "--model", "phi") == []
    assert "No speed change" in run_mlxd("regressions", "--since", "1d", check=True).stdout


def test_sql_export_loads_into_sqlite_with_system_columns(planted, tmp_path):
    sql = run_mlxd("results", "--sql", "--limit", "0", check=True).stdout
    assert sql.startswith("CREATE TABLE IF NOT EXISTS mlxd_results (")
    db = sqlite3.connect(tmp_path / "export.db")
    db.executescript(sql)
    rows = run_json("results", "--limit", "0")
    (count,) = db.execute("select count(*) from mlxd_results").fetchone()
    assert count == len(rows) == 11
    got = db.execute(
        "select host, chip, ram_bytes, os, mlx_version, mlx_lm_version, perplexity,"
        " kl_mean, quality_base from mlxd_results where model = 'llama-4bit' "
        "and depth = 0"
    ).fetchone()
    assert got == (
        "studio",
        "Apple M3 Max",
        16 * GB,
        "Darwin 15.1",
        "0.30.0",
        "0.28.0",
        pytest.approx(8.2),
        0.02,
        "llama",
    )
    four = next(r for r in rows if r["model"] == "llama-4bit")
    assert four["kl_mean"] == 0.02 and four["quality_base"] == "llama"
    csv_header = run_mlxd("results", "--csv", check=True).stdout.splitlines()[0].split(",")
    assert {"host", "chip", "ram_bytes", "mlx_version", "mlx_lm_version", "kl_mean"} <= set(
        csv_header
    )
    table = run_mlxd("results", check=True).stdout
    assert "GEN TOK/S ±SD" in table and "± is the standard deviation" in table
    both = run_mlxd("results", "--sql", "--json")
    assert both.returncode == 2 and "Cannot use --sql and --json together" in both.stderr


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_report_renders_in_chromium(planted, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    out = tmp_path / "report.html"
    run_mlxd("report", "--format", "html", "-o", str(out), check=True)
    html = out.read_text()
    # nothing to fetch: no src/href that leaves the file, no CSS import
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", html)
    assert "@import" not in html and "url(http" not in html
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            # llama's five variants, qwen and phi: one point each in the overview chart
            assert page.locator("#points-speed-memory use").count() == 7
            assert page.locator("#points-quality-llama use").count() == 5
            # the frontier: base (KL 0), 8bit, 4bit, 3bit -- mxfp4 is beaten by 4bit
            assert page.locator("#pareto-llama use").count() == 4
            assert page.locator("[id^=bars-generation-llama-]").count() == 5
            assert page.locator("#depth-llama-0").count() == 1
            assert page.locator("#loss-3-train use").count() == 3
            assert page.locator("#chart-history-qwen").count() == 1
            assert page.locator("svg").count() >= 7
            cells = "#precision-llama tbody td:nth-child(7)"  # after Variant, Method, Model...

            def speeds() -> list[float]:
                return [float(t.split()[0]) for t in page.locator(cells).all_inner_texts()]

            assert speeds() == [20.0, 40.0, 60.0, 55.0, 70.0]  # by bits per weight
            header = page.locator("#precision-llama th", has_text="Generation tok/s")
            header.click()
            assert speeds() == [20.0, 40.0, 55.0, 60.0, 70.0]
            header.click()
            assert speeds() == [70.0, 60.0, 55.0, 40.0, 20.0]
            assert header.get_attribute("aria-sort") == "descending"
            assert requests == [out.as_uri()]  # nothing fetched from anywhere
        finally:
            browser.close()


@pytest.mark.daemon
def test_after_real_jobs_quality_sits_beside_speed(daemon, tiny_model_dir):
    add_tiny(tiny_model_dir)
    daemon.start()
    out = run_mlxd(
        "sweep",
        "tiny",
        "--bits",
        "4",
        "-p",
        "16",
        "-g",
        "8",
        "-n",
        "2",
        "--max-tokens",
        "64",
        "--wait",
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    results = run_json("results")
    assert {r["model"] for r in results} == {"tiny", "tiny-4bit-g64"}
    four = next(r for r in results if r["model"] == "tiny-4bit-g64")
    assert four["kl_mean"] > 0 and four["perplexity"] > 1 and four["quality_base"] == "tiny"
    assert four["mlx_version"] and four["host"]
    quality = run_json("quality", "list")
    assert {q["model"] for q in quality} == {"tiny", "tiny-4bit-g64"}
    assert all(q["mlx_version"] and q["mlx_lm_version"] and q["host"] for q in quality)
    listed = run_mlxd("quality", "list", check=True).stdout
    assert "tiny-4bit-g64" in listed and "PERPLEXITY" in listed
    shown = run_mlxd("models", "show", "tiny-4bit-g64", check=True).stdout
    (line,) = [ln for ln in shown.splitlines() if ln.startswith("quality ")]
    assert "perplexity" in line and "vs tiny: KL" in line and "top-1" in line
    assert len(run_json("models", "show", "tiny-4bit-g64")["quality_runs"]) == 1
    md = run_mlxd("report", "-o", "-", check=True).stdout
    rows = {r[2]: [r[0], *r[2:]] for r in _md_rows(md, "| Variant | Method | Model | Bits/w")}
    assert list(rows) == ["tiny", "tiny-4bit-g64"]
    assert rows["tiny-4bit-g64"][5].startswith(f"{four['generation_tps_mean']:,.1f}")
    assert rows["tiny-4bit-g64"][8] == f"{four['kl_mean']:.3g}"
    assert "succeeded" in md.split("## Jobs since")[1]
    # several models in one command: one job each, one table at the end
    both = run_mlxd(
        "bench",
        "tiny",
        "tiny-4bit-g64",
        "-p",
        "16",
        "-g",
        "8",
        "-n",
        "2",
        "--depth",
        "0,16",
        "--max-kv-size",
        "64",
        "-pg",
        "8,4",
        "--wait",
        timeout=600,
    )
    assert both.returncode == 0, both.stdout + both.stderr
    assert both.stdout.count("Queued job") == 2 and both.stdout.count("GEN TOK/S ±SD") == 1
    table = both.stdout.split("GEN TOK/S ±SD")[1]
    lines = table.splitlines()
    # (16, 8) and the -pg point (8, 4), each at depth 0 and 16
    assert sum(" tiny-4bit-g64 " in line for line in lines) == 4
    assert sum(" tiny " in line for line in lines) == 4
    runs = [r for r in run_json("results") if r["job_id"] == run_json("jobs", "list")[-1]["id"]]
    assert {(r["prompt_tokens"], r["gen_tokens"], r["depth"]) for r in runs} == {
        (16, 8, 0),
        (16, 8, 16),
        (8, 4, 0),
        (8, 4, 16),
    }
    assert all(r["max_kv_size"] == 64 and r["combined_tps_mean"] > 0 for r in runs)
    jobs = run_json("jobs", "list")
    last = jobs[-1]
    log = (daemon.home / "logs" / f"job-{last['id']}.log").read_text()
    assert "trial 1 p=16 g=8 b=1 depth=16 kv_bits=None max_kv=64: prompt" in log
    listed = run_mlxd("jobs", "list", check=True).stdout
    assert "-p 16 -g 8 --depth 0,16 --max-kv-size 64 -pg 8,4 -n 2" in listed
    rec = run_json("recommend", "tiny", "--max-kl", "100")
    assert rec["pick"]["model"] in {"tiny", "tiny-4bit-g64"}
    assert json.dumps(rec)  # a plain JSON object


def test_jobs_list_says_what_a_queued_job_waits_for(tiny_model_dir):
    add_tiny(tiny_model_dir)
    run_mlxd("bench", "tiny", "-b", "1,2", check=True)  # no daemon: stays queued
    run_mlxd("bench", "tiny", "--after", "1", check=True)
    lines = run_mlxd("jobs", "list", check=True).stdout.splitlines()
    assert "bench tiny -p 512 -g 128 -b 1,2 -n 3" in lines[1]
    assert lines[2].rstrip().endswith("waiting for job 1")


def test_nightly_digest_is_a_periodic_task_that_writes_the_last_24_hours(planted, tmp_path):
    from huey import SqliteHuey

    from mlxd.daemon.digest import TASK_NAME, schedule_digest, utc_time_of

    huey = SqliteHuey("digest-test", filename=str(tmp_path / "queue.db"), utc=True)
    schedule_digest(huey, paths(), "07:30")
    hour, minute = utc_time_of(7, 30)
    at = datetime.now(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    (task,) = huey.read_periodic(at.replace(tzinfo=None))
    assert task.name == TASK_NAME
    assert huey.read_periodic((at + timedelta(minutes=1)).replace(tzinfo=None)) == []
    huey.execute(task)
    files = sorted((paths().home / "reports").iterdir())
    assert [f.suffix for f in files] == [".html", ".md"]
    md = files[1].read_text()
    assert md.startswith("# mlxd nightly digest: the last 24 hours")
    # qwen's run from two days ago is outside the window: no version change to flag
    assert "## Model: qwen" in md and "No speed change beyond the measured noise" in md
    assert "1 failed, 2 succeeded" in md
    service = run_mlxd("daemon", "install", "--dry-run", "--digest", "07:30", check=True)
    assert "--digest 07:30" in service.stdout
    bad = run_mlxd("daemon", "start", "--digest", "25:00")
    assert bad.returncode == 2 and "--digest takes a time of day as HH:MM" in bad.stderr


def test_sweep_takes_microscaling_modes_and_a_dtype(tiny_model_dir):
    add_tiny(tiny_model_dir)
    out = run_mlxd(
        "sweep", "tiny", "--bits", "4", "--mode", "mxfp4,nvfp4", "--dtype", "bfloat16", check=True
    ).stdout
    assert "3 variant(s) + base" in out
    quantize = [j["params"] for j in run_json("jobs", "list") if j["kind"] == "quantize"]
    assert [(q["mode"], q["bits"], q["group_size"], q["dtype"]) for q in quantize] == [
        ("affine", 4, 64, "bfloat16"),
        ("mxfp4", 4, 32, "bfloat16"),
        ("nvfp4", 4, 16, "bfloat16"),
    ]
    bad = run_mlxd("sweep", "tiny", "--mode", "int3")
    assert bad.returncode == 2 and "'int3' is not one of mxfp4, nvfp4, mxfp8" in bad.stderr


def test_markdown_report_and_recommend_stay_light(planted, mlxd_home):
    """Read commands import neither matplotlib, nor sqlmodel, nor mlx."""
    code = (
        "import sys\nfrom mlxd.cli.main import cli\n"
        "for args in (['report', '-o', '-'], ['recommend', 'llama'], ['regressions']):\n"
        "    try:\n        cli.main(args)\n    except SystemExit:\n        pass\n"
        "sys.stderr.write(repr(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'matplotlib', 'sqlmodel', 'sqlalchemy', 'alembic', 'mlx'})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=mlxd_env(mlxd_home),
        check=True,
    )
    assert proc.stderr.splitlines()[-1] == "[]"  # (recommend's note on the memory it used)
    assert "## Model: llama" in proc.stdout
