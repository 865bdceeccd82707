"""mlxd generate: stream text from a model, in this process (no queue)."""

from __future__ import annotations

import sys

import click

from mlxd.cli.common import UserError, catalog_errors, get_store


@click.command()
@click.argument("ref")
@click.option("--prompt", required=True, help="The prompt ('-' reads it from stdin)")
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--temp", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--top-p", type=click.FloatRange(0, 1), default=1.0, show_default=True)
@click.option("--seed", type=int, help="Sampling seed")
@click.option("--raw", is_flag=True, help="Do not apply the chat template")
@click.option("--adapter", metavar="ADAPTER", help="Run with this fine-tuned adapter (unfused)")
@click.option("--stats/--no-stats", default=True, help="Print speed and memory at the end (stderr)")
@catalog_errors
def generate(ref, prompt, max_tokens, temp, top_p, seed, raw, adapter, stats):
    """Generate text from a model, streamed to the terminal."""
    from pathlib import Path

    model = get_store().resolve_model(ref)
    if not Path(model.path).is_dir():
        raise UserError(f"model '{model.name}' has no folder at {model.path} (was it deleted?)")
    adapter_path = None
    if adapter is not None:
        from mlxd.jobs.finetune_use import adapter_for

        adapter_path = adapter_for(get_store(), adapter, model)
    if prompt == "-":
        prompt = sys.stdin.read()
    from mlxd.engine.generate import generate_stream

    try:
        stream = generate_stream(Path(model.path), prompt, max_tokens=max_tokens, temp=temp,
                                 top_p=top_p, seed=seed, raw=raw,
                                 adapter_path=adapter_path)  # fmt: skip
        for piece in stream:
            click.echo(piece, nl=False)
            sys.stdout.flush()
    except (OSError, ValueError) as e:
        raise UserError(f"generation failed: {e}") from None
    click.echo()
    st = getattr(stream, "stats", None)
    if stats and st is not None:
        click.echo(
            f"[{st.prompt_tokens} prompt tokens at {st.prompt_tps:.1f} tok/s, "
            f"{st.generated_tokens} generated at {st.generation_tps:.1f} tok/s, "
            f"peak memory {st.peak_memory_bytes / 1e6:.0f} MB]",
            err=True,
        )
