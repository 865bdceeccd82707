"""mlxd finetune REF --data PATH ... | finetune show SWEEP | finetune list, and mlxd fuse.

``finetune`` is a group like ``sweep``: anything that is not a subcommand name goes to
``run``, so ``mlxd finetune tiny --data d/`` is ``mlxd finetune run tiny --data d/``.
"""

from __future__ import annotations

import click

from mlxd.cli.context import BadUsage, UserError, catalog_errors, get_reader, get_store
from mlxd.cli.groups import DefaultGroup
from mlxd.cli.output import echo_json, emit, human_bytes, output_options, render_table, when
from mlxd.cli.output import sig as significant
from mlxd.cli.params import shown_default, shows_default
from mlxd.cli.submit import follow, job_options
from mlxd.jobs.finetune import DEFAULT_NUM_LAYERS
from mlxd.jobs.finetune import Spec as FinetuneSpec
from mlxd.vocab.choices import FINE_TUNE_TYPES, OPTIMIZERS

SCHEDULES = {
    "cosine": "cosine_decay",
    "linear": "linear_schedule",
    "exponential": "exponential_decay",
}


def _shown(name: str) -> dict:
    """Help states the fine-tune default its Spec writes; the option stays None (a --config
    or --resume shows through unless the option is given)."""
    return shows_default(shown_default(FinetuneSpec, name))


@click.group(cls=DefaultGroup)
def finetune():
    """Fine-tune a model (LoRA, DoRA, full; QLoRA on a quantized base) into an adapter.

    \b
    mlxd finetune REF --data DIR [options]    queue a run (same as 'finetune run REF ...')
    mlxd finetune REF --data DIR --learning-rate 1e-4,3e-4 --rank 4,8
                                              a grid: one job per combination (a sweep)
    mlxd finetune show SWEEP                  the sweep's runs, best validation loss first
    """


