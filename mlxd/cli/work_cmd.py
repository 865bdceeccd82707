"""Job-submitting commands: mlxd convert|quantize|bench."""

from __future__ import annotations

import click

from mlxd.cli.context import BadUsage, catalog_errors
from mlxd.cli.hub_cmd import model_ref_or_pull
from mlxd.cli.params import SEED, int_list, list_option, shown_default, shows_default, spec_default
from mlxd.cli.submit import (
    catalog_model,
    check_context,
    check_free_name,
    check_not_quantized,
    job_options,
    model_ref,
    submit,
    usable_adapter,
)
from mlxd.jobs import bench as bench_kind
from mlxd.jobs import bench_pair, bench_sharded, serve_bench
from mlxd.jobs import quantize as quantize_kind
from mlxd.jobs.choices import (
    BITS,
    DEFAULT_BITS,
    DEFAULT_GROUP_SIZE,
    DTYPES,
    GROUP_SIZES,
    QUANT_MODES,
    QUANT_RECIPES,
)
from mlxd.jobs.quantize import check_explicit_choices


@click.command()
@click.argument("ref")
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    help="Weights' dtype (default: float32 on the CPU backend, the model's own on Metal)",
)
@click.option("--name", help="Name of the new model (default: REF-mlx)")
@job_options
@catalog_errors
def convert(ref, dtype, name, wait, after, priority, timeout_s):
    """Convert a Hugging Face-format model to MLX."""
    from mlxd.jobs.convert import Spec

    ref, model_id, after = model_ref_or_pull(ref, after)  # a hub id queues a pull
    check_not_quantized(catalog_model(model_id), "convert")
    spec = Spec(model=ref, model_id=model_id, dtype=dtype, name=name)
    check_free_name(spec.name)
    submit("convert", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)


@click.command()
@click.argument("ref")
@click.option(
    "--bits",
    type=click.Choice([str(b) for b in BITS]),
    help="Bits per weight",
    **shows_default(
        f"{shown_default(quantize_kind.Spec, 'bits')}; fixed by --mode other than affine"
    ),
)
@click.option(
    "--group-size",
    type=click.Choice([str(g) for g in GROUP_SIZES]),
    help="Weights per scale",
    **shows_default(f"{shown_default(quantize_kind.Spec, 'group_size')}; fixed by --mode"),
)
@click.option(
    "--mode",
    type=click.Choice(list(QUANT_MODES)),
    default=spec_default(quantize_kind.Spec, "mode"),
    show_default=True,
)
@click.option(
    "--recipe",
    type=click.Choice(QUANT_RECIPES),
    help="Mixed precision: more bits for the layers that matter most",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    help="dtype of scales and unquantized layers (default: float32 on CPU)",
)
@click.option("--name", help="Name of the new model (default: from the recipe, e.g. REF-4bit-g64)")
@job_options
@catalog_errors
def quantize(ref, bits, group_size, mode, recipe, dtype, name, wait, after, priority, timeout_s):
    """Quantize a model (affine 2-8 bits, mxfp4, nvfp4, mxfp8 or a mixed recipe)."""
    from mlxd.jobs.quantize import Spec

    ref, model_id, after = model_ref_or_pull(ref, after)  # a hub id queues a pull
    bits = None if bits is None else int(bits)
    group_size = None if group_size is None else int(group_size)
    check_explicit_choices(mode, recipe, bits, group_size)
    check_not_quantized(catalog_model(model_id), "quantize")
    spec = Spec(
        model=ref,
        model_id=model_id,
        bits=bits or DEFAULT_BITS,
        group_size=group_size or DEFAULT_GROUP_SIZE,
        mode=mode,
        recipe=recipe,
        dtype=dtype,
        name=name,
    )
    check_free_name(spec.name)
    submit("quantize", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)


