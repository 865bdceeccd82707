"""mlxd quality: ``mlxd quality REF`` queues a quality job (as before, same as ``quality run
REF``); ``mlxd quality list`` shows every stored quality run."""

from __future__ import annotations

import click

from mlxd.cli.context import catalog_errors, get_reader
from mlxd.cli.groups import DefaultGroup
from mlxd.cli.output import emit, empty_text, output_options, sig, when
from mlxd.cli.params import list_option
from mlxd.cli.quality_cmd import quality as run_quality


@click.group(cls=DefaultGroup)
def quality():
    """Perplexity, KL divergence and top-1 agreement against a base model.

    \b
    mlxd quality REF [--base REF]   queue a quality job (same as 'quality run REF ...')
    mlxd quality list               every stored quality run
    """


quality.add_command(run_quality, "run")


@quality.command("list")
@list_option("--model", "models", metavar="REF", help="Only these models (comma list or repeated)")
@list_option(
    "--adapter",
    "adapters",
    metavar="ADAPTER",
    help="Only runs with these adapters, unfused (comma list or repeated)",
)
@output_options()
@catalog_errors
def list_quality(models, adapters, fmt):
    """Every quality run: perplexity, KL and top-1 agreement against its base."""
    reader = get_reader()
    ids = [reader.model(ref).id for ref in models]
    adapter_ids = [reader.adapter(ref).id for ref in adapters]
    rows = reader.quality_rows(ids or None, adapter_ids or None)
    emit(
        fmt,
        rows,
        headers=[
            "RUN",
            "MODEL",
            "BASE",
            "PERPLEXITY",
            "BASE PPL",
            "KL",
            "TOP-1",
            "TOKENS",
            "TEXT",
            "HOST",
            "WHEN",
        ],
        table=lambda r: (
            r["run_id"],
            r["model"],
            r["base"] or "",
            sig(r["perplexity"]),
            sig(r["base_perplexity"]),
            sig(r["kl_mean"], 3),
            "" if r["top1_agreement"] is None else f"{r['top1_agreement']:.1%}",
            r["tokens"],
            r["text_name"],
            r["host"] or "",
            when(r["created_at"]),
        ),
        empty=empty_text(
            "quality runs",
            [
                models and "of model " + " or ".join(f"'{m}'" for m in models),
                adapters and "with adapter " + " or ".join(f"'{a}'" for a in adapters),
            ],
            "No quality runs yet. Queue one with 'mlxd quality REF'.",
        ),
    )