@finetune.command("run")
@click.argument("ref", required=False)
@click.option(
    "--data",
    type=click.Path(),
    metavar="PATH",
    help="Folder with train.jsonl (valid/test.jsonl), or a .jsonl/.json file",
)
@click.option(
    "--type",
    "types",
    help="lora, dora or full (comma list: a grid)",
    **_shown("fine_tune_type"),
)
@click.option("--iters", help="Training iterations (comma list: a grid)", **_shown("iters"))
@click.option("--batch-size", type=click.IntRange(min=1), **_shown("batch_size"))
@click.option(
    "--learning-rate",
    help="Learning rate (comma list: a grid)",
    **_shown("learning_rate"),
)
@click.option(
    "--num-layers",
    "--lora-layers",
    "num_layers",
    help="Fine-tune the last N blocks, -1 all (comma list: a grid)",
    **shows_default(f"{DEFAULT_NUM_LAYERS}, or all layers of a smaller model"),
)
@click.option("--rank", help="LoRA rank (comma list: a grid)", **_shown("rank"))
@click.option("--scale", type=float, help="LoRA scale", **_shown("scale"))
@click.option("--dropout", type=float, help="LoRA dropout", **_shown("dropout"))
@click.option("--max-seq-length", type=click.IntRange(min=2), **_shown("max_seq_length"))
@click.option("--mask-prompt", is_flag=True, default=None, help="Train on completions only")
@click.option("--grad-checkpoint", is_flag=True, default=None, help="Trade compute for memory")
@click.option(
    "--grad-accumulation-steps",
    type=click.IntRange(min=1),
    **_shown("grad_accumulation_steps"),
)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), **_shown("optimizer"))
@click.option(
    "--lr-schedule",
    type=click.Choice(sorted(SCHEDULES)),
    help="Decay the learning rate over the run",
)
@click.option(
    "--warmup", type=click.IntRange(min=0), help="Linear warm-up steps (with --lr-schedule)"
)
@click.option("--steps-per-report", type=click.IntRange(min=1), **_shown("steps_per_report"))
@click.option("--steps-per-eval", type=click.IntRange(min=1), **_shown("steps_per_eval"))
@click.option(
    "--val-batches",
    type=int,
    help="Validation batches, -1 all",
    **_shown("val_batches"),
)
@click.option("--test-batches", type=int, help="Test batches, -1 all", **_shown("test_batches"))
@click.option(
    "--save-every",
    type=click.IntRange(min=0),
    help="Checkpoint every N iterations",
    **_shown("save_every"),
)
@click.option("--seed", type=int, **_shown("seed"))
@click.option(
    "--valid-fraction",
    type=float,
    help="Held out of a single data file",
    **_shown("valid_fraction"),
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(),
    metavar="FILE.yaml",
    help="An mlx_lm.lora YAML config",
)
@click.option("--resume", metavar="ADAPTER", help="Continue this adapter from its last checkpoint")
@click.option(
    "--fuse", "then_fuse", is_flag=True, help="Then fuse each adapter into the base (checked)"
)
@click.option("--name", help="Adapter name (default: REF-TYPE)")
@job_options
@catalog_errors
def run(
    ref,
    data,
    types,
    iters,
    batch_size,
    learning_rate,
    num_layers,
    rank,
    scale,
    dropout,
    max_seq_length,
    mask_prompt,
    grad_checkpoint,
    grad_accumulation_steps,
    optimizer,
    lr_schedule,
    warmup,
    steps_per_report,
    steps_per_eval,
    val_batches,
    test_batches,
    save_every,
    seed,
    valid_fraction,
    config_file,
    resume,
    then_fuse,
    name,
    wait,
    after,
    priority,
    timeout_s,
    pool,
):
    """Queue fine-tuning of a model on local data."""
    from mlxd.jobs.finetune_plan import (
        combinations,
        parse_grid,
        read_config,
        resolve_optimizer_config,
        varying,
    )

    fields: dict = {}
    if config_file:
        cfg = read_config(config_file)
        fields.update(cfg.fields)
        for note in cfg.notes:
            click.echo(f"Note: {note}", err=True)
        ref = ref or cfg.model
        data = data or cfg.data
        fields["config_file"] = str(__import__("pathlib").Path(config_file).resolve())
    if not ref and resume:
        ref = get_store().resolve_adapter(resume).base_model_name
    if not ref:
        raise BadUsage("give the model to fine-tune (REF), or 'model' in --config")
    if not data and not resume:
        raise BadUsage("--data is needed (a folder with train.jsonl, or a .jsonl/.json file)")
    explicit = {
        "batch_size": batch_size, "scale": scale, "dropout": dropout,
        "max_seq_length": max_seq_length, "mask_prompt": mask_prompt,
        "grad_checkpoint": grad_checkpoint, "grad_accumulation_steps": grad_accumulation_steps,
        "optimizer": optimizer, "steps_per_report": steps_per_report,
        "steps_per_eval": steps_per_eval, "val_batches": val_batches,
        "test_batches": test_batches, "save_every": save_every, "seed": seed,
        "valid_fraction": valid_fraction,
    }  # fmt: skip
    fields.update({k: v for k, v in explicit.items() if v is not None})
    resolve_optimizer_config(fields)
    grid = {
        "fine_tune_type": parse_grid(types, "--type", str),
        "learning_rate": parse_grid(learning_rate, "--learning-rate", float),
        "rank": parse_grid(rank, "--rank", int),
        "num_layers": parse_grid(num_layers, "--num-layers", int),
        "iters": parse_grid(iters, "--iters", int),
    }
    for t in grid["fine_tune_type"] or []:
        if t not in FINE_TUNE_TYPES:
            raise BadUsage(f"unknown --type '{t}'; choose from {', '.join(FINE_TUNE_TYPES)}")
    combos = combinations(grid) or [{}]
    if len(combos) > 1 and (resume or name):
        raise BadUsage("a grid makes one adapter per run: leave out --resume and --name")
    if warmup is not None and not lr_schedule and not fields.get("lr_schedule"):
        raise BadUsage("--warmup works with --lr-schedule")

    store = get_store()
    from mlxd.cli.submit import model_or_later

    base = model_or_later(ref, after)
    resumed = None
    if resume:
        resumed = store.resolve_adapter(resume)
        data = data or resumed.data_path
        name = resumed.name
        _check_owner(store, resumed, after)
        _inherit_settings(resumed, fields, grid)
    specs = []
    for combo in combos:
        spec_fields = {**fields, **combo}
        if lr_schedule:
            spec_fields["lr_schedule"] = _schedule(lr_schedule, warmup, spec_fields)
        specs.append(
            _make_spec(ref, base, data, spec_fields, combo, varying(combos), name, resumed)
        )
    _check_data(specs, base)
    from mlxd.cli.submit import daemon_running

    running = daemon_running(wait=wait, what="the job")
    if len(specs) == 1 and not then_fuse:
        from mlxd.cli.submit import submit

        submit(
            "finetune", specs[0], wait=wait, after=after, priority=priority, timeout_s=timeout_s,
            pool=pool,
        )  # fmt: skip
        if wait:
            _print_adapter_summary(specs[0].name)
        return
    jobs = (after, priority, timeout_s, pool)
    _submit_graph(store, specs, base, combos, jobs, then_fuse, wait, running)


