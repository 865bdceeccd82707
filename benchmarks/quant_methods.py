"""Learned quantization on SmolLM2-135M: job time through mlxd against mlx-lm's function
called directly, and KL / tok/s / bits per weight per method and bits.

    PYTHONPATH=. nice .venv/bin/python benchmarks/quant_methods.py [--out FILE]

Makes a temporary MLXD_HOME, starts a daemon (stopped at the end by its pid through `mlxd
daemon stop`), imports the SmolLM2 GGUF dequantized to float32 (tests/real_model.py fetches
it), then for each (method, bits):

- the job: `mlxd quantize smol --method M --bits B ... --wait`, its wall time (CLI start-up,
  queue and the child's model load and save included);
- for the bits in --direct-bits: the same work in a fresh process that calls mlx-lm's function
  directly (`--direct`: load, tokenize the same calibration text the same way, call
  `awq_quantize` / `gptq_quantize` / `dwq_quantize` / `estimate_sensitivities` +
  `estimate_threshold` / `mlx_lm.convert`, save); the ratio direct / job (target >= 0.95);
- `mlxd quality VARIANT --base smol` (KL, top-1 on the packaged quality text),
  `mlxd bench VARIANT` (generation tok/s) and the bits per weight the catalog records;
- accuracy: `mlxd eval VARIANT --task builtin` when this mlxd has an `eval` command (the
  hook for the eval issue's side), else blank.

Every row is appended to --out as a JSON line as soon as it is measured (a long run leaves
what it finished), and the table is printed at the end. On the CPU backend the whole run
(--bits 4,3,2 --eval) takes about an hour: GPTQ's per-column loop alone is ~2.7 minutes per
variant on SmolLM2 whatever the calibration size, AWQ's grid ~3.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
GPTQ_BITS = (2, 4, 8)


def mlxd(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLXD_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [PY, "-m", "mlxd", *args], env=env, capture_output=True, text=True, timeout=7200
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"mlxd {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def mlxd_json(home: Path, *args: str):
    return json.loads(mlxd(home, *args).stdout)


def method_args(method: str, bits: int, a) -> list[str]:
    if method == "rtn":
        return ["--bits", str(bits)]
    out = [
        "--method", method, "--bits", str(bits),
        "--calibration-samples", str(a.samples), "--calibration-length", str(a.length),
    ]  # fmt: skip
    if method == "awq":
        out += ["--n-grid", str(a.n_grid)]
    if method == "dwq":
        out += ["--batch-size", str(a.dwq_batch), "--learning-rate", str(a.dwq_lr)]
    return out


def direct(args) -> None:
    """The same work as the job, calling mlx-lm directly (own process; prints seconds)."""
    tic = time.perf_counter()
    import copy

    import mlx.core as mx
    import numpy as np
    from mlx_lm.utils import load, quantize_model, save

    src, out, method, bits = args.src, args.dst, args.direct, args.bits_one
    g = 64
    if method == "rtn":
        from mlx_lm import convert

        convert(src, out, quantize=True, q_bits=bits, q_group_size=g, dtype="float32")
        print(json.dumps({"seconds": time.perf_counter() - tic}))
        return
    mx.random.seed(0)
    model, tok, config = load(src, return_config=True)
    model.set_dtype(mx.float32)
    text = (ROOT / "mlxd" / "data" / "corpus.txt").read_text(encoding="utf-8")
    ids = tok.encode(text)
    runs = len(ids) // args.length
    chunks = np.asarray(ids[: runs * args.length], np.int32).reshape(runs, args.length)
    pick = np.sort(np.random.default_rng(0).permutation(runs)[: args.samples])
    data = mx.array(chunks[pick])
    if method == "gptq":
        from mlx_lm.quant.gptq import gptq_quantize

        model, q = gptq_quantize(model, data, bits, g, bits, g, batch_size=8)
        config["quantization"] = q
    elif method == "awq":
        from mlx_lm.quant.awq import AWQ_MODEL_CONFIGS, awq_quantize, update_config

        awq_quantize(
            model, data, AWQ_MODEL_CONFIGS[config["model_type"]], group_size=g, bits=bits,
            embed_group_size=g, embed_bits=bits, n_grid=args.n_grid,
        )  # fmt: skip
        config = update_config(model, config)
    elif method == "dynamic":
        from mlx_lm.quant.dynamic_quant import estimate_sensitivities, estimate_threshold

        high = {2: 3, 3: 4, 4: 5, 5: 6, 6: 8}[bits]
        target = round((bits + 1 + high + 1) / 2, 2)  # the Spec's default, float32 scales
        sens = dict(estimate_sensitivities(model, data, bits, g, high, g, batch_size=4))
        th = estimate_threshold(model, sens, target, bits, g, high, g)

        def pred(p, m):
            if not hasattr(m, "to_quantized"):
                return False
            return {"bits": high, "group_size": g} if sens.get(p, -1e30) > th else True

        model, config = quantize_model(model, config, g, bits, quant_predicate=pred)
    elif method == "dwq":
        import mlx.optimizers as optim
        from mlx_lm.quant.dwq import dwq_quantize

        b = args.dwq_batch
        rows = np.asarray(data).tolist()
        student = copy.deepcopy(model)
        _, config = quantize_model(student, config, g, bits)
        dwq_quantize(
            student, lambda x, i, split: model(x), optim.Adam(learning_rate=args.dwq_lr),
            [(r, 0) for r in rows[b:]], [(r, 0) for r in rows[:b]], batch_size=b,
            max_seq_length=args.length, seed=0, dtype=mx.float32,
        )  # fmt: skip
        model = student
    config["quantization_config"] = config["quantization"]
    save(out, src, model, tok, config)
    print(json.dumps({"seconds": time.perf_counter() - tic}))


def run_direct(a, src: str, method: str, bits: int, dst: Path) -> float:
    cmd = [
        PY, __file__, "--direct", method, "--bits-one", str(bits), "--src", src,
        "--dst", str(dst), "--samples", str(a.samples), "--length", str(a.length),
        "--n-grid", str(a.n_grid), "--dwq-batch", str(a.dwq_batch), "--dwq-lr", str(a.dwq_lr),
    ]  # fmt: skip
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"direct {method} {bits} failed:\n{proc.stderr[-3000:]}")
    return wall


def has_eval(home: Path) -> bool:
    return mlxd(home, "eval", "--help", check=False).returncode == 0


def measure(home: Path, a, name: str, base: str) -> dict:
    """KL, tok/s, bpw (and accuracy, when `mlxd eval` exists) of one catalog model."""
    row: dict = {}
    if name != base:
        mlxd(home, "quality", name, "--base", base, "--text-tokens", str(a.kl_tokens), "--wait")
        runs = [r for r in mlxd_json(home, "quality", "list", "--json") if r["model"] == name]
        row["kl"] = runs[-1]["kl_mean"]
        row["top1"] = runs[-1]["top1_agreement"]
    mlxd(home, "bench", name, "-p", "16", "-g", str(a.gen_tokens), "-n", "1", "--wait")
    res = [r for r in mlxd_json(home, "results", "--json") if r["model"] == name]
    row["gen_tps"] = res[-1]["generation_tps_mean"]
    model = mlxd_json(home, "models", "show", name, "--json")
    row["bpw"] = model["bits_per_weight"]
    row["label"] = res[-1]["quantization"]
    row["accuracy"] = None
    if a.eval and has_eval(home):
        mlxd(home, "eval", name, "--task", a.eval_task, "--limit", str(a.eval_limit), "--wait")
        run = mlxd_json(home, "eval", "list", "--model", name, "--json")[-1]
        row["accuracy"] = run["accuracy"]
        row["accuracy_ci"] = [run["accuracy_low"], run["accuracy_high"]]
        row["eval_items"] = run["items"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="rtn,gptq,awq,dwq,dynamic")
    p.add_argument("--bits", default="4,3,2")
    p.add_argument("--direct-bits", default="4", help="bits at which the direct call is timed")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--n-grid", type=int, default=5)
    p.add_argument("--dwq-batch", type=int, default=2)
    p.add_argument("--dwq-lr", type=float, default=1e-5)
    p.add_argument("--kl-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=16)
    p.add_argument("--eval", action="store_true", help="also `mlxd eval` (when it exists)")
    p.add_argument("--eval-task", default="builtin", help="task(s) for --eval")
    p.add_argument("--eval-limit", type=int, default=10, help="items per task for --eval")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "quant-methods.jsonl"))
    # --direct mode (internal): one direct call in its own process
    p.add_argument("--direct")
    p.add_argument("--bits-one", type=int)
    p.add_argument("--src")
    p.add_argument("--dst")
    a = p.parse_args()
    if a.direct:
        direct(a)
        return

    sys.path.insert(0, str(ROOT))
    from tests.real_model import smollm2_gguf

    gguf = smollm2_gguf()
    out = Path(a.out)
    home = Path(tempfile.mkdtemp(prefix="mlxd-quant-bench-"))
    mlxd(home, "daemon", "start")
    try:
        mlxd(home, "models", "import-gguf", str(gguf), "--dequantize", "--name", "smol",
             "--wait")  # fmt: skip
        src = mlxd_json(home, "models", "show", "smol", "--json")["path"]
        base_row = {"method": "base", "bits": None, **measure(home, a, "smol", "smol")}
        _append(out, base_row)
        rows = [base_row]
        directs = {int(b) for b in a.direct_bits.split(",")}
        for bits in [int(b) for b in a.bits.split(",")]:
            for method in a.methods.split(","):
                if method == "gptq" and bits not in GPTQ_BITS:
                    continue
                name = f"smol-{method}-{bits}"
                tic = time.perf_counter()
                mlxd(home, "quantize", "smol", "--name", name, "--wait",
                     *method_args(method, bits, a))  # fmt: skip
                job_s = time.perf_counter() - tic
                row = {"method": method, "bits": bits, "job_s": job_s}
                if bits in directs:
                    row["direct_s"] = run_direct(a, src, method, bits, home / f"direct-{name}")
                    row["ratio"] = row["direct_s"] / job_s
                row.update(measure(home, a, name, "smol"))
                _append(out, row)
                rows.append(row)
                print(_line(row), flush=True)
    finally:
        mlxd(home, "daemon", "stop", check=False)
    print(f"\nSmolLM2-135M, {a.samples} samples x {a.length} tokens of mlxd/data/corpus.txt; "
          f"KL on {a.kl_tokens} tokens of the quality text")  # fmt: skip
    for r in rows:
        print(_line(r))


def _line(r: dict) -> str:
    def f(k, fmt):
        v = r.get(k)
        return format(v, fmt) if isinstance(v, int | float) else "-"

    return (
        f"{r['method']:<8} {str(r.get('bits') or ''):>2}  {str(r.get('label') or ''):<16} "
        f"bpw {f('bpw', '.3f')}  KL {f('kl', '.4g')}  top1 {f('top1', '.3f')}  "
        f"tok/s {f('gen_tps', '.1f')}  job {f('job_s', '.1f')} s  direct {f('direct_s', '.1f')} s"
        f"  ratio {f('ratio', '.3f')}  acc {f('accuracy', '.1%')}"
    )


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
