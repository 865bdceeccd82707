"""What a person reads (issue 17's output defects): a unit per value, no exponents, tables
that fit, empty lists that still say their columns, notes where mlxd decides for the user.
A small planted catalog (no daemon, no MLX): cheap."""

from __future__ import annotations

import csv
import io
import re
import signal
import subprocess
import sys

import pytest

from mlxd.catalog.store import Store
from mlxd.config import paths
from tests.conftest import add_tiny, mlxd_env, run_json, run_mlxd, wait_for
from tests.test_reports import _model, _quality, _run, _system

EXPONENT = re.compile(r"\d[eE][+-]?\d")
SMALL_GB = re.compile(r"\b0\.\d+ GB\b")


@pytest.fixture
def small(mlxd_home):
    """A family of tiny models: megabytes, a perplexity past 1000, a KL near 1e-5."""
    store = Store(paths())
    machine = _system(store, "0.30.0")
    base = _model(store, "wee", size=12_300_000)
    four = _model(store, "wee-4bit", base, size=3_400_000, bpw=4.5, bits=4)
    _run(store, base, machine, [200.0, 201.0, 199.0], peak=20_000_000)
    _run(store, four, machine, [300.0, 301.0, 299.0], peak=8_000_000)
    _quality(store, base, None, 1050.3, None, None)
    _quality(store, four, base, 1234.5, 0.0000123, 0.9)
    store.close()


def test_small_memory_and_sizes_read_in_their_own_unit(small):
    out = run_mlxd("recommend", "wee", "--memory", "16GB", check=True).stdout
    assert "needs 8.0 MB of 16.0 GB" in out, out
    report = run_mlxd("report", "-o", "-", check=True).stdout
    assert not SMALL_GB.search(out + report), SMALL_GB.findall(out + report)
    assert "needs 8.0 MB" in report


def test_no_exponent_in_what_a_person_reads(small):
    texts = {
        args: run_mlxd(*args, check=True).stdout
        for args in (
            ("results",),
            ("results", "--wide"),
            ("quality", "list"),
            ("models", "show", "wee-4bit"),
            ("report", "-o", "-"),
        )
    }
    for args, text in texts.items():
        assert not EXPONENT.search(text), (args, EXPONENT.findall(text))
    assert "1050" in texts[("quality", "list")] and "0.0000123" in texts[("quality", "list")]
    assert "1234" in texts[("results",)]
    # The line `--wait` ends with, and `jobs show`'s result: the job's summary values.
    from mlxd.cli.submit import short_value

    assert short_value(1050.3) == "1050" and short_value(0.0000123) == "0.0000123"
    assert short_value([1.5, 2e-5]) == "1.5, 0.00002"


def test_results_table_fits_120_columns_unless_wide(small):
    narrow = run_mlxd("results", check=True).stdout
    assert max(len(line) for line in narrow.splitlines()) <= 120, narrow
    wide = run_mlxd("results", "--wide", check=True).stdout
    header = wide.splitlines()[0]
    assert len(header.split()) > len(narrow.splitlines()[0].split())
    for col in ("TTFT", "PEAK", "MLX"):
        assert col in header, header


def test_empty_lists_keep_their_header_in_csv(mlxd_home):
    # No rows: a CSV still names its columns, so a script reading it does not break.
    lists = [("regressions",), ("jobs", "list"), ("quality", "list"), ("models", "list")]
    lists += [("adapters", "list"), ("finetune", "list"), ("machines", "list")]
    lists += [("sweep", "list"), ("models", "du")]
    for args in lists:
        out = run_mlxd(*args, "--csv", check=True).stdout
        header = next(csv.reader(io.StringIO(out)), None)
        assert header and len(header) > 2, (args, out)
        assert out.count("\n") == 1, (args, out)


def test_report_into_a_missing_folder_creates_it_and_says_so(small, tmp_path):
    target = tmp_path / "new" / "deeper" / "r.md"
    proc = run_mlxd("report", "-o", str(target), check=True)
    assert target.is_file() and target.read_text().startswith("# mlxd performance report")
    assert f"created folder {target.parent}" in proc.stderr
    again = run_mlxd("report", "-o", str(target), check=True)
    assert "created folder" not in again.stderr  # only when it did


def test_recommend_without_memory_uses_this_machines_and_says_so(small, monkeypatch):
    monkeypatch.setenv("MLXD_MEMORY_BUDGET_BYTES", "9000000")  # 9 MB: only wee-4bit fits
    proc = run_mlxd("recommend", "wee", check=True)
    notes = proc.stderr.strip().splitlines()
    assert len(notes) == 1 and "9.0 MB, this machine's budget" in notes[0], proc.stderr
    assert proc.stdout.startswith("wee-4bit (4bit-g64)") and "of 9.0 MB" in proc.stdout
    as_json = run_json("recommend", "wee")  # --json stays clean: the note is on stderr
    assert as_json["pick"]["model"] == "wee-4bit"