def _check_owner(store, adapter, after: int | None) -> None:
    """One job trains an adapter at a time: a resume of an adapter that a queued or running
    job trains is refused, unless it is queued --after the last of them."""
    from mlxd.jobs.finetune import trainers

    busy = trainers(store, adapter)
    if busy and after != busy[-1]:
        raise UserError(
            f"adapter '{adapter.name}' is being trained by job {busy[-1]}; wait for it to "
            f"end, or queue this resume after it with --after {busy[-1]}"
        )


# Settings a resume takes from the adapter's own run unless given again; its shape (type,
# rank, layers...) is the adapter's in any case (_make_spec), and REF/data/name are its own.
_NOT_INHERITED = {"num_layers_used", "init_weights", "config_file", "data_split", "iters"}


def _inherit_settings(adapter, fields: dict, grid: dict) -> None:
    """A resume goes on with the hyper-parameters its adapter was trained with (learning
    rate, batch size, schedule, optimizer...) and up to its target, unless an option or
    --config says otherwise: never silently with mlxd's defaults."""
    from dataclasses import fields as dc_fields

    from mlxd.jobs.finetune import Spec

    known = {f.name for f in dc_fields(Spec)}
    given = {k for k, v in grid.items() if v is not None} | set(fields)
    for k, v in (adapter.params or {}).items():
        if k in known and k not in _NOT_INHERITED and k not in given:
            fields[k] = v
    if "iters" not in given:
        fields["iters"] = adapter.target_iterations


def _schedule(kind: str, warmup: int | None, fields: dict) -> dict:
    lr = float(fields.get("learning_rate", 1e-5))
    iters = int(fields.get("iters", 1000))
    name = SCHEDULES[kind]
    steps = max(1, iters - (warmup or 0))
    if name == "cosine_decay":
        arguments = [lr, steps]
    elif name == "linear_schedule":
        arguments = [lr, 0.0, steps]
    else:
        arguments = [lr, 0.999]
    out = {"name": name, "arguments": arguments}
    if warmup:
        out["warmup"] = warmup
    return out


