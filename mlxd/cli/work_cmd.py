"""Job-submitting commands: mlxd convert|quantize|bench."""

from __future__ import annotations

import click

from mlxd.cli.context import catalog_errors
from mlxd.cli.hub_cmd import model_ref_or_pull
from mlxd.cli.params import SEED, int_list, list_option
from mlxd.cli.submit import check_free_name, job_options, submit
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

    ref, model_id, after = model_ref_or_pull(ref, after)  # a hub id queues a pull
    spec = Spec(model=ref, model_id=model_id, dtype=dtype, name=name)
    check_free_name(spec.name)
    submit("convert", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)


@click.command()
@click.argument("ref")
@click.option("--bits", type=click.Choice([str(b) for b in BITS]), default=str(DEFAULT_BITS),
              show_default=True)  # fmt: skip
@click.option("--group-size", type=click.Choice([str(g) for g in GROUP_SIZES]),
              default=str(DEFAULT_GROUP_SIZE), show_default=True)  # fmt: skip
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

    ref, model_id, after = model_ref_or_pull(ref, after)  # a hub id queues a pull
    spec = Spec(model=ref, model_id=model_id, bits=int(bits), group_size=int(group_size),
                mode=mode, recipe=recipe, dtype=dtype, name=name)  # fmt: skip
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
@job_options
@catalog_errors
def bench(ref, prompt_tokens, gen_tokens, trials, warmup, batch_size, depth, kv_bits,
          prefill_step_size, seed, delay_s, noise_threshold, wait, after, priority, timeout_s):  # fmt: skip
    """Benchmark a model: prompt and generation tok/s, time to first token, memory."""
    from mlxd.jobs.bench import Spec

    ref, model_id, after = model_ref_or_pull(ref, after)  # a hub id queues a pull
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
