"""mlxd quality: queue a quality job; quality_rows() gives the stored runs to other commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from mlxd.cli.common import BadUsage, catalog_errors, job_options, row_dict, submit
from mlxd.cli.work_cmd import model_ref


@click.command()
@click.argument("ref")
@click.option("--base", metavar="REF",
              help="Compare with this model (default: the nearest unquantized ancestor)")  # fmt: skip
@click.option("--text", "text", metavar="FILE",
              help="Score this text file (default: the text that ships with mlxd)")  # fmt: skip
@click.option(
    "--max-tokens",
    type=int,
    metavar="N",
    help="Read at most N tokens of the text (N - 1 are scored)",
)
@job_options
@catalog_errors
def quality(ref, base, text, max_tokens, wait, after, priority, timeout_s):
    """Perplexity on a fixed text, and KL divergence and top-1 agreement vs a base."""
    from mlxd.jobs.quality import Spec

    ref, model_id = model_ref(ref, after)
    base_id = None
    if base is not None:
        base, base_id = model_ref(base, after)
        if base == ref:
            raise BadUsage(f"--base {base} is the model itself; compare it with another model")
    spec = Spec(
        model=ref,
        model_id=model_id,
        base=base,
        base_id=base_id,
        text=text,
        max_tokens=max_tokens,
    )
    submit("quality", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s)


def quality_rows(store, model_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Quality runs as flat rows, oldest first, with model, base and machine names."""
    from sqlalchemy.orm import aliased
    from sqlmodel import select

    from mlxd.catalog.models import Model, QualityRun, System

    base = aliased(Model)
    with store.read() as s:
        q = (
            select(QualityRun, Model, base, System)
            .join(Model, Model.id == QualityRun.model_id)
            .join(base, base.id == QualityRun.base_model_id, isouter=True)
            .join(System, System.id == QualityRun.system_id, isouter=True)
            .order_by(QualityRun.id)
        )
        if model_ids:
            q = q.where(QualityRun.model_id.in_(list(model_ids)))
        rows = []
        for run, model, base_model, system in s.exec(q):
            row: dict[str, Any] = {"run_id": run.id, "job_id": run.job_id, "model": model.name,
                                   "model_id": model.id,
                                   "base": base_model.name if base_model else None}  # fmt: skip
            row.update(
                {k: v for k, v in row_dict(run).items() if k not in ("id", "job_id", "model_id")}
            )
            row.update(
                bits_per_weight=model.bits_per_weight,
                host=system.host if system else None,
                backend=system.backend if system else None,
            )
            rows.append(row)
        return rows
