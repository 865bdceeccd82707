"""mlxd quality: queue a quality job (perplexity, KL and top-1 against a base)."""

from __future__ import annotations

from collections.abc import Callable

import click

from mlxd.cli.context import BadUsage, catalog_errors
from mlxd.cli.output import sig
from mlxd.cli.params import renamed_option
from mlxd.cli.submit import catalog_model, job_options, model_ref, submit, usable_adapter


def text_options(prefix: str = "") -> Callable:
    """--text FILE and --text-tokens N (once --max-tokens): the text a quality job scores;
    ``prefix`` names the part of a larger command they belong to ("Quality: ")."""

    def say(text: str) -> str:
        return f"{prefix}{text[0].lower()}{text[1:]}" if prefix else text

    def decorate(fn: Callable) -> Callable:
        fn = renamed_option(
            "--max-tokens", "--text-tokens", "text_tokens", type=click.IntRange(min=2)
        )(fn)
        fn = click.option(
            "--text-tokens",
            type=click.IntRange(min=2),
            metavar="N",
            help=say("Read at most N tokens of the text (N - 1 are scored)"),
        )(fn)
        return click.option(
            "--text",
            type=click.Path(),
            metavar="FILE",
            help=say("Score this text file (default: the text that ships with mlxd)"),
        )(fn)

    return decorate


@click.command()
@click.argument("ref")
@click.option(
    "--base",
    metavar="REF",
    help="Compare with this model (default: the nearest unquantized ancestor)",
)
@text_options()
@click.option(
    "--adapter",
    metavar="ADAPTER",
    help="Score the model with this fine-tuned adapter, unfused (default base: the model alone)",
)
@job_options
@catalog_errors
def quality(ref, base, text, text_tokens, adapter, wait, after, priority, timeout_s, pool):
    """Perplexity on a fixed text, and KL divergence and top-1 agreement vs a base."""
    from mlxd.jobs.base import check_same_tokenizer
    from mlxd.jobs.quality import Spec

    ref, model_id = model_ref(ref, after)
    adapter, adapter_id = usable_adapter(adapter, model_id)
    base_id = None
    if base is not None:
        base, base_id = model_ref(base, after)
        if base == ref and adapter is None:
            raise BadUsage(f"--base {base} is the model itself; compare it with another model")
        model, base_model = catalog_model(model_id), catalog_model(base_id)
        if base != ref and model is not None and base_model is not None:
            check_same_tokenizer(
                model,
                base_model,
                "quality compares a model with a base of the same vocabulary "
                "(e.g. its unquantized parent)",
            )
    spec = Spec(
        model=ref,
        model_id=model_id,
        base=base,
        base_id=base_id,
        text=text,
        max_tokens=text_tokens,
        adapter=adapter,
        adapter_id=adapter_id,
    )
    job_id = submit(
        "quality", spec, wait=wait, after=after, priority=priority, timeout_s=timeout_s, pool=pool
    )
    if wait:  # end with the figures, as bench --wait ends with its table
        from mlxd.cli.context import get_reader
        from mlxd.cli.output import render_table

        rows = [r for r in get_reader().quality_rows() if r["job_id"] == job_id]
        table = [
            (
                r["model"],
                r["base"] or "",
                sig(r["perplexity"], 4),
                sig(r["kl_mean"], 4),
                "" if r["top1_agreement"] is None else f"{r['top1_agreement']:.1%}",
                r["tokens"],
            )
            for r in rows
        ]
        if table:
            click.echo(
                render_table(["MODEL", "BASE", "PERPLEXITY", "KL", "TOP-1", "TOKENS"], table)
            )