@pytest.mark.daemon
def test_ctrl_c_during_wait_leaves_the_job_running_and_says_how_to_follow_it(
    daemon, tiny_model_dir, mlxd_home
):
    add_tiny(tiny_model_dir)
    daemon.start()
    cli = subprocess.Popen(
        [sys.executable, "-m", "mlxd", "bench", "tiny", "-p", "32", "-g", "2000", "-n", "5"]
        + ["--wait"],
        env=mlxd_env(mlxd_home),
        # Ctrl-C must reach it even when the suite runs without job control (SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = Store(paths(mlxd_home))
    try:
        wait_for(
            lambda: cli.poll() is not None or store.list_jobs(["running"]),
            timeout=90,
            what="the bench to run",
        )
        assert cli.poll() is None, cli.communicate()
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=30)
    finally:
        store.close()
        if cli.poll() is None:
            cli.kill()
    (job,) = run_json("jobs", "list")
    assert cli.returncode == 130, err
    assert err.strip().splitlines() == [
        f"Error: interrupted; job {job['id']} goes on in the daemon: follow it with "
        f"'mlxd jobs wait {job['id']}' or 'mlxd jobs logs {job['id']} --follow'"
    ], err
    assert job["status"] == "running"  # the wait ended, not the job (the daemon stops it)


def _svg_labels(svg: str, size: float = 7) -> list[tuple[str, float, float, float]]:
    """(text, left, baseline, width) of each left-anchored label of ``size`` in an SVG."""
    from matplotlib.textpath import TextPath

    found = re.findall(
        rf'<text style="font-size: {size:g}px;[^"]*text-anchor: start" x="([\d.]+)" '
        r'y="([\d.]+)"[^>]*>([^<]*)</text>',
        svg,
    )
    return [
        (t, float(x), float(y), TextPath((0, 0), t, size=size).get_extents().width)
        for x, y, t in found
    ]


def _overlapping(labels, size: float = 7) -> list[tuple[str, str]]:
    out = []
    for i, (t1, x1, y1, w1) in enumerate(labels):
        for t2, x2, y2, w2 in labels[i + 1 :]:
            # ascent about 0.75 of the size above the baseline, descent 0.25 below
            if x1 < x2 + w2 and x2 < x1 + w1 and abs(y1 - y2) < size:
                out.append((t1, t2))
    return out


def test_chart_labels_name_each_point_once_and_do_not_overlap(mlxd_home):
    from mlxd.catalog.read import Reader
    from mlxd.reports import charts
    from mlxd.reports.data import DepthPoint, DepthSeries, build_report

    store = Store(paths())
    machine = _system(store, "0.30.0")
    base = _model(store, "wee", size=12_300_000)
    _run(store, base, machine, [200.0, 201.0, 199.0], peak=20_000_000)
    _quality(store, base, None, 10.0, None, None)
    # Two quantizations alike (two jobs made 4bit-g64): the same label, nearly the same place.
    for name, tps, kl in (("wee-4bit", 300.0, 0.0100), ("wee-4bit-b", 300.5, 0.0101)):
        m = _model(store, name, base, size=3_400_000, bpw=4.5, bits=4)
        _run(store, m, machine, [tps, tps + 1, tps - 1], peak=8_000_000)
        _quality(store, m, base, 10.1, kl, 0.9)
    store.close()
    with Reader(paths()) as reader:
        (fam,) = build_report(reader).families
    for chart in (charts.speed_quality(fam), charts.speed_memory([fam])):
        labels = [lb for lb in _svg_labels(chart.svg) if lb[0] not in ("Pareto frontier", "wee")]
        texts = [t for t, *_ in labels]  # (the legend's entries left out)
        assert len(texts) == 3 and len(set(texts)) == 3, (chart.id, texts)
        assert not _overlapping(labels), (chart.id, _overlapping(labels))
    assert "peak memory (MB)" in charts.speed_memory([fam]).svg  # tiny models: not 0.01 GB
    bars = charts.speed_bars(fam).svg
    assert "(wee-4bit)" in bars and "(wee-4bit-b)" in bars
    # Depth series of one model and host at two settings: each legend entry names its own.
    point = {"prompt_tokens": 512, "gen_tokens": 128, "batch_size": 1}
    fam.depth_series = [
        DepthSeries("wee-4bit", "studio", {**point, "kv_bits": kv}, pts)
        for kv, pts in ((None, [DepthPoint(0, 1.0, 30.0)]), (8, [DepthPoint(0, 1.0, 29.0)]))
    ]
    depth = charts.depth_chart(fam).svg
    legend = re.findall(r">(wee-4bit @studio[^<]*)</text>", depth)
    assert len(legend) == 2 and len(set(legend)) == 2, legend