def _make_spec(ref, base, data, fields, combo, vary, name, resumed):
    from mlxd.jobs.base import base_name
    from mlxd.jobs.finetune import Spec, check_adapter_base, check_against_model
    from mlxd.jobs.finetune_plan import free_name, grid_suffix, taken_adapter_names

    spec_name = name
    if spec_name is None:
        stem = f"{base_name(base.name if base else ref)}-{fields.get('fine_tune_type', 'lora')}"
        if vary:
            stem = f"{base_name(base.name if base else ref)}-{grid_suffix(combo, vary)}"
        spec_name = free_name(stem, taken_adapter_names(get_reader()) | _PLANNED)
    elif resumed is None:
        if get_store().find_adapter(spec_name) is not None:
            raise BadUsage(
                f"an adapter named '{spec_name}' already exists; pass another --name "
                f"or remove it with 'mlxd adapters rm {spec_name}'"
            )
    _PLANNED.add(spec_name)
    if resumed is not None:
        # The adapter's own shape; the rest (iters, learning rate...) may change.
        for k in ("fine_tune_type", "rank", "scale", "dropout", "lora_keys", "num_layers"):
            if k in resumed.params and resumed.params[k] is not None:
                fields.setdefault(k, resumed.params[k])
    spec = Spec(
        model=base.name if base else ref,
        model_id=base.id if base else None,
        data=data,
        name=spec_name,
        resume=resumed.name if resumed else None,
        resume_adapter_id=resumed.id if resumed else None,
        **fields,
    )
    if base is not None:
        check_against_model(spec, base)
        if resumed is not None:
            from mlxd.jobs.base import JobFailed

            try:
                check_adapter_base(resumed, base)
            except JobFailed as e:
                raise BadUsage(str(e)) from None
            if spec.iters <= resumed.iterations:
                raise BadUsage(
                    f"adapter '{resumed.name}' already has {resumed.iterations} "
                    f"iterations; pass --iters above {resumed.iterations}"
                )
    return spec


_PLANNED: set[str] = set()  # names given to this command's own runs


def _check_data(specs, base) -> None:
    """Read and check the data once, before anything is queued."""
    from pathlib import Path

    from mlxd.jobs.finetune_data import (
        Features,
        check_batches,
        check_length_limit,
        load_training_data,
    )

    seen = {}
    for spec in specs:
        key = (spec.data, spec.seed, spec.valid_fraction, tuple(sorted(spec.features.items())))
        if key not in seen:
            seen[key] = load_training_data(
                spec.data,
                features=Features(**spec.features),
                seed=spec.seed,
                valid_fraction=spec.valid_fraction,
            )
        data = seen[key]
        spec.data_split = data.split_note
        check_batches(data, spec.batch_size)
        if spec.mask_prompt and data.format == "text":
            raise BadUsage("--mask-prompt needs prompt/completion or chat data, not text")
        if base is not None:
            note = check_length_limit(
                data,
                Path(base.path) / "tokenizer.json",
                spec.max_seq_length,
                Features(**spec.features),
            )
            if note and spec is specs[0]:
                click.echo(f"Note: {note}", err=True)
    for data in seen.values():
        if data.split_note:
            click.echo(f"Note: {data.split_note}", err=True)


