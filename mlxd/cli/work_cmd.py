"""Job-submitting commands: mlxd convert|quantize|bench."""

from __future__ import annotations

import click

from mlxd.cli.common import BadUsage, catalog_errors, get_store, job_options, submit


def model_ref(ref: str, after: int | None) -> tuple[str, int | None]:
    """(REF, its catalog id); a REF not found yet is allowed only after another job."""
    from mlxd.catalog.store import NotFound

    try:
        # The catalog name from here on: `quantize 3` makes tiny-4bit-g64, not 3-4bit-g64.
        model = get_store().resolve_model(ref)
        return model.name, model.id
    except NotFound:
        if after is None:
            raise
        click.echo(f"Note: model '{ref}' does not exist yet; it is looked up when job "
                   f"{after} has finished.", err=True)  # fmt: skip
        return ref, None


def check_free_name(name: str) -> None:
    if get_store().find_model(name) is not None:
        raise BadUsage(
            f"a model named '{name}' already exists; pass --name or remove it with "
            f"'mlxd models rm {name}'"
        )


def int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadUsage(
            f"{what} must be a comma-separated list of whole numbers, not '{text}'"
        ) from None
    if not values:
        raise BadUsage(f"{what} needs at least one value")
    return values


@click.command()
@click.argument("ref")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]),
              help="Weights' dtype (default: float32 on the CPU backend, the model's own on Metal)")  # fmt: skip
@click.option("--name", help="Name of the new model (default: REF-mlx)")
@job_options
@catalog_errors
def convert(ref, dtype, name, wait, after, priority, timeout_s):
    """Convert a Hugging Face-format model to MLX."""
    from mlxd.jobs.convert import Spec

    ref, model_id = model_ref(ref, after)
    spec = Spec(model=ref, model_id=model_id, dtype=dtype, name=name)
    check_free_name(spec.name)
    submit("convert", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)


@click.command()
@click.argument("ref")
@click.option(
    "--bits", type=click.Choice(["2", "3", "4", "5", "6", "8"]), default="4", show_default=True
)
@click.option(
    "--group-size", type=click.Choice(["32", "64", "128"]), default="64", show_default=True
)
@click.option("--mode", type=click.Choice(["affine", "mxfp4", "nvfp4", "mxfp8"]), default="affine",
              show_default=True)  # fmt: skip
@click.option("--recipe", type=click.Choice(["mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"]),
              help="Mixed precision: more bits for the layers that matter most")  # fmt: skip
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]),
              help="dtype of scales and unquantized layers (default: float32 on CPU)")  # fmt: skip
@click.option("--name", help="Name of the new model (default: from the recipe, e.g. REF-4bit-g64)")
@job_options
@catalog_errors
def quantize(ref, bits, group_size, mode, recipe, dtype, name, wait, after, priority, timeout_s):
    """Quantize a model (affine 2-8 bits, mxfp4, nvfp4, mxfp8 or a mixed recipe)."""
    from mlxd.jobs.quantize import Spec

    ref, model_id = model_ref(ref, after)
    spec = Spec(model=ref, model_id=model_id, bits=int(bits), group_size=int(group_size),
                mode=mode, recipe=recipe, dtype=dtype, name=name)  # fmt: skip
    check_free_name(spec.name)
    submit("quantize", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)


@click.command()
@click.argument("ref")
@click.option(
    "-p", "--prompt-tokens", default="512", show_default=True, help="Prompt length(s), e.g. 128,512"
)
@click.option(
    "-g", "--gen-tokens", default="128", show_default=True, help="Tokens to generate, e.g. 64,128"
)
@click.option("-n", "--trials", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Unrecorded runs first",
)
@click.option("-b", "--batch-size", default="1", show_default=True, help="Batch size(s), e.g. 1,4")
@click.option(
    "--depth", default="0", show_default=True, help="Tokens already in the KV cache, e.g. 0,4096"
)
@click.option("--kv-bits", default=None, help="Quantized KV cache bits, e.g. 4,8")
@click.option(
    "--prefill-step-size", default="2048", show_default=True, help="Prefill chunk size(s)"
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the random prompt tokens"
)
@click.option(
    "--delay",
    "delay_s",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds between trials (cool-down)",
)
@click.option(
    "--noise-threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="Flag a run noisy when a metric's std/mean exceeds this",
)
@click.option("--serve", is_flag=True,
              help="Serving bench: mlx_lm.server under concurrent streaming clients")  # fmt: skip
