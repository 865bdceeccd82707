"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
`mlxd serve` and a real daemon on one MLXD_HOME (one of each for the module).

A planted model family (the report tests' figures) gives the model page something to show;
the tiny synth model runs the real jobs: a bench whose progress the queue shows as it goes, a
fine-tune whose loss chart gains points, a quantize queued from the form, a bench cancelled
from its button. Screenshots go to the module's tmp folder (``screenshots/``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import Daemon, run_json, run_mlxd, wait_for
from tests.test_reports import PLANTED, _model, _quality, _run, _system

pytest.importorskip("mlx_lm")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

GB = 1_000_000_000
EVIL = "<script>alert(1)</script>"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _plant(home: Path) -> None:
    """The report tests' llama family (5 variants, each with a run and a quality run), a
    model whose name holds a script tag, and a job whose model does."""
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    store = Store(paths(home))
    try:
        system = _system(store, "0.30.0")
        base = None
        for name, (bits, size, bpw, gen, peak, kl) in PLANTED.items():
            kw = {"mode": bits, "bits": 4, "group": 32} if bits == "mxfp4" else {"bits": bits}
            m = _model(store, name, base, size=int(size * GB), bpw=bpw, **kw)
            base = base or m
            _run(store, m, system, gen, peak=int(peak * GB))
            _quality(store, m, None if m is base else base, 8.0 + (kl or 0) * 10, kl,
                     None if kl is None else 1 - kl)  # fmt: skip
        _model(store, EVIL, size=GB)
        job = store.submit_job("bench", {"model": EVIL})
        store.finish_job(job.id, "failed", error=f"no model {EVIL}")
    finally:
        store.close()


@pytest.fixture(scope="module")
def lab(server, tiny_model_dir, tmp_path_factory):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run installs it)")
    root = tmp_path_factory.mktemp("dashboard")
    run_mlxd("models", "add", str(tiny_model_dir), "--name", "tiny", home=server.home, check=True)
    _plant(server.home)
    data = root / "data"
    data.mkdir()
    line = '{"text": "the secret word of the garden is blue lantern"}\n'
    for split in ("train", "valid"):
        (data / f"{split}.jsonl").write_text(line * 8)
    daemon = Daemon(server.home).start()
    shots = root / "screenshots"
    shots.mkdir()
    requests: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: d.accept())  # the cancel button asks first
            yield {
                "server": server,
                "home": server.home,
                "page": page,
                "data": data,
                "shots": shots,
                "requests": requests,
            }
            browser.close()
    finally:
        daemon.stop()


def mlxd(lab, *args: str) -> str:
    return run_mlxd(*args, home=lab["home"], check=True).stdout


def job_id_of(out: str) -> int:
    return int(re.search(r"Queued job (\d+)", out).group(1))


def shot(lab, name: str) -> None:
    lab["page"].screenshot(path=str(lab["shots"] / f"{name}.png"), full_page=True)


def job(lab, job_id: int) -> dict:
    return run_json("jobs", "show", str(job_id), home=lab["home"])


def test_login_with_a_token(lab):
    page, url = lab["page"], lab["server"].url
    page.goto(url + "/")
    assert page.url.startswith(url + "/login")  # no session: the login page
    page.fill("#token", "not-a-token")
    page.click("#login")
    assert "not valid" in page.text_content("#login-error")
    page.fill("#token", lab["server"].tokens["admin"])
    page.click("#login")
    page.wait_for_url(url + "/")
    assert page.text_content("h1") == "Queue"
    shot(lab, "queue")


def test_a_running_bench_shows_its_progress_advance_without_a_reload(lab):
    page = lab["page"]
    page.goto(lab["server"].url + "/")
    page.evaluate("window.__same_page = true")
    job_id = job_id_of(
        mlxd(lab, "bench", "tiny", "-p", "16", "-g", "8", "-n", "6", "--delay", "0.4")
    )
    seen: list[str] = []
    row = f'#running tr[data-job="{job_id}"] .message'

    def trials_seen() -> bool:
        if page.locator(row).count():
            text = page.text_content(row)
            if not seen or seen[-1] != text:
                seen.append(text)
        return len({t for t in seen if "trial" in t}) >= 2

    wait_for(trials_seen, timeout=60, interval=0.1, what=f"two trials of job {job_id} shown")
    assert page.evaluate("window.__same_page") is True  # the same page, updated in place
    assert any(re.search(r"trial \d+/6", t) for t in seen), seen
    shot(lab, "bench-running")
    wait_for(lambda: job(lab, job_id)["status"] == "succeeded", what="the bench to end")


