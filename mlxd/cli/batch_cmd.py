"""Queued generation work: mlxd batch, mlxd cache-prompt."""

from __future__ import annotations

from pathlib import Path

import click

from mlxd.cli.context import BadUsage, UserError, catalog_errors, get_paths, get_reader, get_store
from mlxd.cli.output import echo_json, human_bytes, render_table, row_dict
from mlxd.cli.params import spec_default
from mlxd.cli.sampling_opts import pop_sampling, sampling_options
from mlxd.cli.submit import foreground_runner, job_options, model_ref, submit
from mlxd.jobs.batch import Spec as BatchSpec


def _run_here(kind: str, spec) -> int:
    """Run a job in this process's child now (no daemon), like `models synth`."""
    from mlxd.jobs import load_kind
    from mlxd.scheduling import foreground_job

    job_id = foreground_job(kind, spec, paths=get_paths())
    click.echo(f"Running job {job_id}: {load_kind(kind).describe(spec)}", err=True)
    outcome = foreground_runner().handle(job_id)
    if outcome is None or outcome.status != "succeeded":
        raise UserError(f"job {job_id} failed: {outcome.error if outcome else 'not run'}")
    return job_id


def _check_cache_for(ref: str | None, model_id: int | None) -> None:
    if ref is None or model_id is None:
        return
    from mlxd.cli.generate_cmd import usable_prompt_cache

    usable_prompt_cache(ref, get_store().resolve_model(model_id))


@click.command()
@click.argument("ref")
@click.option(
    "--prompts",
    "prompts_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL: per line a prompt string, a messages list, or an object with "
    "'prompt'/'messages' and an optional 'max_tokens'",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the outputs go, one JSON line per prompt (default: PROMPTS.out.jsonl)",
)
@click.option(
    "-b",
    "--batch-size",
    type=click.IntRange(min=1),
    default=spec_default(BatchSpec, "batch_size"),
    show_default=True,
    help="Sequences decoded together",
)
@sampling_options
@click.option("--raw", is_flag=True, help="Do not apply the chat template to text prompts")
@click.option(
    "--prompt-cache", help="A prompt cache every prompt continues (see 'mlxd cache-prompt')"
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file")
@click.option("--foreground", is_flag=True, help="Run now in this process instead of queueing")
@job_options
@catalog_errors
def batch(
    ref,
    prompts_file,
    output,
    batch_size,
    raw,
    prompt_cache,
    force,
    foreground,
    wait,
    after,
    priority,
    timeout_s,
    pool,
    **kwargs,
):
    """Generate for every line of a JSONL file with batched generation (a job)."""
    from mlxd.jobs.batch import Spec, check_context, read_prompts

    sampling = pop_sampling(kwargs)
    prompts = read_prompts(prompts_file)
    output = output or prompts_file.with_name(prompts_file.stem + ".out.jsonl")
    if output.exists() and not force:
        raise BadUsage(f"{output} exists; pass --force to overwrite it or -o another file")
    if not output.parent.is_dir():
        raise BadUsage(f"the folder of {output} does not exist")
    ref, model_id = model_ref(ref, after)
    _check_cache_for(prompt_cache, model_id)
    if model_id is not None:
        model = get_store().resolve_model(model_id)
        check_context(prompts, Path(model.path), model.name, str(prompts_file))
    spec = Spec(
        model=ref,
        model_id=model_id,
        prompts_file=str(prompts_file.resolve()),
        output_file=str(output.resolve()),
        batch_size=batch_size,
        max_tokens=sampling.max_tokens,
        sampling=sampling.to_dict(),
        raw=raw,
        prompt_cache=prompt_cache,
    )
    if foreground:
        job_id = _run_here("batch", spec)
        result = get_store().get_job(job_id).result
        click.echo(
            f"Wrote {len(prompts)} outputs to {output} "
            f"({result.get('generation_tps')} tok/s over the batch)"
        )
        return
    submit("batch", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s, pool=pool)


@click.command("cache-prompt")
@click.argument("ref", required=False)
@click.option("--prompt", help="The text to prefill and keep")
@click.option(
    "--file",
    "file_",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the text from a file",
)
@click.option(
    "--system", help="Cache a chat system prompt (in the model's template) for 'mlxd chat'"
)
@click.option("--name", help="Name of the cache (default: REF-prompt-HASH)")
@click.option("--kv-bits", type=click.Choice(["4", "8"]), help="Quantize the saved KV cache")
@click.option("--list", "list_", is_flag=True, help="List the prompt caches instead")
@click.option("--rm", metavar="CACHE", help="Remove a prompt cache (its file too)")
@click.option("json_", "--json", is_flag=True, help="Output as JSON (with --list)")
@click.option("--foreground", is_flag=True, help="Run now in this process instead of queueing")
@job_options
@catalog_errors
def cache_prompt(
    ref,
    prompt,
    file_,
    system,
    name,
    kv_bits,
    list_,
    rm,
    json_,
    foreground,
    wait,
    after,
    priority,
    timeout_s,
    pool,
):
    """Prefill a prompt once and keep its KV cache for later runs."""
    if list_ or rm:
        if ref or prompt or file_ or system:
            raise BadUsage("--list and --rm take no model or prompt")
        if rm:
            store = get_store()
            cache = store.resolve_prompt_cache(rm)
            store.delete_prompt_cache(cache.id)
            click.echo(f"Removed prompt cache {cache.name}")
            return
        _list_caches(json_)
        return
    store = get_store()
    if ref is None:
        raise BadUsage("name a model: mlxd cache-prompt REF --prompt TEXT")
    if sum(x is not None for x in (prompt, file_, system)) != 1:
        raise BadUsage("give exactly one of --prompt TEXT, --file FILE or --system TEXT")
    from mlxd.jobs.cache_prompt import Spec

    text = file_.read_text(encoding="utf-8") if file_ is not None else (prompt or system)
    ref, model_id = model_ref(ref, after)
    spec = Spec(
        model=ref,
        model_id=model_id,
        text=text,
        name=name,
        kv_bits=int(kv_bits) if kv_bits else None,
        as_system=system is not None,
    )
    if store.find_prompt_cache(spec.name) is not None:
        raise BadUsage(f"a prompt cache named '{spec.name}' already exists; pass --name")
    if foreground:
        _run_here("cache_prompt", spec)
        cache = store.resolve_prompt_cache(spec.name)
        click.echo(
            f"Made prompt cache {cache.id}: {cache.name} ({cache.num_tokens} tokens, "
            f"{human_bytes(cache.size_bytes)}) at {cache.path}"
        )
        return
    submit(
        "cache_prompt", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s,
        pool=pool,
    )  # fmt: skip


def _list_caches(json_: bool) -> None:
    reader = get_reader()
    caches = reader.prompt_caches()
    names = {m.id: m.name for m in reader.models()}
    if json_:
        echo_json([{**row_dict(c), "model": names.get(c.model_id)} for c in caches])
        return
    rows = [
        (
            c.id,
            c.name,
            names.get(c.model_id),
            c.num_tokens,
            c.kv_bits or "",
            human_bytes(c.size_bytes),
        )
        for c in caches
    ]
    click.echo(render_table(["ID", "NAME", "MODEL", "TOKENS", "KV BITS", "SIZE"], rows))