def _submit_graph(store, specs, base, combos, jobs, then_fuse, wait, running):
    """A grid (and its fuses): one plan, queued whole or not at all. ``jobs``: the job
    options (after, priority, timeout_s, pool)."""
    from mlxd.catalog.models import FinetuneSweep
    from mlxd.cli.context import get_paths, get_reader, refused
    from mlxd.cli.submit import echo_notes, note_no_daemon, queue
    from mlxd.jobs import fuse as fuse_kind
    from mlxd.scheduling import Node, SchedulingError, check_graph

    after, priority, timeout_s, pool = jobs
    fuse_specs = [
        fuse_kind.Spec(model=spec.model, model_id=spec.model_id, adapter=spec.name)
        for spec in (specs if then_fuse else ())
    ]
    for fspec in fuse_specs:  # every fused model's name must be free before anything is queued
        if store.find_model(fspec.name) is not None:
            raise BadUsage(f"a model named '{fspec.name}' already exists; remove it first")

    def plan() -> list:
        nodes = []
        for i, spec in enumerate(specs):
            nodes.append(Node("finetune", spec, after, None, priority, timeout_s))
            if then_fuse:  # the fuse waits on its run (no --timeout: that was the run's)
                nodes.append(
                    Node("fuse", fuse_specs[i], after_node=len(nodes) - 1, priority=priority)
                )
        return nodes

    sweep = None
    if len(specs) > 1:
        if base is None:
            raise BadUsage("a grid needs a model that exists already (not one made --after a job)")
        try:  # the limit, admission and prerequisites of the whole grid before its sweep row
            check_graph(plan(), pool=pool, paths=get_paths(), reader=get_reader())
        except SchedulingError as e:
            raise refused(e) from None
        keys = sorted({k for c in combos for k in c})
        sweep = store.add_finetune_sweep(
            FinetuneSweep(
                base_model_id=base.id,
                params={
                    "grid": {k: sorted({c[k] for c in combos}, key=str) for k in keys},
                    "data": specs[0].data,
                    "fuse": then_fuse,
                },
            )
        )
        for spec in specs:
            spec.sweep_id = sweep.id
    queued = queue(plan(), pool=pool)
    step = 2 if then_fuse else 1
    runs = []
    for i, (spec, combo) in enumerate(zip(specs, combos, strict=True)):
        job_id = queued.job_ids[i * step]
        fuse_job = queued.job_ids[i * step + 1] if then_fuse else None
        runs.append({"adapter": spec.name, "job": job_id, "fuse_job": fuse_job, "grid": combo})
        line = f"Queued job {job_id}: {_describe(spec)}"
        if fuse_job:
            line += f"; fuse job {fuse_job} -> {spec.name}-fused"
        click.echo(line)
    if sweep is not None:
        with store.write() as s:
            sweep = s.get(type(sweep), sweep.id)
            sweep.runs = runs
            s.add(sweep)
        click.echo(
            f"Finetune sweep {sweep.id}: {len(runs)} runs of {base.name}; "
            f"see 'mlxd finetune show {sweep.id}'"
        )
    echo_notes(queued.notes)
    if not running:
        note_no_daemon("the jobs start")
    if wait:
        failed = []
        for run in runs:
            for job_id in (run["job"], run["fuse_job"]):
                if job_id is None:
                    continue
                try:
                    follow(job_id)
                except UserError as e:
                    failed.append(job_id)
                    click.echo(f"Error: {e.message}", err=True)
        if sweep is not None:
            _print_sweep(get_reader().finetune_sweep(sweep.id), fmt="text")
        if failed:
            raise UserError(
                f"job(s) {', '.join(map(str, failed))} did not succeed; see 'mlxd jobs logs ID'"
            )


def _describe(spec) -> str:
    from mlxd.jobs.finetune import describe

    return describe(spec)


def _print_adapter_summary(name: str) -> None:
    a = get_reader().find_adapter(name)
    if a is None:
        return
    parts = [f"Adapter {a.name}: {a.iterations} iterations"]
    if a.final_train_loss is not None:
        parts.append(f"train loss {a.final_train_loss:.3f}")
    if a.final_val_loss is not None:
        parts.append(f"val loss {a.final_val_loss:.3f}")
    if a.test_perplexity is not None:
        parts.append(f"test perplexity {significant(a.test_perplexity, 3)}")
    click.echo(", ".join(parts))


@finetune.command()
@click.argument("sweep_id", type=int)
@output_options()
@catalog_errors
def show(sweep_id, fmt):
    """Show a finetune sweep: its runs, best validation loss first."""
    _print_sweep(get_reader().finetune_sweep(sweep_id), fmt=fmt)


HEADERS = [
    "Adapter",
    "Type",
    "LR",
    "Rank",
    "Layers",
    "Iters",
    "Train loss",
    "Val loss",
    "Test ppl",
    "Tok/s",
    "Peak mem",
    "Wall (s)",
    "Status",
]


