"""Job-submitting commands: mlxd convert|quantize|bench."""

from __future__ import annotations

import click

from mlxd.cli.context import BadUsage, catalog_errors
from mlxd.cli.params import SEED, int_list, list_option
from mlxd.cli.submit import (
    catalog_model,
    check_context,
    check_free_name,
    check_not_quantized,
    job_options,
    model_ref,
    submit,
)
from mlxd.jobs.choices import (
    BITS,
    DEFAULT_BITS,
    DEFAULT_GROUP_SIZE,
    DEFAULT_PREFILL_STEP_SIZE,
    DTYPES,
    GROUP_SIZES,
    QUANT_MODES,
    QUANT_RECIPES,
)
from mlxd.jobs.quantize import check_explicit_choices


@click.command()
@click.argument("ref")
@click.option("--dtype", type=click.Choice(DTYPES),
              help="Weights' dtype (default: float32 on the CPU backend, the model's own on Metal)")  # fmt: skip
@click.option("--name", help="Name of the new model (default: REF-mlx)")
@job_options
@catalog_errors
def convert(ref, dtype, name, wait, after, priority, timeout_s):
    """Convert a Hugging Face-format model to MLX."""
    from mlxd.jobs.convert import Spec

    ref, model_id = model_ref(ref, after)
    check_not_quantized(catalog_model(model_id), "convert")
    spec = Spec(model=ref, model_id=model_id, dtype=dtype, name=name)
    check_free_name(spec.name)
    submit("convert", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)


@click.command()
@click.argument("ref")
@click.option("--bits", type=click.Choice([str(b) for b in BITS]),
              help=f"Bits per weight (default {DEFAULT_BITS}; fixed by --mode other than affine)")  # fmt: skip
@click.option("--group-size", type=click.Choice([str(g) for g in GROUP_SIZES]),
              help=f"Weights per scale (default {DEFAULT_GROUP_SIZE}; fixed by --mode)")  # fmt: skip
@click.option("--mode", type=click.Choice(list(QUANT_MODES)), default="affine", show_default=True)
@click.option("--recipe", type=click.Choice(QUANT_RECIPES),
              help="Mixed precision: more bits for the layers that matter most")  # fmt: skip
@click.option("--dtype", type=click.Choice(DTYPES),
              help="dtype of scales and unquantized layers (default: float32 on CPU)")  # fmt: skip
@click.option("--name", help="Name of the new model (default: from the recipe, e.g. REF-4bit-g64)")
@job_options
@catalog_errors
def quantize(ref, bits, group_size, mode, recipe, dtype, name, wait, after, priority, timeout_s):
    """Quantize a model (affine 2-8 bits, mxfp4, nvfp4, mxfp8 or a mixed recipe)."""
    from mlxd.jobs.quantize import Spec

    ref, model_id = model_ref(ref, after)
    bits = None if bits is None else int(bits)
    group_size = None if group_size is None else int(group_size)
    check_explicit_choices(mode, recipe, bits, group_size)
    check_not_quantized(catalog_model(model_id), "quantize")
    spec = Spec(model=ref, model_id=model_id, bits=bits or DEFAULT_BITS,
                group_size=group_size or DEFAULT_GROUP_SIZE, mode=mode, recipe=recipe,
                dtype=dtype, name=name)  # fmt: skip
    check_free_name(spec.name)
    submit("quantize", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)


@click.command()
@click.argument("ref")
@list_option("-p", "--prompt-tokens", default="512", show_default=True,
             help="Prompt length(s), e.g. 128,512")  # fmt: skip
@list_option("-g", "--gen-tokens", default="128", show_default=True,
             help="Tokens to generate, e.g. 64,128")  # fmt: skip
@click.option("-n", "--trials", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Unrecorded runs first",
)
@list_option("-b", "--batch-size", default="1", show_default=True, help="Batch size(s), e.g. 1,4")
@list_option("--depth", default="0", show_default=True,
             help="Tokens already in the KV cache, e.g. 0,4096")  # fmt: skip
@list_option("--kv-bits", help="Quantized KV cache bits, e.g. 4,8")
@list_option("--prefill-step-size", default=str(DEFAULT_PREFILL_STEP_SIZE), show_default=True,
             help="Prefill chunk size(s)")  # fmt: skip
@click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Seed of the random prompt tokens"
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
@click.option("--ranks", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Shard the model over N ranks (tensor parallel, under mlx.launch)")  # fmt: skip
@click.option("--hostfile", type=click.Path(dir_okay=False), help="mlx.launch hostfile (Macs)")
@click.option("--backend", "dist_backend", type=click.Choice(["ring", "mpi", "jaccl"]),
              default="ring", show_default=True, help="mlx.distributed backend with --ranks")  # fmt: skip
@job_options
@catalog_errors
def bench(ref, prompt_tokens, gen_tokens, trials, warmup, batch_size, depth, kv_bits,
          prefill_step_size, seed, delay_s, noise_threshold, ranks, hostfile, dist_backend,
          wait, after, priority, timeout_s):  # fmt: skip
    """Benchmark a model: prompt and generation tok/s, time to first token, memory."""
    from mlxd.jobs.bench import Spec

    ref, model_id = model_ref(ref, after)
    if ranks > 1 or hostfile:
        from mlxd.jobs import bench_sharded

        p, g = int_list(prompt_tokens, "-p"), int_list(gen_tokens, "-g")
        if len(p) > 1 or len(g) > 1:
            raise BadUsage("--ranks measures one point: give one -p and one -g value")
        spec = bench_sharded.Spec(model=ref, model_id=model_id, ranks=ranks, hostfile=hostfile,
                                  backend=dist_backend, prompt_tokens=p[0], gen_tokens=g[0],
                                  seed=seed)  # fmt: skip
        check_context(catalog_model(model_id), p[0] + g[0], "-p + -g")
        submit("bench_sharded", spec, wait=wait, after=after, priority=priority,
               timeout_s=timeout_s)  # fmt: skip
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
    longest = max(spec.depth) + max(spec.prompt_tokens) + max(spec.gen_tokens)
    check_context(catalog_model(model_id), longest, "the longest point (depth + -p + -g)")
    submit("bench", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)
