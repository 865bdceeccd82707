"""Learned quantization on the tiny synth model: every method through the real CLI and daemon
makes a model that loads, generates and has the bits per weight it claims; lineage holds the
calibration data's hash; a two-method sweep reuses what exists; DWQ resumes from its
checkpoint; bad input is one line and queues nothing.

The synth model has random weights: which method is better here means nothing (the real-model
tier and benchmarks/quant_methods.py compare them); these tests prove the plumbing. Few
samples of few tokens keep each job to a second or two.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Daemon, run_json, run_mlxd

CAL = ["--calibration-samples", "4", "--calibration-length", "32"]
METHODS = {
    "gptq": ["--method", "gptq", "--bits", "4"],  # the packaged calibration text
    "awq": ["--method", "awq", "--bits", "3", "--n-grid", "2", "--calibration", "{jsonl}"],
    "dwq": ["--method", "dwq", "--bits", "4", "--steps", "2", "--batch-size", "2",
            "--calibration", "{txt}"],
    "dynamic": ["--method", "dynamic", "--bits", "4", "--target-bpw", "5.5",
                "--calibration", "{txt}"],
}  # fmt: skip
CORPUS = Path(__file__).resolve().parents[1] / "mlxd" / "data" / "corpus.txt"


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    """One home: the tiny synth model and one model per learned method, made by a daemon."""
    root = tmp_path_factory.mktemp("quant")
    home = root / "mlxd-home"
    home.mkdir()
    # Short calibration files (a text and a JSONL of `text` records): less to tokenize.
    paragraphs = [p for p in CORPUS.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    files = {"txt": root / "cal.txt", "jsonl": root / "cal.jsonl"}
    files["txt"].write_text("\n\n".join(paragraphs[:12]), encoding="utf-8")
    files["jsonl"].write_text(
        "".join(json.dumps({"text": p}) + "\n" for p in paragraphs[12:24]), encoding="utf-8"
    )
    run_mlxd("models", "synth", "tiny", home=home, check=True)
    daemon = Daemon(home).start()
    made = {}
    try:
        for method, args in METHODS.items():
            args = [a.format(**files) for a in args]
            proc = run_mlxd("quantize", "tiny", *args, *CAL, "--wait", home=home)
            assert proc.returncode == 0, f"{method}:\n{proc.stdout}\n{proc.stderr}"
            made[method] = proc
    finally:
        daemon.stop()
    listed = run_mlxd("models", "list", home=home, check=True).stdout
    return {"home": home, "made": made, "listed": listed, "files": files}


def test_every_method_makes_a_model_that_loads_generates_and_has_its_bpw(lab):
    names = {
        "gptq": "tiny-gptq-4bit-g64",
        "awq": "tiny-awq-3bit-g64",
        "dwq": "tiny-dwq-4bit-g64",
        "dynamic": "tiny-dynamic-5.5bpw",
    }
    shown = {n: run_json("models", "show", n, home=lab["home"]) for n in names.values()}
    # Load each folder with mlx-lm in a fresh process, generate, and recount its bits.
    script = (
        "import json, sys\n"
        "from mlx_lm import load, generate\n"
        "from mlx_lm.utils import compute_bits_per_weight\n"
        "out = {}\n"
        "for path in sys.argv[1:]:\n"
        "    model, tok = load(path)\n"
        "    text = generate(model, tok, prompt='Bread', max_tokens=4)\n"
        "    out[path] = [compute_bits_per_weight(model), len(tok.encode(text))]\n"
        "print(json.dumps(out))\n"
    )
    paths = [shown[n]["path"] for n in names.values()]
    proc = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    for method, name in names.items():
        m = shown[name]
        bpw, generated = loaded[m["path"]]
        assert generated >= 1, name
        assert m["bits_per_weight"] == pytest.approx(bpw, rel=1e-6), name
        assert m["quant_method"] == method
    # Equal bits per weight: GPTQ's fallback (the embedding) and AWQ's embed bits follow
    # --bits, so gptq-4bit is exactly as big per weight as an rtn 4-bit model would be
    # (4 bits + a float32 scale and bias per 64 weights, plus the float32 norms).
    assert 5.0 < shown["tiny-gptq-4bit-g64"]["bits_per_weight"] < 5.1
    assert 4.0 < shown["tiny-awq-3bit-g64"]["bits_per_weight"] < 4.1
    assert shown["tiny-dwq-4bit-g64"]["bits_per_weight"] == pytest.approx(
        shown["tiny-gptq-4bit-g64"]["bits_per_weight"]
    )
    dyn = shown["tiny-dynamic-5.5bpw"]["bits_per_weight"]
    assert 5.0 < dyn <= 5.5 + 0.01  # some layers at 5 bits, none past the target
    for name in names.values():  # `models list` labels each with its method
        label = name.removeprefix("tiny-").replace("5.5bpw", f"{dyn:.1f}bpw")
        assert any(line.split()[1:2] == [name] and label in line.split() for line in
                   lab["listed"].splitlines()), (label, lab["listed"])  # fmt: skip


def test_lineage_holds_the_method_options_and_the_calibration_hash(lab):
    m = run_json("models", "show", "tiny-gptq-4bit-g64", home=lab["home"])
    cal = m["quant_options"]["calibration"]
    text = CORPUS.read_text(encoding="utf-8")
    assert cal["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert (cal["samples"], cal["length"]) == (4, 32)
    assert cal["tokens"] >= 4 * 32
    assert m["quant_options"]["options"] == {"batch_size": 8}
    d = run_json("models", "show", "tiny-dwq-4bit-g64", home=lab["home"])
    assert d["quant_options"]["options"]["steps"] == 2
    assert d["quant_options"]["dwq"]["steps"] == 2
    awq = run_json("models", "show", "tiny-awq-3bit-g64", home=lab["home"])
    jsonl = lab["files"]["jsonl"]
    assert awq["quant_options"]["calibration"]["source"] == str(jsonl.resolve())
    assert awq["quant_options"]["calibration"]["sha256"] == (
        hashlib.sha256(jsonl.read_bytes()).hexdigest()
    )
    text_show = run_mlxd("models", "show", "tiny-awq-3bit-g64", home=lab["home"], check=True)
    assert "awq-3bit-g64" in text_show.stdout
    assert "quant method     awq (n_grid 2)" in text_show.stdout
    assert "4 samples of 32 tokens" in text_show.stdout
    job = run_json("jobs", "show", str(d["created_by_job_id"]), home=lab["home"])
    assert job["params"]["method"] == "dwq"
    assert job["result"]["calibration_tokens"] == d["quant_options"]["calibration"]["tokens"]


def test_a_two_method_sweep_reuses_the_variants_already_made(lab):
    from mlxd.catalog.read import Reader
    from mlxd.config import paths
    from mlxd.jobs.sweeps import SweepRequest, plan_sweep

    req = SweepRequest(
        base="tiny",
        bits=[3, 4],
        methods=["rtn", "gptq"],
        calibration_samples=4,
        calibration_length=32,
    )
    with Reader(paths(lab["home"])) as reader:
        plan = plan_sweep(reader, req)
    by_variant = {v.variant: v for v in plan.variants}
    assert set(by_variant) == {"base", "3bit-g64", "4bit-g64", "gptq-4bit-g64"}
    assert by_variant["gptq-4bit-g64"].quantize.reused
    assert by_variant["gptq-4bit-g64"].model == "tiny-gptq-4bit-g64"
    assert not by_variant["4bit-g64"].quantize.reused  # rtn is not the gptq model
    assert plan.skipped == ["gptq 3-bit (gptq makes 2, 4, 8 bits)"]
    # Other calibration data is another variant: nothing to reuse.
    other = SweepRequest(base="tiny", bits=[4], methods=["gptq"], calibration_samples=5,
                         calibration_length=32)  # fmt: skip
    with Reader(paths(lab["home"])) as reader:
        plan = plan_sweep(reader, other)
    assert not plan.variants[1].quantize.reused


BAD = [
    (
        ["--method", "gptq", "--calibration-samples", "900"],
        r"calibration text mlxd/data/corpus.txt has [\d,]+ tokens; 900 samples of 256",
    ),
    (["--method", "dynamic", "--target-bpw", "3.5"], "cannot reach 3.5 bits per weight"),
    (["--method", "gptq", "--bits", "3"], "GPTQ packs only 2, 4 and 8 bits"),
    (["--method", "awq", "--target-bpw", "4.5"], "--target-bpw is for --method dynamic"),
    (["--target-bpw", "4.5"], "--target-bpw is for --method dynamic"),
]


@pytest.mark.parametrize("args,message", BAD, ids=lambda x: x if isinstance(x, str) else None)
def test_bad_input_is_one_line_and_queues_nothing(lab, args, message):
    import re

    before = len(run_json("jobs", "list", home=lab["home"]))
    proc = run_mlxd("quantize", "tiny", "--name", "never", *args, home=lab["home"])
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert re.search(message, lines[0]), lines[0]
    assert len(run_json("jobs", "list", home=lab["home"])) == before


def test_dwq_on_an_already_quantized_model_is_refused(lab):
    proc = run_mlxd("quantize", "tiny-gptq-4bit-g64", "--method", "dwq", home=lab["home"])
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "Error: model 'tiny-gptq-4bit-g64' is already quantized (gptq-4bit-g64); distil (DWQ) "
        "its unquantized parent 'tiny'"
    ]


def test_dwq_resumes_from_its_checkpoint(tmp_path, tiny_model_dir):
    """A DWQ run stopped after its step-2 checkpoint goes on from step 2, not from zero,
    with the optimizer's moments and step count the checkpoint kept (as a fine-tune does)."""
    import mlx.core as mx

    from mlxd.engine.learned_quant import DWQ_OPTIMIZER, DWQ_STATE, learned_quantize

    ckpt = tmp_path / "ckpt"
    kw = {
        "method": "dwq",
        "bits": 4,
        "group_size": 64,
        "texts": [CORPUS.read_text(encoding="utf-8")],
        "samples": 10,
        "length": 16,
        "options": {"steps": 4, "batch_size": 2, "checkpoint_every": 2},
        "checkpoint_dir": ckpt,
    }

    class Stop(Exception):
        pass

    def stop_at_3(step, steps, loss):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        learned_quantize(tiny_model_dir, tmp_path / "a", on_step=stop_at_3, **kw)
    state = json.loads((ckpt / DWQ_STATE).read_text())
    assert state["step"] == 2 and len(state["done"]) == 4
    saved = mx.load(str(ckpt / DWQ_OPTIMIZER))
    assert saved["step"].item() == 2
    moments = [k for k in saved if k.endswith((".m", ".v"))]
    assert any(k.endswith(".scales.m") for k in moments), moments
    assert any(mx.abs(saved[k]).max().item() > 0 for k in moments)
    steps_seen = []
    result = learned_quantize(
        tiny_model_dir, tmp_path / "b", on_step=lambda s, n, loss: steps_seen.append(s), **kw
    )
    assert result["dwq"]["resumed_at"] == 2
    assert steps_seen == [3, 4]
    # The step count went on from the checkpoint's 2: its moments were loaded, not zeroed.
    assert mx.load(str(ckpt / DWQ_OPTIMIZER))["step"].item() == 4


