"""mlxd results: the benchmark table."""

from __future__ import annotations

import click

from mlxd.cli.common import (
    catalog_errors,
    echo_csv,
    echo_json,
    get_store,
    human_bytes,
    output_options,
    render_table,
    row_dict,
    when,
)


def result_rows(model_refs: tuple[str, ...] = ()) -> list[dict]:
    """Benchmark runs as flat rows (one per measured point), with model and machine names."""
    from sqlmodel import select

    from mlxd.catalog.models import BenchRun, Model, System

    store = get_store()
    model_ids = [store.resolve_model(ref).id for ref in model_refs]
    with store.read() as s:
        q = (
            select(BenchRun, Model, System)
            .join(Model, Model.id == BenchRun.model_id)
            .join(System, System.id == BenchRun.system_id)
            .order_by(BenchRun.id)
        )
        if model_ids:
            q = q.where(BenchRun.model_id.in_(model_ids))
        out = []
        for run, model, system in s.exec(q):
            row = {
                "run_id": run.id,
                "job_id": run.job_id,
                "model": model.name,
                "model_id": model.id,
                "quantization": model.quant_recipe or (model.quant_mode if model.quant_mode != "affine" else None)
                or (f"{model.quant_bits}bit-g{model.quant_group_size}" if model.quant_bits else model.dtype),
                "bits_per_weight": model.bits_per_weight,
                "model_size_bytes": model.size_bytes,
            }  # fmt: skip
            row.update(
                {
                    k: v
                    for k, v in row_dict(run).items()
                    if k not in ("id", "job_id", "model_id", "details")
                }
            )
            row.update({f"{k}": v for k, v in (run.details or {}).items()})
            row.update(
                host=system.host,
                cpu=system.cpu,
                chip=system.chip,
                backend=system.backend,
                os=f"{system.os_name} {system.os_version}",
                mlx_version=system.mlx_version,
                mlx_lm_version=system.mlx_lm_version,
                mlxd_version=system.mlxd_version,
            )
            out.append(row)
        return out


def _pm(mean, std, digits=1) -> str:
    if mean is None:
        return ""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


@click.command()
@click.option(
    "--model", "models", multiple=True, metavar="REF", help="Only this model (repeatable)"
)
@click.option("--md", "md", is_flag=True, help="Output as a Markdown table")
@output_options()
@catalog_errors
def results(models: tuple[str, ...], md: bool, json_: bool, csv_: bool):
    """Benchmark results: tok/s, time to first token and peak memory per point."""
    rows = result_rows(models)
    if json_:
        echo_json(rows)
        return
    if csv_:
        echo_csv(rows)
        return
    if not rows:
        click.echo("No benchmark results yet. Queue one with 'mlxd bench REF'.")
        return
    headers = ["RUN", "MODEL", "QUANT", "P", "G", "B", "DEPTH", "KV", "N",
               "PROMPT TOK/S", "GEN TOK/S", "TTFT S", "PEAK MEM", "HOST", "WHEN"]  # fmt: skip
    table = [
        (
            r["run_id"],
            r["model"],
            r["quantization"] or "",
            r["prompt_tokens"],
            r["gen_tokens"],
            r["batch_size"],
            r["depth"],
            r["kv_bits"] or "",
            r["trials"],
            _pm(r["prompt_tps_mean"], r["prompt_tps_std"]),
            _pm(r["generation_tps_mean"], r["generation_tps_std"]),
            _pm(r["ttft_s_mean"], r["ttft_s_std"], 3),
            human_bytes(r["peak_memory_bytes"]),
            r["host"],
            when(r["created_at"]),
        )
        for r in rows
    ]
    click.echo(render_table(headers, table, markdown=md))