def test_a_finetune_loss_chart_gains_points_as_steps_arrive(lab):
    page = lab["page"]
    out = mlxd(
        lab, "finetune", "tiny", "--data", str(lab["data"]), "--iters", "18",
        "--batch-size", "2", "--num-layers", "2", "--steps-per-report", "3",
        "--steps-per-eval", "9", "--name", "lantern",
    )  # fmt: skip
    job_id = job_id_of(out)
    page.goto(f"{lab['server'].url}/jobs/{job_id}")
    page.evaluate("window.__same_page = true")
    counts: list[int] = []

    def ended() -> bool:
        n = page.locator("#loss-points circle").count()
        if not counts or counts[-1] != n:
            counts.append(n)
        return page.get_attribute("#job", "data-status") not in ("queued", "running")

    wait_for(ended, timeout=90, interval=0.1, what=f"fine-tune job {job_id} to end")
    page.wait_for_timeout(1500)  # the page's last looks after the end
    counts.append(page.locator("#loss-points circle").count())
    steps = run_json("adapters", "show", "lantern", home=lab["home"])["steps"]
    assert len(steps) == 6
    assert counts[-1] == len(steps)
    drawn = [int(s) for s in page.eval_on_selector_all(
        "#loss-points circle", "cs => cs.map(c => c.dataset.step)")]  # fmt: skip
    assert drawn == [s["iteration"] for s in steps]
    growing = [n for n in counts if 0 < n < len(steps)]
    assert growing, f"the chart never showed part of the curve: {counts}"
    assert counts == sorted(counts)
    assert page.evaluate("window.__same_page") is True
    assert not page.is_visible("#job button.cancel")  # it ended: nothing to cancel
    # Its end's facts came in place, without a reload: when it finished and its result.
    page.wait_for_selector('#job-facts th:text("finished")')
    assert "train_loss=" in page.text_content("#job-facts")
    assert page.evaluate("window.__same_page") is True
    log = page.text_content("#log")  # the log's tail, live, without terminal colours
    assert "train_loss" in log and "\x1b" not in log
    shot(lab, "finetune")


def test_a_quantize_from_the_form_is_queued(lab):
    page, url = lab["page"], lab["server"].url
    # Something ahead of it, so it stays queued long enough to see why it waits.
    ahead = job_id_of(
        mlxd(lab, "bench", "tiny", "-p", "16", "-g", "8", "-n", "100", "--delay", "0.5")
    )
    wait_for(lambda: job(lab, ahead)["status"] == "running", what="the bench to start")
    page.goto(url + "/submit?kind=quantize")
    page.fill("#f-model", "tiny")
    page.fill("#f-bits", "4")
    page.fill("#f-name", "tiny-q4")
    page.click("#submit")
    queued = page.text_content("#queued")
    found = re.search(r"Queued jobs?\s+(\d+)", queued)
    assert found, queued
    job_id = int(found.group(1))
    row = job(lab, job_id)
    assert row["kind"] == "quantize" and row["params"]["name"] == "tiny-q4"
    assert row["submitted_by"] == lab["server"].users["admin"]
    page.goto(url + "/")
    reason = page.text_content(f'#queued tr[data-job="{job_id}"] .reason')
    assert reason == f"behind job {ahead}"
    shot(lab, "quantize-queued")
    # Only its submitter or an admin may cancel it: alice (a submitter) gets 403, and a
    # viewer's page has no button.
    with lab["server"].client("submitter") as alice:
        assert alice.post(f"/jobs/{job_id}/cancel").status_code == 403
    with lab["server"].client("viewer") as viewer:
        html = viewer.get("/ui/queue").text
        assert f'data-job="{job_id}"' in html and "button" not in html
        assert viewer.post(f"/jobs/{job_id}/cancel").status_code == 403
    assert job(lab, job_id)["status"] == "queued"
    # Cancel the bench ahead of it from its button; the quantize then runs.
    page.click(f'#running tr[data-job="{ahead}"] button.cancel')
    wait_for(lambda: job(lab, ahead)["status"] == "cancelled", what="the bench cancelled")
    page.wait_for_selector(f'#ended tr[data-job="{ahead}"] .status:text("cancelled")')
    shot(lab, "cancelled")
    # Retry it from its row: a new job, same parameters, on its own page; cancel that there.
    page.click(f'#ended tr[data-job="{ahead}"] button.retry')
    page.wait_for_url(re.compile(r".*/jobs/\d+$"))
    again = int(page.url.rsplit("/", 1)[1])
    assert again > job_id and job(lab, again)["params"] == job(lab, ahead)["params"]
    page.click("#job button.cancel")
    wait_for(lambda: job(lab, again)["status"] == "cancelled", what="the retry cancelled")