@click.option("--concurrency", default="1,4", show_default=True,
              help="With --serve: simultaneous clients, e.g. 1,4,16")  # fmt: skip
@click.option("--requests", type=click.IntRange(min=1), default=16, show_default=True,
              help="With --serve: requests per concurrency")  # fmt: skip
@click.option("--draft-model", help="Also run with this draft model (speculative decoding): "
              "acceptance rate and speed-up, measured side by side")  # fmt: skip
@click.option("--num-draft-tokens", type=click.IntRange(1, 16), default=2, show_default=True,
              help="With --draft-model: tokens drafted per step")  # fmt: skip
@click.option("--prompt-cache", help="Time to first token for a -p token suffix after this "
              "cached prefix, cached and cold")  # fmt: skip
@job_options
@catalog_errors
def bench(ref, prompt_tokens, gen_tokens, trials, warmup, batch_size, depth, kv_bits,
          prefill_step_size, seed, delay_s, noise_threshold, serve, concurrency, requests,
          draft_model, num_draft_tokens, prompt_cache, wait, after, priority, timeout_s):  # fmt: skip
    """Benchmark a model: prompt and generation tok/s, time to first token, memory."""
    from mlxd.jobs.bench import Spec

    ref, model_id = model_ref(ref, after)
    if serve:
        from mlxd.jobs.serve_bench import Spec as ServeSpec

        p, g = int_list(prompt_tokens, "-p"), int_list(gen_tokens, "-g")
        if len(p) > 1 or len(g) > 1 or batch_size != "1" or depth != "0" or kv_bits:
            raise BadUsage(
                "--serve takes one -p and one -g, and no --batch-size, --depth or --kv-bits"
            )
        spec = ServeSpec(model=ref, model_id=model_id, concurrency=int_list(concurrency, "--concurrency"),
                         requests=requests, prompt_tokens=p[0], gen_tokens=g[0], warmup=warmup,
                         seed=seed)  # fmt: skip
        submit("serve_bench", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)
        return
    if draft_model or prompt_cache:
        _bench_pair(ref, model_id, prompt_tokens, gen_tokens, trials, warmup, seed, batch_size,
                    depth, kv_bits, draft_model, num_draft_tokens, prompt_cache,
                    dict(wait=wait, after=after, priority=priority, timeout_s=timeout_s))  # fmt: skip
        return
    spec = Spec(
        model=ref,
        model_id=model_id,
        prompt_tokens=int_list(prompt_tokens, "-p"),
        gen_tokens=int_list(gen_tokens, "-g"),
        batch_size=int_list(batch_size, "--batch-size"),
        depth=int_list(depth, "--depth"),
        kv_bits=int_list(kv_bits, "--kv-bits") if kv_bits else [None],
        prefill_step_size=int_list(prefill_step_size, "--prefill-step-size"),
        trials=trials,
        warmup=warmup,
        seed=seed,
        delay_s=delay_s,
        noise_threshold=noise_threshold,
    )
    submit("bench", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)


def _bench_pair(ref, model_id, prompt_tokens, gen_tokens, trials, warmup, seed, batch_size,
                depth, kv_bits, draft_model, num_draft_tokens, prompt_cache, job_kw):  # fmt: skip
    from mlxd.jobs.bench_pair import Spec

    if draft_model and prompt_cache:
        raise BadUsage("--draft-model and --prompt-cache are separate benchmarks; pick one")
    if batch_size != "1" or depth != "0" or kv_bits:
        raise BadUsage(
            "--draft-model and --prompt-cache take no --batch-size, --depth or --kv-bits"
        )
    draft_id = None
    if draft_model:
        draft_model, draft_id = model_ref(draft_model, job_kw["after"])
    if prompt_cache and model_id is not None:
        from mlxd.cli.generate_cmd import usable_prompt_cache

        usable_prompt_cache(prompt_cache, get_store().resolve_model(model_id))
    spec = Spec(model=ref, model_id=model_id, prompt_tokens=int_list(prompt_tokens, "-p"),
                gen_tokens=int_list(gen_tokens, "-g"), trials=trials, warmup=warmup, seed=seed,
                draft_model=draft_model, draft_model_id=draft_id,
                num_draft_tokens=num_draft_tokens, prompt_cache=prompt_cache)  # fmt: skip
    submit("bench_pair", spec, **job_kw)
