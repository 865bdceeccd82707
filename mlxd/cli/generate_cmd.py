"""mlxd generate: stream text from a model, in this process (no queue)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlxd.cli.context import BadUsage, UserError, catalog_errors, get_store
from mlxd.cli.sampling_opts import pop_sampling, sampling_options


def usable_model(ref: str, *, memory_check: bool = True, what: str = "model"):
    """The catalog model REF names, with its folder, checked against the memory budget."""
    from mlxd.formats.modelfolder import ModelFolderError, check_weights

    model = get_store().resolve_model(ref)
    if not Path(model.path).is_dir():
        raise UserError(f"{what} '{model.name}' has no folder at {model.path} (was it deleted?)")
    try:
        check_weights(Path(model.path))  # headers only: a broken file is named, not loaded
    except ModelFolderError as e:
        raise UserError(f"{what} '{model.name}' cannot be loaded: {e}") from None
    if memory_check:
        from mlxd.cli.memory_check import check_model_fits

        check_model_fits(get_store(), model)
    return model


def usable_prompt_cache(ref: str | None, model):
    """The prompt cache REF names, refused unless it was made with ``model``."""
    if ref is None:
        return None
    from mlxd.jobs.cache_prompt import check_cache_matches

    store = get_store()
    cache = store.resolve_prompt_cache(ref)

    def name_of(model_id):
        m = store.find_model(model_id)
        return m.name if m else None

    check_cache_matches(cache, model, name_of)
    return cache


def adapter_path(adapter: str | None, model) -> Path | None:
    """The folder of catalog adapter ADAPTER (name, id or path), refused unless it was trained
    on ``model`` (naming both)."""
    if adapter is None:
        return None
    from mlxd.jobs.finetune_use import adapter_for

    return adapter_for(get_store(), adapter, model)


@click.command()
@click.argument("ref")
@click.option("--prompt", required=True, help="The prompt ('-' reads it from stdin)")
@sampling_options
@click.option("--raw", is_flag=True, help="Do not apply the chat template")
@click.option("--adapter", metavar="ADAPTER", help="Run with this fine-tuned adapter (unfused)")
@click.option("--draft-model", help="A smaller model with the same tokenizer: speculative decoding")
@click.option(
    "--num-draft-tokens",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Tokens the draft model proposes per step",
)
@click.option(
    "--prompt-cache", help="A prompt cache (see 'mlxd cache-prompt'): the prompt continues it"
)
@click.option(
    "--memory-check/--no-memory-check",
    default=True,
    help="Refuse a model that clearly does not fit in memory",
)
@click.option("--stats/--no-stats", default=True, help="Print speed and memory at the end (stderr)")
@catalog_errors
def generate(
    ref,
    prompt,
    raw,
    adapter,
    draft_model,
    num_draft_tokens,
    prompt_cache,
    memory_check,
    stats,
    **kwargs,
):
    """Generate text from a model, streamed to the terminal."""
    from mlxd.cli.submit import check_context

    sampling = pop_sampling(kwargs)
    model = usable_model(ref, memory_check=False)
    check_context(model, sampling.max_tokens, "--max-tokens")
    draft = (
        usable_model(draft_model, memory_check=False, what="draft model") if draft_model else None
    )
    if memory_check:
        from mlxd.cli.memory_check import check_model_fits, model_bytes

        check_model_fits(get_store(), model, extra_bytes=model_bytes(draft) if draft else 0)
    if draft is not None and prompt_cache:
        raise BadUsage("--prompt-cache cannot be combined with --draft-model")
    if draft is not None:
        from mlxd.jobs.bench_pair import check_draft_tokenizer

        check_draft_tokenizer(model, draft)
    cache = usable_prompt_cache(prompt_cache, model)
    if prompt == "-":
        prompt = sys.stdin.read()
    from mlxd.engine.generate import generate_stream

    stream = generate_stream(
        Path(model.path),
        prompt,
        sampling=sampling,
        raw=raw,
        adapter_path=adapter_path(adapter, model),
        draft_path=Path(draft.path) if draft else None,
        num_draft_tokens=num_draft_tokens,
        prompt_cache_path=Path(cache.path) if cache else None,
    )
    try:
        for piece in stream:
            click.echo(piece, nl=False)
            sys.stdout.flush()
    except (OSError, ValueError) as e:
        raise UserError(f"generation failed: {e}") from None
    click.echo()
    st = stream.stats
    if stats:
        cached = f" after {st.cached_tokens} cached" if st.cached_tokens else ""
        click.echo(
            f"[{st.prompt_tokens} prompt tokens{cached} at {st.prompt_tps:.1f} tok/s, "
            f"first token after {st.ttft_s * 1000:.0f} ms, "
            f"{st.generated_tokens} generated at {st.generation_tps:.1f} tok/s, "
            f"peak memory {st.peak_memory_bytes / 1e6:.0f} MB]",
            err=True,
        )
        if st.acceptance_rate is not None:
            click.echo(
                f"[draft '{draft.name}': {st.draft_accepted_tokens} of {st.draft_proposed_tokens} "
                f"proposed tokens accepted ({st.acceptance_rate:.0%})]",
                err=True,
            )
        click.echo(f"[sampling: {sampling.describe()}]", err=True)