def _print_sweep(sw, *, fmt: str) -> None:
    import dataclasses

    from mlxd.jobs.finetune_plan import sweep_rows

    rows = sweep_rows(get_reader(), sw)
    if fmt == "json":
        echo_json({"id": sw.id, "params": sw.params, "rows": [dataclasses.asdict(r) for r in rows]})
        return
    if fmt in ("csv", "jsonl"):
        emit(fmt, [dataclasses.asdict(r) for r in rows])
        return
    table = [
        (
            r.adapter,
            r.fine_tune_type,
            _g(r.learning_rate),
            r.rank if r.rank is not None else "-",
            r.num_layers,
            f"{r.iterations or 0}/{r.iters}",
            _f(r.train_loss, 3),
            _f(r.val_loss, 3),
            _f(r.test_perplexity, 3, sig=True),
            _f(r.tokens_per_s, 0),
            human_bytes(None if r.peak_memory_gb is None else r.peak_memory_gb * 1e9),
            _f(r.wall_time_s, 1),
            r.job_status + (f", fused {r.fused_model}" if r.fused_model else ""),
        )
        for r in rows
    ]
    if fmt == "text":
        grid = ", ".join(
            f"{k} {', '.join(map(str, v))}" for k, v in sw.params.get("grid", {}).items()
        )
        click.echo(f"Finetune sweep {sw.id}: {grid}; best validation loss first")
    click.echo(render_table(HEADERS, table, markdown=fmt == "md"))


def _g(v) -> str:
    return significant(v, 6)


def _f(v, digits: int, *, sig: bool = False) -> str:
    if v is None:
        return ""
    return significant(v, digits) if sig else f"{v:.{digits}f}"


SWEEP_FIELDS = ("id", "base", "runs", "grid", "created_at")  # a listed sweep (and CSV header)


@finetune.command("list")
@output_options()
@catalog_errors
def list_(fmt):
    """List finetune sweeps, oldest first."""
    reader = get_reader()
    rows = []
    for sw in reader.finetune_sweeps():
        base = reader.model_by_id(sw.base_model_id)
        values = (sw.id, base.name if base else None, len(sw.runs))
        values += (sw.params.get("grid", {}), sw.created_at)
        rows.append(dict(zip(SWEEP_FIELDS, values, strict=True)))
    emit(
        fmt,
        rows,
        fields=SWEEP_FIELDS,
        headers=["ID", "BASE", "RUNS", "GRID", "CREATED"],
        table=lambda r: (
            r["id"],
            r["base"],
            r["runs"],
            "; ".join(f"{k} {','.join(map(str, v))}" for k, v in r["grid"].items()),
            when(r["created_at"]),
        ),
        empty="No finetune sweeps. Queue one with comma lists, e.g. --learning-rate 1e-4,3e-4.",
    )


@click.command()
@click.argument("ref")
@click.option(
    "--adapter",
    required=True,
    metavar="ADAPTER",
    help="The adapter to fuse (catalog name, id or path)",
)
@click.option(
    "--dequantize", is_flag=True, help="Save a quantized base's fused weights unquantized"
)
@click.option("--name", help="Name of the new model (default: ADAPTER-fused)")
@job_options
@catalog_errors
def fuse(ref, adapter, dequantize, name, wait, after, priority, timeout_s, pool):
    """Fuse an adapter into its base: a new model, checked against base + adapter."""
    from mlxd.catalog.store import NotFound
    from mlxd.cli.submit import check_free_name, model_ref, submit
    from mlxd.jobs.base import JobFailed
    from mlxd.jobs.finetune import check_adapter_base
    from mlxd.jobs.fuse import Spec

    ref, model_id = model_ref(ref, after)
    store = get_store()
    adapter_id = None
    try:
        a = store.resolve_adapter(adapter)
        adapter, adapter_id = a.name, a.id
        if model_id is not None:
            try:
                check_adapter_base(a, store.resolve_model(model_id))
            except JobFailed as e:
                raise BadUsage(str(e)) from None
    except NotFound:
        if after is None:
            raise
    spec = Spec(
        model=ref,
        model_id=model_id,
        adapter=adapter,
        adapter_id=adapter_id,
        dequantize=dequantize,
        name=name,
    )
    check_free_name(spec.name)
    submit("fuse", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s, pool=pool)