def _bench(name: str, spec: type = bench_kind.Spec) -> dict:
    """A bench option's default, from the bench kind's Spec (or a variant's), shown in help."""
    return {"default": spec_default(spec, name), "show_default": True}


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@list_option(
    "-p", "--prompt-tokens", **_bench("prompt_tokens"), help="Prompt length(s), e.g. 128,512"
)
@list_option("-g", "--gen-tokens", **_bench("gen_tokens"), help="Tokens to generate, e.g. 64,128")
@click.option("-n", "--trials", type=click.IntRange(min=1), **_bench("trials"))
@click.option(
    "--warmup", type=click.IntRange(min=0), **_bench("warmup"), help="Unrecorded runs first"
)
@list_option("-b", "--batch-size", **_bench("batch_size"), help="Batch size(s), e.g. 1,4")
@list_option("--depth", **_bench("depth"), help="Tokens already in the KV cache, e.g. 0,4096")
@list_option("--kv-bits", help="Quantized KV cache bits, e.g. 4,8")
@list_option("--prefill-step-size", **_bench("prefill_step_size"), help="Prefill chunk size(s)")
@list_option("--max-kv-size", help="Rotating KV cache size(s), e.g. 256,1024")
@click.option(
    "-pg",
    "prompt_gen",
    multiple=True,
    metavar="P,G",
    help="Also a prompt+generation point (llama-bench's -pg), e.g. 512,128; repeatable",
)
@click.option("--seed", type=SEED, **_bench("seed"), help="Seed of the random prompt tokens")
@click.option(
    "--delay",
    "delay_s",
    type=click.FloatRange(min=0),
    default=spec_default(bench_kind.Spec, "delay_s"),
    help="Seconds between trials (cool-down)",
)
@click.option(
    "--noise-threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    **_bench("noise_threshold"),
    help="Flag a run noisy when a metric's std/mean exceeds this",
)
@click.option(
    "--serve", is_flag=True, help="Serving bench: mlx_lm.server under concurrent streaming clients"
)
@list_option(
    "--concurrency",
    **_bench("concurrency", serve_bench.Spec),
    help="With --serve: simultaneous clients, e.g. 1,4,16",
)
@click.option(
    "--requests",
    type=click.IntRange(min=1),
    **_bench("requests", serve_bench.Spec),
    help="With --serve: requests per concurrency",
)
@click.option(
    "--draft-model",
    help="Also run with this draft model (speculative decoding): "
    "acceptance rate and speed-up, measured side by side",
)
@click.option(
    "--num-draft-tokens",
    type=click.IntRange(1, 16),
    **_bench("num_draft_tokens", bench_pair.Spec),
    help="With --draft-model: tokens drafted per step",
)
@click.option(
    "--prompt-cache",
    help="Time to first token for a -p token suffix after this cached prefix, cached and cold",
)
@click.option(
    "--ranks",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Shard the model over N ranks (tensor parallel, under mlx.launch)",
)
@click.option("--hostfile", type=click.Path(dir_okay=False), help="mlx.launch hostfile (Macs)")
@click.option(
    "--adapter",
    metavar="ADAPTER",
    help="Also with this fine-tuned adapter, unfused: the model alone, + the adapter and "
    "the model fused from it (if any), side by side in one job",
)
@click.option(
    "--backend",
    "dist_backend",
    type=click.Choice(["ring", "mpi", "jaccl"]),
    **_bench("backend", bench_sharded.Spec),
    help="mlx.distributed backend with --ranks",
)
@job_options
@catalog_errors
def bench(
    refs,
    prompt_tokens,
    gen_tokens,
    trials,
    warmup,
    batch_size,
    depth,
    kv_bits,
    prefill_step_size,
    max_kv_size,
    prompt_gen,
    seed,
    delay_s,
    noise_threshold,
    serve,
    concurrency,
    requests,
    draft_model,
    num_draft_tokens,
    prompt_cache,
    ranks,
    hostfile,
    dist_backend,
    adapter,
    wait,
    after,
    priority,
    timeout_s,
):
    """Benchmark models: prompt and generation tok/s, time to first token, memory."""
    from mlxd.cli.context import UserError
    from mlxd.cli.submit import check_room, daemon_running, follow
    from mlxd.jobs.bench import Spec

    refs = list(dict.fromkeys(refs))  # one job per model, in the order given
    sharded = ranks > 1 or hostfile
    if adapter is not None:
        _check_adapter_bench(refs, serve, draft_model, prompt_cache, ranks, hostfile)
    if serve or draft_model or prompt_cache or sharded:
        if len(refs) > 1 or max_kv_size or prompt_gen:
            raise BadUsage(
                "--serve, --draft-model, --prompt-cache and --ranks take one model, "
                "and no --max-kv-size or -pg"
            )
        ref, model_id, after = model_ref_or_pull(refs[0], after)  # a hub id queues a pull
    if sharded:
        from mlxd.jobs import bench_sharded

        p, g = int_list(prompt_tokens, "-p"), int_list(gen_tokens, "-g")
        if len(p) > 1 or len(g) > 1:
            raise BadUsage("--ranks measures one point: give one -p and one -g value")
        spec = bench_sharded.Spec(
            model=ref,
            model_id=model_id,
            ranks=ranks,
            hostfile=hostfile,
            backend=dist_backend,
            prompt_tokens=p[0],
            gen_tokens=g[0],
            seed=seed,
        )
        check_context(catalog_model(model_id), p[0] + g[0], "-p + -g")
        submit(
            "bench_sharded", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s
        )
        return
    if serve:
        from mlxd.jobs.serve_bench import Spec as ServeSpec

        p, g = int_list(prompt_tokens, "-p"), int_list(gen_tokens, "-g")
        if len(p) > 1 or len(g) > 1 or _grid_used(batch_size, depth, kv_bits):
            raise BadUsage(
                "--serve takes one -p and one -g, and no --batch-size, --depth or --kv-bits"
            )
        spec = ServeSpec(
            model=ref,
            model_id=model_id,
            concurrency=int_list(concurrency, "--concurrency"),
            requests=requests,
            prompt_tokens=p[0],
            gen_tokens=g[0],
            warmup=warmup,
            seed=seed,
        )
        job_id = submit(
            "serve_bench", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s
        )
        if wait:
            _echo_headline(job_id)
        return
    if draft_model or prompt_cache:
        _bench_pair(ref, model_id, after, click.get_current_context().params)
        return
    specs = []  # (spec, the job it waits on: --after, or the pull of a hub id)
    for ref in refs:
        name, model_id, spec_after = model_ref_or_pull(ref, after)
        adapter_ref, adapter_id = usable_adapter(adapter, model_id)
        spec = Spec(
            model=name,
            model_id=model_id,
            prompt_tokens=int_list(prompt_tokens, "-p"),
            gen_tokens=int_list(gen_tokens, "-g"),
            batch_size=int_list(batch_size, "--batch-size"),
            depth=int_list(depth, "--depth"),
            kv_bits=int_list(kv_bits, "--kv-bits") if kv_bits else [None],
            prefill_step_size=int_list(prefill_step_size, "--prefill-step-size"),
            max_kv_size=int_list(max_kv_size, "--max-kv-size") if max_kv_size else [None],
            prompt_gen=[int_list(pg, "-pg") for pg in prompt_gen],
            trials=trials,
            warmup=warmup,
            seed=seed,
            delay_s=delay_s,
            noise_threshold=noise_threshold,
            adapter=adapter_ref,
            adapter_id=adapter_id,
        )
        longest = max(p["depth"] + p["prompt_tokens"] + p["gen_tokens"] for p in spec.points())
        check_context(catalog_model(model_id), longest, "the longest point (depth + -p + -g)")
        specs.append((spec, spec_after))
    if len(specs) == 1:
        spec, spec_after = specs[0]
        job_ids = [
            submit(
                "bench", spec, wait=wait, after=spec_after, priority=priority, timeout_s=timeout_s
            )
        ]
    else:
        daemon_running(wait=wait, what="the jobs")  # refuses --wait without a daemon
        check_room(len(specs))  # one job per model: all of them, or none
        job_ids = [
            submit("bench", spec, after=spec_after, priority=priority, timeout_s=timeout_s)
            for spec, spec_after in specs
        ]
        failed = []
        for job_id in job_ids if wait else ():
            try:
                follow(job_id)
            except UserError as e:
                failed.append(e)
        if failed:
            _echo_results(job_ids)
            raise failed[0]
    if wait:
        _echo_results(job_ids)  # one table for all of them, as llama-bench prints
        if adapter is not None:
            from mlxd.cli.results_cmd import echo_adapter_comparison

            echo_adapter_comparison(job_ids[0])


