"""mlxd adapters list|show|rm: fine-tuned adapters in the catalog."""

from __future__ import annotations

import click

from mlxd.cli.context import UserError, catalog_errors, get_reader, get_store
from mlxd.cli.output import (
    echo_facts,
    echo_json,
    emit,
    empty_text,
    human_bytes,
    human_count,
    output_options,
    render_table,
    row_dict,
    sig,
    when,
)


@click.group()
def adapters():
    """List, show and remove fine-tuned adapters."""


def state(adapter, job) -> str:
    """ready | training (queued/running) | stopped at N/M (resume it) | failed."""
    if adapter.status == "ready":
        return "ready"
    if job is not None and job.status in ("queued", "running"):
        return f"training {adapter.iterations}/{adapter.target_iterations}"
    if adapter.iterations > 0:
        return f"stopped at {adapter.iterations}/{adapter.target_iterations}"
    return "failed"


def _job(adapter):
    return None if adapter.job_id is None else get_reader().find_job(adapter.job_id)


def adapter_dict(adapter) -> dict:
    d = row_dict(adapter)
    d["state"] = state(adapter, _job(adapter))
    return d


@adapters.command("list")
@click.option("--model", "model_ref", metavar="REF", help="Only adapters of this base model")
@output_options()
@catalog_errors
def list_(model_ref, fmt):
    """List adapters, oldest first."""
    reader = get_reader()
    base_id = reader.model(model_ref).id if model_ref else None
    found = reader.adapters(base_id)
    rows = [adapter_dict(a) for a in found]
    emit(
        fmt,
        rows,
        fields=[*found.columns, "state"],  # adapter_dict's keys
        headers=["ID", "NAME", "TYPE", "BASE", "STATE", "TRAIN", "VAL", "TEST PPL", "CREATED"],
        table=lambda r: (
            r["id"],
            r["name"],
            r["fine_tune_type"]
            + (" (QLoRA)" if r["base_quantized"] and r["fine_tune_type"] != "full" else ""),
            r["base_model_name"],
            r["state"],
            _f(r["final_train_loss"]),
            _f(r["final_val_loss"]),
            sig(r["test_perplexity"], 3),
            when(r["created_at"]),
        ),
        empty=empty_text(
            "adapters",
            [model_ref and f"of base model '{model_ref}'"],
            "No adapters. Make one with 'mlxd finetune REF --data DIR'.",
        ),
    )


def _f(v) -> str:
    return "" if v is None else f"{v:.3f}"


