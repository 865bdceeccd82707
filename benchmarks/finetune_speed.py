"""Training speed: mlxd's finetune job against `mlx_lm.lora` run directly, interleaved.

On one synth model and one data set in a temporary MLXD_HOME, with the same settings, it
runs round after round (the order alternates each round):

  A. `mlxd finetune ... --wait` through a real daemon; figures from the job's step rows;
  B. mlx-lm's own `mlx_lm.lora` entry point (`main()`, its own process, same argv an
     `mlx_lm.lora --train ...` user types); figures from its reporting callbacks, which
     this file observes by wrapping `get_reporting_callbacks` (nothing else is changed).

Both count it/s and tokens/s over the reports after the first (the first includes the
compile of the step); peak memory is MLX's own peak (active memory) as each reports it.
Prints the ratio mlxd / mlx-lm (target: at least 0.97) and writes
benchmarks/last-finetune-run.json.

    .venv/bin/python benchmarks/finetune_speed.py [--rounds 3] [--size small] [--iters 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
TARGET_RATIO = 0.97


def direct_lora(argv: list[str], out: str) -> None:
    """B: mlx_lm.lora's main() with its own argv; the reports are written to `out`."""
    import mlx_lm.lora as lora
    from mlx_lm.tuner.callbacks import TrainingCallback

    reports: list[dict[str, Any]] = []

    class Recorder(TrainingCallback):
        def on_train_loss_report(self, info):
            reports.append(dict(info))

    original = lora.get_reporting_callbacks

    def observed(*args, **kwargs):
        inner = original(*args, **kwargs)

        class Both(TrainingCallback):
            def on_train_loss_report(self, info):
                Recorder.on_train_loss_report(recorder, info)
                if inner is not None:
                    inner.on_train_loss_report(info)

            def on_val_loss_report(self, info):
                if inner is not None:
                    inner.on_val_loss_report(info)

        return Both()

    recorder = Recorder()
    lora.get_reporting_callbacks = observed
    sys.argv = ["mlx_lm.lora", *argv]
    lora.main()
    Path(out).write_text(json.dumps(reports))


def summarise(reports: list[dict[str, Any]], steps_per_report: int) -> dict[str, float]:
    """it/s and tok/s over the reports after the first, and the peak memory."""
    steady = reports[1:] or reports
    seconds = sum(steps_per_report / r["its"] for r in steady)
    tokens = sum(r["tokens"] for r in steady)
    return {
        "it_per_s": len(steady) * steps_per_report / seconds,
        "tok_per_s": tokens / seconds,
        "peak_memory_bytes": max(r["peak"] for r in reports),
    }


def run_mlxd(env, data: Path, settings: dict[str, Any], name: str) -> dict[str, float]:
    args = [PY, "-m", "mlxd", "finetune", "bench", "--data", str(data), "--name", name, "--wait"]
    for k, v in settings.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    shown = subprocess.run(
        [PY, "-m", "mlxd", "adapters", "show", name, "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    steps = json.loads(shown.stdout)["steps"]
    # trained_tokens is cumulative: each report's own tokens are the difference.
    reports, before = [], 0
    for s in steps:
        reports.append(
            {
                "its": s["iterations_per_s"],
                "tokens": s["trained_tokens"] - before,
                "peak": s["peak_memory_bytes"],
            }
        )
        before = s["trained_tokens"]
    return summarise(reports, settings["steps_per_report"])


def run_direct(env, model: Path, data: Path, settings: dict[str, Any], work: Path) -> dict:
    out = work / f"direct-{time.monotonic_ns()}.json"
    argv = [
        "--model",
        str(model),
        "--train",
        "--data",
        str(data),
        "--adapter-path",
        str(work / "direct-adapters"),
        "--fine-tune-type",
        "lora",
    ]
    for k, v in settings.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.finetune_speed import direct_lora; direct_lora({argv!r}, {str(out)!r})"  # noqa: E501
    subprocess.run([PY, "-c", code], env=env, check=True, capture_output=True, text=True)
    raw = json.loads(out.read_text())
    reports, before = [], 0
    for r in raw:
        reports.append(
            {
                "its": r["iterations_per_second"],
                "tokens": r["trained_tokens"] - before,
                "peak": int(r["peak_memory"] * 1e9),
            }
        )
        before = r["trained_tokens"]
    return summarise(reports, settings["steps_per_report"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="small", choices=["tiny", "small", "base"])
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    settings = {
        "iters": args.iters,
        "batch_size": args.batch_size,
        "num_layers": 4,
        "learning_rate": 1e-4,
        "steps_per_report": 10,
        "steps_per_eval": 100000,
        "save_every": 100000,
        "max_seq_length": 256,
        "seed": 0,
    }

    with tempfile.TemporaryDirectory(prefix="mlxd-ftbench-") as tmp:
        work = Path(tmp)
        home = work / "home"
        env = dict(os.environ, MLXD_HOME=str(home), HF_HUB_OFFLINE="1")
        subprocess.run(
            [PY, "-m", "mlxd", "models", "synth", "bench", "--size", args.size],
            env=env,
            check=True,
            capture_output=True,
        )
        model = home / "models" / "bench"
        data = work / "data"
        data.mkdir()
        corpus = (REPO / "mlxd/data/corpus.txt").read_text().split("\n\n")
        lines = [p.strip() for p in corpus if len(p.strip()) > 200][:64]
        (data / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
        daemon = subprocess.Popen(
            [PY, "-m", "mlxd", "daemon", "start", "--foreground"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(2)
            results: dict[str, list[dict]] = {"mlxd": [], "mlx_lm": []}
            for i in range(args.rounds):
                order = ["mlxd", "mlx_lm"] if i % 2 == 0 else ["mlx_lm", "mlxd"]
                for who in order:
                    if who == "mlxd":
                        r = run_mlxd(env, data, settings, f"run{i}")
                    else:
                        r = run_direct(env, model, data, settings, work)
                    results[who].append(r)
                    print(
                        f"round {i + 1} {who:7s} {r['it_per_s']:7.2f} it/s "
                        f"{r['tok_per_s']:9.1f} tok/s  peak {r['peak_memory_bytes'] / 1e6:7.1f} MB",
                        flush=True,
                    )
        finally:
            daemon.terminate()
            daemon.wait(30)

    med = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in results.items()}
    ratio_it = med["mlxd"]["it_per_s"] / med["mlx_lm"]["it_per_s"]
    ratio_tok = med["mlxd"]["tok_per_s"] / med["mlx_lm"]["tok_per_s"]
    print()
    print(
        f"{'':8s} {'it/s':>8s} {'tok/s':>10s} {'peak MB':>9s}   (medians of {args.rounds} rounds, "
        f"{args.size} synth model, batch {args.batch_size}, {args.iters} iters)"
    )
    for w in ("mlxd", "mlx_lm"):
        m = med[w]
        print(
            f"{w:8s} {m['it_per_s']:8.2f} {m['tok_per_s']:10.1f} {m['peak_memory_bytes'] / 1e6:9.1f}"
        )
    verdict = "meets" if min(ratio_it, ratio_tok) >= TARGET_RATIO else "misses"
    print(
        f"ratio mlxd/mlx_lm: it/s {ratio_it:.3f}, tok/s {ratio_tok:.3f} "
        f"({verdict} the {TARGET_RATIO} target)"
    )
    out = {
        "settings": settings,
        "size": args.size,
        "rounds": results,
        "median": med,
        "ratio_it_per_s": ratio_it,
        "ratio_tok_per_s": ratio_tok,
    }
    (REPO / "benchmarks" / "last-finetune-run.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