def _echo_results(job_ids) -> None:
    from mlxd.cli.results_cmd import echo_job_results

    echo_job_results(job_ids)


def _echo_headline(job_id: int) -> None:
    from mlxd.cli.results_cmd import echo_headline

    echo_headline(job_id)


def _check_adapter_bench(refs, serve, draft_model, prompt_cache, ranks, hostfile) -> None:
    """--adapter measures one model three ways with the plain grid; nothing else."""
    if len(refs) > 1:
        raise BadUsage("--adapter takes one model: the base the adapter was trained on")
    for given, flag in (
        (serve, "--serve"),
        (draft_model, "--draft-model"),
        (prompt_cache, "--prompt-cache"),
        (ranks > 1, "--ranks"),
        (hostfile, "--hostfile"),
    ):
        if given:
            raise BadUsage(f"--adapter cannot be combined with {flag}")


def _grid_used(batch_size, depth, kv_bits) -> bool:
    """Whether -b, --depth or --kv-bits ask for anything but the plain point."""
    return tuple(batch_size) != ("1",) or tuple(depth) != ("0",) or bool(kv_bits)


def _bench_pair(ref, model_id, after, opts: dict) -> None:
    """bench --draft-model / --prompt-cache: both sides measured in one job. ``opts`` are
    the bench command's parameters; ``after`` the job to wait on (a hub id's pull)."""
    from mlxd.jobs.bench_pair import Spec

    draft_model, prompt_cache = opts["draft_model"], opts["prompt_cache"]
    if draft_model and prompt_cache:
        raise BadUsage("--draft-model and --prompt-cache are separate benchmarks; pick one")
    if _grid_used(opts["batch_size"], opts["depth"], opts["kv_bits"]):
        raise BadUsage(
            "--draft-model and --prompt-cache take no --batch-size, --depth or --kv-bits"
        )
    draft_id = None
    if draft_model:
        draft_model, draft_id = model_ref(draft_model, after)
        if model_id is not None and draft_id is not None:
            from mlxd.jobs.bench_pair import check_draft_tokenizer

            check_draft_tokenizer(catalog_model(model_id), catalog_model(draft_id))
    if prompt_cache and model_id is not None:
        from mlxd.cli.generate_cmd import usable_prompt_cache

        usable_prompt_cache(prompt_cache, catalog_model(model_id))
    spec = Spec(
        model=ref,
        model_id=model_id,
        prompt_tokens=int_list(opts["prompt_tokens"], "-p"),
        gen_tokens=int_list(opts["gen_tokens"], "-g"),
        trials=opts["trials"],
        warmup=opts["warmup"],
        seed=opts["seed"],
        draft_model=draft_model,
        draft_model_id=draft_id,
        num_draft_tokens=opts["num_draft_tokens"],
        prompt_cache=prompt_cache,
    )
    job_id = submit(
        "bench_pair",
        spec,
        wait=opts["wait"],
        after=after,
        priority=opts["priority"],
        timeout_s=opts["timeout_s"],
    )
    if opts["wait"]:
        _echo_headline(job_id)
