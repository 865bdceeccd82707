"""Job-submitting commands: mlxd convert|quantize|bench."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
from mlxd.jobs.quantize import check_explicit_choices
from mlxd.vocab.choices import (
    BITS,
    DEFAULT_BITS,
    DEFAULT_GROUP_SIZE,
    DTYPES,
    GROUP_SIZES,
    QUANT_METHODS,
    QUANT_MODES,
    QUANT_RECIPES,
)


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
def convert(ref, dtype, name, wait, after, priority, timeout_s, pool):
    """Convert a Hugging Face-format model to MLX."""
    from mlxd.jobs.convert import Spec

    ref, model_id, pull = model_ref_or_pull(ref, after)  # a hub id is pulled first
    check_not_quantized(catalog_model(model_id), "convert")
    spec = Spec(model=ref, model_id=model_id, dtype=dtype, name=name)
    check_free_name(spec.name)
    submit(
        "convert", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s,
        pool=pool, pull=pull,
    )  # fmt: skip


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
@click.option(
    "--method",
    type=click.Choice(QUANT_METHODS),
    default=spec_default(quantize_kind.Spec, "method"),
    show_default=True,
    help="rtn: round to nearest; awq, gptq, dwq, dynamic: learned from calibration text",
)
@click.option(
    "--calibration",
    type=click.Path(exists=True),
    help="Calibration text: a text file, JSONL with 'text', or a fine-tuning data folder "
    "(default: the prose that ships with mlxd)",
)
@click.option(
    "--calibration-samples",
    type=int,
    help="Calibration samples",
    **shows_default(str(quantize_kind.DEFAULT_CALIBRATION_SAMPLES)),
)
@click.option(
    "--calibration-length",
    type=int,
    help="Tokens per calibration sample",
    **shows_default(str(quantize_kind.DEFAULT_CALIBRATION_LENGTH)),
)
@click.option(
    "--target-bpw",
    type=float,
    help="dynamic: bits per weight to reach (default: halfway between --bits and --high-bits)",
)
@click.option(
    "--high-bits",
    type=click.Choice([str(b) for b in BITS]),
    help="dynamic: bits of the most sensitive layers (default: the next width above --bits)",
)
@click.option("--steps", type=int, help="dwq: training steps (default: one pass over the samples)")
@click.option(
    "--learning-rate",
    type=float,
    help="dwq: learning rate",
    **shows_default(format(quantize_kind.DEFAULT_LEARNING_RATE, "g")),
)
@click.option(
    "--batch-size",
    type=int,
    help="gptq, dwq, dynamic: calibration samples per batch (default: gptq 8, dwq and dynamic 4)",
)
@click.option(
    "--n-grid",
    type=int,
    help="awq: scales and clips tried per layer",
    **shows_default(str(quantize_kind.DEFAULT_N_GRID)),
)
@click.option("--seed", type=SEED, help="Which calibration samples are drawn", **shows_default("0"))
@job_options
@catalog_errors
def quantize(
    ref, bits, group_size, mode, recipe, dtype, name, method, calibration, calibration_samples,
    calibration_length, target_bpw, high_bits, steps, learning_rate, batch_size, n_grid, seed,
    wait, after, priority, timeout_s, pool,
):  # fmt: skip
    """Quantize a model: rtn, AWQ, GPTQ, DWQ or dynamic (2-8 bits, mx/nv fp, recipes).

    rtn (round to nearest, the default) reads no data; the learned methods read calibration
    text (--calibration, or the prose that ships with mlxd) offline."""
    from mlxd.jobs.quantize import Spec

    ref, model_id, pull = model_ref_or_pull(ref, after)  # a hub id is pulled first
    bits = None if bits is None else int(bits)
    group_size = None if group_size is None else int(group_size)
    check_explicit_choices(mode, recipe, bits, group_size)
    model = catalog_model(model_id)
    check_not_quantized(model, "quantize" if method != "dwq" else "distil (DWQ)")
    spec = Spec(
        model=ref,
        model_id=model_id,
        bits=bits or DEFAULT_BITS,
        group_size=group_size or DEFAULT_GROUP_SIZE,
        mode=mode,
        recipe=recipe,
        dtype=dtype,
        name=name,
        method=method,
        calibration=calibration,
        calibration_samples=calibration_samples,
        calibration_length=calibration_length,
        seed=seed,
        target_bpw=target_bpw,
        high_bits=None if high_bits is None else int(high_bits),
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        n_grid=n_grid,
    )
    check_free_name(spec.name)
    if model is not None:
        check_calibration_length(spec, model)
    submit(
        "quantize", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s,
        pool=pool, pull=pull,
    )  # fmt: skip


def check_calibration_length(spec, model) -> None:
    """A learned method's calibration text must hold its samples: counted with the model's
    tokenizer.json when its folder is here (the job counts again with mlx-lm's); AWQ must
    know the model's architecture."""
    from pathlib import Path

    from mlxd.jobs.calibration import check_enough_tokens, read_calibration

    if spec.method == "rtn" or not Path(model.path).is_dir():
        return
    if spec.method == "awq":
        from mlxd.formats.modelfolder import read_config
        from mlxd.vocab.choices import AWQ_ARCHITECTURES

        model_type = (read_config(Path(model.path)) or {}).get("model_type")
        if model_type not in AWQ_ARCHITECTURES:
            raise BadUsage(
                f"mlx-lm's AWQ has no configuration for {model_type!r} models (it knows "
                f"{', '.join(AWQ_ARCHITECTURES)}); try --method gptq or dwq"
            )
    cal = read_calibration(spec.calibration)
    tokens = cal.token_count(Path(model.path) / "tokenizer.json")
    if tokens is not None:
        check_enough_tokens(cal.source, tokens, spec.calibration_samples, spec.calibration_length)


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
def bench(refs, adapter, **params):
    """Benchmark models: prompt and generation tok/s, time to first token, memory."""
    o = BenchOptions.of(params)
    refs = list(dict.fromkeys(refs))  # one job per model, in the order given
    if adapter is not None:
        _check_adapter_bench(refs, o)
    if o.serve.serve or o.pair.draft_model or o.pair.prompt_cache or o.shard.sharded:
        if len(refs) > 1 or o.grid.max_kv_size or o.grid.prompt_gen:
            raise BadUsage(
                "--serve, --draft-model, --prompt-cache and --ranks take one model, "
                "and no --max-kv-size or -pg"
            )
        ref, model_id, pull = model_ref_or_pull(refs[0], o.queue.after)  # a hub id: a pull
        if o.shard.sharded:
            _bench_sharded(ref, model_id, pull, o)
        elif o.serve.serve:
            _bench_serve(ref, model_id, pull, o)
        else:
            _bench_pair(ref, model_id, pull, o)
        return
    _bench_grid(refs, adapter, o)


@dataclass
class Grid:
    """The points a bench measures, and how (``-p``, ``-g``, ``-b``, ``--depth`` ...)."""

    prompt_tokens: tuple[str, ...]
    gen_tokens: tuple[str, ...]
    trials: int
    warmup: int
    batch_size: tuple[str, ...]
    depth: tuple[str, ...]
    kv_bits: tuple[str, ...]
    prefill_step_size: tuple[str, ...]
    max_kv_size: tuple[str, ...]
    prompt_gen: tuple[str, ...]
    seed: int
    delay_s: float
    noise_threshold: float

    def used(self) -> bool:
        """Whether -b, --depth or --kv-bits ask for anything but the plain point."""
        return tuple(self.batch_size) != ("1",) or tuple(self.depth) != ("0",) or bool(self.kv_bits)

    def one_point(self, what: str) -> tuple[int, int]:
        """The single -p and -g of a bench that measures one point."""
        p, g = int_list(self.prompt_tokens, "-p"), int_list(self.gen_tokens, "-g")
        if len(p) > 1 or len(g) > 1:
            raise BadUsage(what)
        return p[0], g[0]


@dataclass
class Serve:
    """--serve: mlx_lm.server under concurrent clients."""

    serve: bool
    concurrency: tuple[str, ...]
    requests: int


@dataclass
class Pair:
    """Two sides in one job: --draft-model (speculative decoding) or --prompt-cache."""

    draft_model: str | None
    num_draft_tokens: int
    prompt_cache: str | None


@dataclass
class Shard:
    """--ranks / --hostfile: one model sharded under mlx.launch."""

    ranks: int
    hostfile: str | None
    dist_backend: str

    @property
    def sharded(self) -> bool:
        return bool(self.ranks > 1 or self.hostfile)


@dataclass
class Queueing:
    """How the job is queued (``job_options``)."""

    wait: bool
    after: int | None
    priority: int
    timeout_s: float | None
    pool: str | None

    def submit(self, kind: str, spec, pull=None) -> int:
        """Queue one job (after the pull of its hub id, when ``pull``: both, or neither)."""
        return submit(
            kind,
            spec,
            wait=self.wait,
            after=self.after,
            priority=self.priority,
            timeout_s=self.timeout_s,
            pool=self.pool,
            pull=pull,
        )


@dataclass
class BenchOptions:
    """The bench command's options, by what they are for."""

    grid: Grid
    serve: Serve
    pair: Pair
    shard: Shard
    queue: Queueing

    @classmethod
    def of(cls, params: dict) -> BenchOptions:
        """From Click's parameters: each one belongs to exactly one group."""
        groups = {"grid": Grid, "serve": Serve, "pair": Pair, "shard": Shard, "queue": Queueing}
        names = [f.name for group in groups.values() for f in dataclasses.fields(group)]
        assert sorted(names) == sorted(params), "a bench option is in no group, or in two"
        return cls(
            **{
                key: group(**{f.name: params[f.name] for f in dataclasses.fields(group)})
                for key, group in groups.items()
            }
        )


def _bench_sharded(ref, model_id, pull, o: BenchOptions) -> None:
    from mlxd.jobs import bench_sharded

    p, g = o.grid.one_point("--ranks measures one point: give one -p and one -g value")
    spec = bench_sharded.Spec(
        model=ref,
        model_id=model_id,
        ranks=o.shard.ranks,
        hostfile=o.shard.hostfile,
        backend=o.shard.dist_backend,
        prompt_tokens=p,
        gen_tokens=g,
        seed=o.grid.seed,
    )
    check_context(catalog_model(model_id), p + g, "-p + -g")
    o.queue.submit("bench_sharded", spec, pull)


def _bench_serve(ref, model_id, pull, o: BenchOptions) -> None:
    from mlxd.jobs.serve_bench import Spec as ServeSpec

    why = "--serve takes one -p and one -g, and no --batch-size, --depth or --kv-bits"
    p, g = o.grid.one_point(why)
    if o.grid.used():
        raise BadUsage(why)
    spec = ServeSpec(
        model=ref,
        model_id=model_id,
        concurrency=int_list(o.serve.concurrency, "--concurrency"),
        requests=o.serve.requests,
        prompt_tokens=p,
        gen_tokens=g,
        warmup=o.grid.warmup,
        seed=o.grid.seed,
    )
    job_id = o.queue.submit("serve_bench", spec, pull)
    if o.queue.wait:
        _echo_headline(job_id)


def _bench_grid(refs: list[str], adapter: str | None, o: BenchOptions) -> None:
    """The plain bench: one job per model over the grid of points; with --wait one table
    for all of them, as llama-bench prints."""
    specs = [_grid_spec(ref, adapter, o) for ref in refs]  # (spec, the pull of its hub id)
    if len(specs) == 1:
        spec, pull = specs[0]
        job_ids = [o.queue.submit("bench", spec, pull)]
    else:
        job_ids = _submit_each(specs, o.queue)
    if o.queue.wait:
        _echo_results(job_ids)
        if adapter is not None:
            from mlxd.cli.results_cmd import echo_adapter_comparison

            echo_adapter_comparison(job_ids[0])


def _grid_spec(ref: str, adapter: str | None, o: BenchOptions):
    """One model's bench Spec, checked against its context; with the pull of its hub id to
    queue first (or None)."""
    from mlxd.jobs.bench import Spec

    name, model_id, pull = model_ref_or_pull(ref, o.queue.after)
    adapter_ref, adapter_id = usable_adapter(adapter, model_id)
    grid = o.grid
    spec = Spec(
        model=name,
        model_id=model_id,
        prompt_tokens=int_list(grid.prompt_tokens, "-p"),
        gen_tokens=int_list(grid.gen_tokens, "-g"),
        batch_size=int_list(grid.batch_size, "--batch-size"),
        depth=int_list(grid.depth, "--depth"),
        kv_bits=int_list(grid.kv_bits, "--kv-bits") if grid.kv_bits else [None],
        prefill_step_size=int_list(grid.prefill_step_size, "--prefill-step-size"),
        max_kv_size=int_list(grid.max_kv_size, "--max-kv-size") if grid.max_kv_size else [None],
        prompt_gen=[int_list(pg, "-pg") for pg in grid.prompt_gen],
        trials=grid.trials,
        warmup=grid.warmup,
        seed=grid.seed,
        delay_s=grid.delay_s,
        noise_threshold=grid.noise_threshold,
        adapter=adapter_ref,
        adapter_id=adapter_id,
    )
    longest = max(p["depth"] + p["prompt_tokens"] + p["gen_tokens"] for p in spec.points())
    check_context(catalog_model(model_id), longest, "the longest point (depth + -p + -g)")
    return spec, pull


def _submit_each(specs, queue: Queueing) -> list[int]:
    """Several models: all of their jobs (and the pull of each hub id first) queued in one
    plan, or none; followed one after the other."""
    from mlxd.cli.context import UserError
    from mlxd.cli.submit import follow, pull_node, submit_plan, with_pull
    from mlxd.scheduling import Node

    plan, benches = [], []
    for spec, pull in specs:
        node = Node("bench", spec, queue.after, None, queue.priority, queue.timeout_s)
        if pull is not None:
            plan.append(pull_node(pull, queue.after, queue.priority))
            node = with_pull(node, len(plan) - 1)
        benches.append(len(plan))
        plan.append(node)
    ids = submit_plan(plan, pool=queue.pool, wait=queue.wait, what="the jobs")
    job_ids = [ids[i] for i in benches]
    failed = []
    for job_id in job_ids if queue.wait else ():
        try:
            follow(job_id)
        except UserError as e:
            failed.append(e)
    if failed:
        _echo_results(job_ids)
        raise failed[0]
    return job_ids


def _echo_results(job_ids) -> None:
    from mlxd.cli.results_cmd import echo_job_results

    echo_job_results(job_ids)


def _echo_headline(job_id: int) -> None:
    from mlxd.cli.results_cmd import echo_headline

    echo_headline(job_id)


def _check_adapter_bench(refs, o: BenchOptions) -> None:
    """--adapter measures one model three ways with the plain grid; nothing else."""
    if len(refs) > 1:
        raise BadUsage("--adapter takes one model: the base the adapter was trained on")
    for given, flag in (
        (o.serve.serve, "--serve"),
        (o.pair.draft_model, "--draft-model"),
        (o.pair.prompt_cache, "--prompt-cache"),
        (o.shard.ranks > 1, "--ranks"),
        (o.shard.hostfile, "--hostfile"),
    ):
        if given:
            raise BadUsage(f"--adapter cannot be combined with {flag}")


def _bench_pair(ref, model_id, pull, o: BenchOptions) -> None:
    """bench --draft-model / --prompt-cache: both sides measured in one job; ``pull`` the
    pull of REF's hub id, queued first (or None)."""
    from mlxd.jobs.bench_pair import Spec

    draft_model, prompt_cache = o.pair.draft_model, o.pair.prompt_cache
    if draft_model and prompt_cache:
        raise BadUsage("--draft-model and --prompt-cache are separate benchmarks; pick one")
    if o.grid.used():
        raise BadUsage(
            "--draft-model and --prompt-cache take no --batch-size, --depth or --kv-bits"
        )
    draft_id = None
    if draft_model:
        draft_model, draft_id = model_ref(draft_model, o.queue.after)
        if model_id is not None and draft_id is not None:
            from mlxd.jobs.bench_pair import check_draft_tokenizer

            check_draft_tokenizer(catalog_model(model_id), catalog_model(draft_id))
    if prompt_cache and model_id is not None:
        from mlxd.cli.generate_cmd import usable_prompt_cache

        usable_prompt_cache(prompt_cache, catalog_model(model_id))
    spec = Spec(
        model=ref,
        model_id=model_id,
        prompt_tokens=int_list(o.grid.prompt_tokens, "-p"),
        gen_tokens=int_list(o.grid.gen_tokens, "-g"),
        trials=o.grid.trials,
        warmup=o.grid.warmup,
        seed=o.grid.seed,
        draft_model=draft_model,
        draft_model_id=draft_id,
        num_draft_tokens=o.pair.num_draft_tokens,
        prompt_cache=prompt_cache,
    )
    job_id = o.queue.submit("bench_pair", spec, pull)
    if o.queue.wait:
        _echo_headline(job_id)