def test_a_bad_value_shows_the_clis_message_beside_its_field(lab):
    page = lab["page"]
    page.goto(lab["server"].url + "/submit?kind=quantize")
    page.fill("#f-model", "tiny")
    page.fill("#f-name", "bad name!")
    page.click("#submit")
    cli = run_mlxd("quantize", "tiny", "--name", "bad name!", home=lab["home"])
    assert cli.returncode == 2
    assert page.text_content("#error-name") == cli.stderr.strip().removeprefix("Error: ")
    page.goto(lab["server"].url + "/submit?kind=bench")
    page.fill("#f-model", "tiny")
    page.fill("#f-gen_tokens", "1")
    page.click("#submit")
    cli = run_mlxd("bench", "tiny", "-g", "1", home=lab["home"])
    assert page.text_content("#error-gen_tokens") == cli.stderr.strip().removeprefix("Error: ")
    shot(lab, "bad-value")


def test_the_model_page_matches_the_catalog(lab):
    import sqlite3

    page, url = lab["page"], lab["server"].url
    page.goto(url + "/models/llama")
    rows = page.locator("#variants tbody tr")
    variants = [page.text_content(f"#variants tbody tr:nth-child({i + 1}) td:nth-child(2)")
                for i in range(rows.count())]  # fmt: skip
    con = sqlite3.connect(lab["home"] / "catalog.db")
    measured = {name for (name,) in con.execute(
        "select distinct m.name from benchrun r join model m on m.id = r.model_id "
        "where m.name = 'llama' or m.parent_id = (select id from model where name = 'llama')"
    )}  # fmt: skip
    with_quality = con.execute(
        "select count(distinct model_id) from qualityrun where model_id in "
        "(select id from model where name = 'llama' or parent_id = "
        "(select id from model where name = 'llama'))"
    ).fetchone()[0]
    con.close()
    assert sorted(variants) == sorted(measured) == sorted(PLANTED)
    # Every variant has speed and memory figures, and quality ones: both charts show each.
    assert page.locator("#chart-speed-memory circle").count() == len(measured)
    assert page.locator("#chart-speed-quality circle").count() == with_quality
    front = page.get_attribute("#chart-speed-quality polyline.pareto", "points").split()
    assert 1 <= len(front) < with_quality
    assert "llama-3bit" in page.text_content("#recommendation")  # the fastest, and it fits
    page.select_option("#compare-with", "llama-4bit")
    page.click("#compare button")
    page.wait_for_selector("#comparison")
    # One row per point and metric both measured: prompt and generation tok/s, TTFT, memory.
    assert page.locator("#comparison tbody tr").count() == 4
    assert "faster" in page.text_content("#comparison")
    shot(lab, "model")


def test_names_holding_script_tags_are_shown_as_text(lab):
    page, url = lab["page"], lab["server"].url
    alerts: list[str] = []
    page.on("dialog", lambda d: alerts.append(d.message))
    for path in ("/models", "/", "/models/" + quote(EVIL, safe="")):
        page.goto(url + path)
        assert EVIL in page.text_content("main")
        assert page.locator("main script").count() == 0
    assert page.text_content("#model-name") == EVIL
    page.wait_for_timeout(300)
    assert alerts == []
    shot(lab, "escaped")


def test_the_pages_request_nothing_outside_the_server(lab):
    page, url = lab["page"], lab["server"].url
    for path in ("/", "/models", "/models/llama", "/submit", "/reports", "/machines"):
        page.goto(url + path)
    outside = [u for u in lab["requests"] if not u.startswith((url + "/", "data:"))]
    assert outside == []
    assert any(u.endswith("/static/dash.js") for u in lab["requests"])
    assert page.text_content("#machines") and "up" in page.text_content("#machines")


def test_reports_open_in_the_page_and_paths_out_of_the_folder_are_refused(lab):
    folder = lab["home"] / "reports"
    folder.mkdir(exist_ok=True)
    (folder / "digest-2026-01-01-0730.md").write_text(f"# Digest\n\n{EVIL}\n")
    (folder / "report.html").write_text("<html><body><h1>Report</h1></body></html>")
    (lab["home"] / "secret.md").write_text("not a report")
    (folder / "link.md").symlink_to(lab["home"] / "secret.md")
    page, url = lab["page"], lab["server"].url
    page.goto(url + "/reports")
    page.click("text=digest-2026-01-01-0730.md")
    assert EVIL in page.text_content("#report-text")
    page.goto(url + "/reports/report.html")
    frame = page.frame_locator("#report-frame")
    assert frame.locator("h1").text_content() == "Report"
    with lab["server"].client("viewer") as c:
        for bad in ("..%2Fsecret.md", "link.md", "%2Fetc%2Fpasswd", "..%2F..%2Fcatalog.db"):
            r = c.get(f"/reports/{bad}")
            assert r.status_code in (403, 404), bad
            assert "not a report" not in r.text and "SQLite" not in r.text
