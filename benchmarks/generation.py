"""Generation workloads against mlx-lm called directly, interleaved in one run (issue 11).

1. Batch throughput: `mlxd batch` (a real job: CLI, job row, child process, BatchGenerator)
   against `mlx_lm.batch_generate` in its own process, same model, prompts and settings.
   The figure is generation tok/s over the batch, as each side's own counters report it.
   Target: mlxd >= 0.95x.
2. Chat: time to first token of a second turn that reuses the KV cache of the first, against
   the same turn prefilled from scratch (a fresh session on the same conversation).

    .venv/bin/python benchmarks/generation.py [--rounds 3] [--size small] [--prompts 32]
        [-b 8] [-g 64]

Prints a table; writes benchmarks/last-generation.json. Nothing touches the network or the
user's MLXD_HOME.
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

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
MODEL = "gen-bench"
BATCH_TARGET = 0.95


def mlxd(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLXD_HOME=str(home), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [PY, "-m", "mlxd", *args], capture_output=True, text=True, env=env, timeout=1800, cwd=REPO
    )
    if proc.returncode != 0:
        raise SystemExit(f"mlxd {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


# -- the direct side (its own process, like mlxd's job child) --------------------------------


def direct_batch(path: str, prompts_file: str, batch_size: int, gen_tokens: int) -> dict:
    from mlx_lm import batch_generate, load

    model, tokenizer = load(path)
    lines = [json.loads(x) for x in Path(prompts_file).read_text().splitlines() if x.strip()]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True
        )
        for text in lines
    ]
    kw = {"completion_batch_size": batch_size, "prefill_batch_size": min(batch_size, 8)}
    batch_generate(model, tokenizer, [prompts[0][:8]], max_tokens=2, **kw)  # warm-up, as mlxd
    stats = batch_generate(model, tokenizer, prompts, max_tokens=gen_tokens, **kw).stats
    return {"generation_tps": stats.generation_tps, "prompt_tps": stats.prompt_tps}


def run_direct(path: Path, prompts: Path, b: int, g: int) -> float:
    out = subprocess.run(
        [PY, __file__, "--direct-batch", str(path), str(prompts), str(b), str(g)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["generation_tps"]


def run_mlxd_batch(home: Path, prompts: Path, b: int, g: int) -> float:
    out = prompts.with_name("out.jsonl")
    mlxd(
        home,
        "batch",
        MODEL,
        "--prompts",
        str(prompts),
        "-o",
        str(out),
        "-b",
        str(b),
        "--max-tokens",
        str(g),
        "--foreground",
        "--force",
    )
    runs = json.loads(mlxd(home, "results", "--json").stdout)
    return [r for r in runs if r["mode"] == "batch"][-1]["generation_tps_mean"]


# -- chat: second turn from the cache vs a full re-prefill -----------------------------------


def chat_rounds(path: Path, rounds: int) -> list[dict[str, float]]:
    from mlxd.engine.chat import ChatSession
    from mlxd.vocab.sampling import Sampling

    sampling = Sampling(max_tokens=32)
    session = ChatSession.load(path, sampling=sampling)
    first_turn = "Here is a long document to discuss. " + "The river runs to the sea. " * 80
    out = []
    for r in range(rounds + 1):  # round 0 warms up
        session.reset()
        "".join(session.reply(first_turn))
        second = "Summarise it in one line."
        fresh = ChatSession(session.model, session.tokenizer, sampling)
        fresh.messages = [*session.messages, {"role": "user", "content": second}]
        sides = ["cached", "fresh"] if r % 2 else ["fresh", "cached"]
        figures: dict[str, float] = {}
        for side in sides:
            if side == "cached":
                "".join(session.reply(second))
                figures["cached_ttft_s"] = session.last.ttft_s
                figures["cached_prompt_tokens"] = session.last.prompt_tokens
            else:
                "".join(fresh.respond())
                figures["fresh_ttft_s"] = fresh.last.ttft_s
                figures["fresh_prompt_tokens"] = fresh.last.prompt_tokens
        if r:
            out.append(figures)
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--direct-batch":
        _, _, path, prompts, b, g = sys.argv
        print(json.dumps(direct_batch(path, prompts, int(b), int(g))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="small")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("-b", "--batch-size", type=int, default=8)
    ap.add_argument("-g", "--gen-tokens", type=int, default=64)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlxd-genbench-") as tmp:
        home = Path(tmp) / "home"
        mlxd(home, "models", "synth", MODEL, "--size", args.size)
        path = Path(json.loads(mlxd(home, "models", "show", MODEL, "--json").stdout)["path"])
        prompts = Path(tmp) / "prompts.jsonl"
        prompts.write_text(
            "".join(
                json.dumps(f"Question {i}: " + "tell me more " * (i % 7 + 2)) + "\n"
                for i in range(args.prompts)
            )
        )
        batch: list[dict[str, float]] = []
        for r in range(args.rounds):
            order = ["mlxd", "direct"] if r % 2 == 0 else ["direct", "mlxd"]
            fig: dict[str, float] = {}
            for side in order:
                t = time.perf_counter()
                if side == "mlxd":
                    fig["mlxd_tps"] = run_mlxd_batch(
                        home, prompts, args.batch_size, args.gen_tokens
                    )
                else:
                    fig["direct_tps"] = run_direct(path, prompts, args.batch_size, args.gen_tokens)
                print(f"round {r + 1} {side}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
            fig["ratio"] = fig["mlxd_tps"] / fig["direct_tps"]
            batch.append(fig)
        chat = chat_rounds(path, args.rounds)

    ratio = statistics.median(f["ratio"] for f in batch)
    cached = statistics.median(f["cached_ttft_s"] for f in chat)
    fresh = statistics.median(f["fresh_ttft_s"] for f in chat)
    rows = [
        (
            "batch gen tok/s, mlxd batch",
            f"{statistics.median(f['mlxd_tps'] for f in batch):.1f}",
            "",
        ),
        (
            "batch gen tok/s, batch_generate",
            f"{statistics.median(f['direct_tps'] for f in batch):.1f}",
            "",
        ),
        (
            "batch ratio mlxd / direct (median)",
            f"{ratio:.3f}",
            f">= {BATCH_TARGET} {'PASS' if ratio >= BATCH_TARGET else 'MISS'}",
        ),
        (
            "chat 2nd turn TTFT, KV cache reused",
            f"{cached * 1000:.1f} ms",
            f"{chat[0]['cached_prompt_tokens']:.0f} tokens prefilled",
        ),
        (
            "chat 2nd turn TTFT, full re-prefill",
            f"{fresh * 1000:.1f} ms",
            f"{chat[0]['fresh_prompt_tokens']:.0f} tokens prefilled",
        ),
        ("chat re-prefill / cached (median)", f"{fresh / cached:.1f}x", ""),
    ]
    print(
        f"generation workloads: {MODEL} ({args.size}, synth), {args.prompts} prompts, "
        f"-b {args.batch_size} -g {args.gen_tokens}, {args.rounds} rounds interleaved"
    )
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name.ljust(width)}  {value:>12}  {note}")
    (REPO / "benchmarks" / "last-generation.json").write_text(
        json.dumps({"args": vars(args), "batch": batch, "chat": chat}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