def test_a_cancelled_dwq_job_retried_goes_on_from_its_checkpoint(lab):
    """Through the daemon, as a user would: a DWQ job stopped after a checkpoint (frozen, then
    cancelled) and retried under its name goes on from that step, says so, and the finished
    job leaves no checkpoint behind."""
    import os
    import signal

    from tests.conftest import wait_for

    home = lab["home"]
    name = "tiny-dwq-resumed"
    state = home / "checkpoints" / "quantize" / name / "dwq-state.json"
    daemon = Daemon(home).start()
    try:
        proc = run_mlxd(
            "quantize", "tiny", "--method", "dwq", "--bits", "4", "--steps", "60",
            "--batch-size", "2", "--calibration", str(lab["files"]["txt"]),
            "--calibration-samples", "6", "--calibration-length", "16", "--name", name,
            home=home, check=True,
        )  # fmt: skip
        job_id = int(proc.stdout.split()[2].rstrip(":"))
        wait_for(state.is_file, timeout=120, interval=0.02, what="DWQ's first checkpoint")
        pid = run_json("jobs", "show", str(job_id), home=home)["pid"]
        os.kill(pid, signal.SIGSTOP)  # no further steps: the checkpoint stays where it is
        run_mlxd("jobs", "cancel", str(job_id), home=home, check=True)
        step = json.loads(state.read_text())["step"]
        assert 10 <= step < 60
        retry = run_mlxd("jobs", "retry", str(job_id), "--wait", home=home, check=True)
    finally:
        daemon.stop()
    assert retry.stderr == f"Note: the retry continues DWQ from its checkpoint at step {step}\n"
    assert not state.parent.exists()
    model = run_json("models", "show", name, home=home)
    assert model["quant_method"] == "dwq"
    assert model["quant_options"]["dwq"]["resumed_at"] == step
    assert model["quant_options"]["dwq"]["steps"] == 60
    shown = run_mlxd("models", "show", name, home=home, check=True).stdout
    assert "60 steps, final loss " in shown and f", resumed at step {step}\n" in shown