@adapters.command()
@click.argument("ref")
@output_options("show")
@catalog_errors
def show(ref, fmt):
    """Show an adapter: its base, data, hyper-parameters and loss curves."""
    reader = get_reader()
    a = reader.adapter(ref)
    steps = reader.finetune_steps(a.id)
    evals = reader.finetune_evals(a.id)
    benches, scores = _measured_with(a.id)
    if fmt == "json":
        d = adapter_dict(a)
        d["steps"] = [row_dict(s) for s in steps]
        d["evals"] = [row_dict(e) for e in evals]
        d["bench_runs"] = [{k: r[k] for k in _BENCH_KEYS} for r in benches]
        d["quality_runs"] = [{k: r[k] for k in _QUALITY_KEYS} for r in scores]
        echo_json(d)
        return
    from mlxd.jobs.finetune import RUN_SETTINGS

    p = a.params
    hyper = [
        f"{k}={p[k]}"
        for k in (
            "iters",
            "batch_size",
            "learning_rate",
            "num_layers_used",
            "rank",
            "scale",
            "dropout",
            "max_seq_length",
            "optimizer",
            "seed",
        )
        if k in p
    ]
    if p.get("lr_schedule"):
        hyper.append(f"lr_schedule={p['lr_schedule']}")
    d = a.details or {}
    resumes = d.get("resumes") or []  # each resume's own settings (jobs/finetune.py)
    facts = [
        ("id", a.id),
        ("name", a.name),
        ("state", state(a, _job(a))),
        ("type", a.fine_tune_type + (" (QLoRA: quantized base)" if a.base_quantized else "")),
        ("base", f"{a.base_model_name}" + ("" if a.base_model_id else " (removed)")),
        ("base weights", f"sha256 {a.base_weights_sha256}" if a.base_weights_sha256 else None),
        ("data", a.data_path),
        ("data sha256", a.data_sha256),
        ("data format", d.get("data_format")),
        ("examples", ", ".join(f"{k} {v}" for k, v in (d.get("data_counts") or {}).items())),
        ("split", d.get("data_split")),
        ("hyper-parameters", ", ".join(hyper) + (" (the first run)" if resumes else "")),
        *[
            (
                f"resume {n}",
                f"job {r.get('job_id')} from iteration {r.get('from_iteration')}: "
                + ", ".join(f"{k}={r[k]}" for k in RUN_SETTINGS if r.get(k) is not None and k in r),
            )
            for n, r in enumerate(resumes, 1)
        ],
        ("iterations", f"{a.iterations} of {a.target_iterations}"),
        ("trainable", human_count(a.trainable_parameters) if a.trainable_parameters else None),
        ("train loss", _f(a.final_train_loss) or None),
        ("val loss", _f(a.final_val_loss) or None),
        (
            "test loss",
            None
            if a.test_loss is None
            else f"{a.test_loss:.3f} (perplexity {sig(a.test_perplexity, 3)})",
        ),
        (
            "speed",
            None
            if a.tokens_per_s is None
            else f"{a.tokens_per_s:.0f} tok/s, {a.iterations_per_s:.2f} it/s",
        ),
        ("peak memory", human_bytes(a.peak_memory_bytes) if a.peak_memory_bytes else None),
        ("train time", None if a.train_time_s is None else f"{a.train_time_s:.1f} s"),
        ("job", a.job_id),
        ("folder", a.path),
        ("created", when(a.created_at)),
    ]
    echo_facts(facts)
    if steps or evals:
        click.echo()
        val = {e.iteration: e.loss for e in evals if e.split == "valid"}
        its = sorted({s.iteration for s in steps} | set(val))
        by_it = {s.iteration: s for s in steps}
        table = [
            (
                it,
                _f(by_it[it].train_loss) if it in by_it else "",
                _f(val.get(it)),
                sig(by_it[it].learning_rate, 3) if it in by_it else "",
                f"{by_it[it].tokens_per_s:.0f}" if it in by_it else "",
                human_bytes(by_it[it].peak_memory_bytes) if it in by_it else "",
            )
            for it in its
        ]
        click.echo(render_table(["ITER", "TRAIN", "VAL", "LR", "TOK/S", "PEAK MEM"], table))
        for e in evals:
            if e.split == "test":
                click.echo(f"test loss {e.loss:.3f}, perplexity {sig(e.perplexity, 3)}")
    if benches:
        click.echo(f"\nBenchmarks with {a.name} unfused ('mlxd results --adapter {a.name}'):")
        table = [
            (
                r["run_id"],
                r["job_id"] or "",
                r["model"],
                r["prompt_tokens"],
                r["gen_tokens"],
                "" if r["prompt_tps_mean"] is None else f"{r['prompt_tps_mean']:.1f}",
                "" if r["generation_tps_mean"] is None else f"{r['generation_tps_mean']:.1f}",
                human_bytes(r["peak_memory_bytes"]) if r["peak_memory_bytes"] else "",
                when(r["created_at"]),
            )
            for r in benches
        ]
        click.echo(
            render_table(
                ["RUN", "JOB", "MODEL", "P", "G", "PROMPT TOK/S", "GEN TOK/S", "PEAK", "WHEN"],
                table,
            )
        )
    if scores:
        click.echo(f"\nQuality with {a.name} unfused ('mlxd quality list --adapter {a.name}'):")
        table = [
            (
                r["run_id"],
                r["model"],
                r["base"] or "",
                sig(r["perplexity"], 4),
                sig(r["kl_mean"], 3),
                "" if r["top1_agreement"] is None else f"{r['top1_agreement']:.1%}",
                when(r["created_at"]),
            )
            for r in scores
        ]
        click.echo(render_table(["RUN", "MODEL", "BASE", "PPL", "KL", "TOP-1", "WHEN"], table))


_BENCH_KEYS = (
    "run_id",
    "job_id",
    "model",
    "prompt_tokens",
    "gen_tokens",
    "batch_size",
    "prompt_tps_mean",
    "generation_tps_mean",
    "ttft_s_mean",
    "peak_memory_bytes",
    "host",
)
_QUALITY_KEYS = ("run_id", "job_id", "model", "base", "perplexity", "kl_mean", "top1_agreement")


def _measured_with(adapter_id: int) -> tuple[list, list]:
    """(benchmark rows, quality rows) measured with the adapter, through the read path."""
    from mlxd.catalog.read import ResultFilter

    reader = get_reader()
    benches = reader.result_rows(ResultFilter(adapters=(str(adapter_id),)))
    return benches, reader.quality_rows(adapter_ids=[adapter_id])


@adapters.command()
@click.argument("ref")
@click.option("--keep-files", is_flag=True, help="Remove from the catalog only")
@catalog_errors
def rm(ref, keep_files):
    """Remove an adapter (and its folder under MLXD_HOME)."""
    import shutil
    from pathlib import Path

    from mlxd.cli.context import get_paths

    store = get_store()
    a = store.resolve_adapter(ref)
    job = _job(a)
    if job is not None and job.status in ("queued", "running"):
        raise UserError(
            f"adapter '{a.name}' is being trained by job {job.id}; cancel it first "
            f"('mlxd jobs cancel {job.id}')"
        )
    store.delete_adapter(a.id)
    folder = Path(a.path)
    ours = folder.resolve().is_relative_to((get_paths().home / "adapters").resolve())
    if not keep_files and ours and folder.exists():
        shutil.rmtree(folder)
        click.echo(f"Removed adapter {a.name} and its folder {folder}")
    else:
        click.echo(f"Removed adapter {a.name} from the catalog (files kept at {folder})")
