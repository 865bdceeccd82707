"""mlxd sweep REF --bits ... | sweep show ID | sweep list.

``sweep`` is a group so that ``show`` and ``list`` live next to the submitting form, and
anything that is not a subcommand name is handed to ``run``: ``mlxd sweep REF --bits 4,8``
(the documented contract) is ``mlxd sweep run REF --bits 4,8``. A model that happens to be
called "show" or "list" is still reachable with the explicit ``mlxd sweep run show``.
"""

from __future__ import annotations

import click

from mlxd.cli.common import (
    UserError,
    catalog_errors,
    echo_csv,
    echo_json,
    follow,
    get_store,
    output_options,
    release_if_runnable,
    render_table,
    when,
)
from mlxd.cli.work_cmd import int_list

RECIPES = ["mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"]


class _SweepGroup(click.Group):
    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_SweepGroup)
def sweep():
    """Quantize a model many ways, then benchmark and score every variant.

    \b
    mlxd sweep REF --bits 4,8 --group-size 32,64   queue a sweep (same as 'sweep run REF ...')
    mlxd sweep show ID                             its table, like mlx-lm's BENCHMARKS.md
    """


@sweep.command("run")
@click.argument("ref")
@click.option("--bits", default="4", show_default=True, help="Bit widths, e.g. 3,4,6,8")
@click.option("--group-size", default="64", show_default=True, help="Group sizes, e.g. 32,64")
@click.option("--recipe", "recipes", multiple=True, type=click.Choice(RECIPES),
              help="Also a mixed-precision recipe (repeatable)")  # fmt: skip
@click.option("-p", "--prompt-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("-g", "--gen-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("-n", "--trials", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True)
@click.option(
    "--max-tokens", type=int, metavar="N", help="Quality: read at most N tokens of the text"
)
@click.option("--text", metavar="FILE", help="Quality: score this text (default: mlxd's own)")
@click.option(
    "--wait", is_flag=True, help="Follow every job, then print the table; exit 1 if one fails"
)
@catalog_errors
def run(ref, bits, group_size, recipes, prompt_tokens, gen_tokens, trials, warmup, max_tokens,
        text, wait):  # fmt: skip
    """Queue a sweep: quantize, bench and quality jobs for each variant and the base."""
    from mlxd.cli.common import get_paths
    from mlxd.daemon.service import status
    from mlxd.sweeps import SweepRequest, plan_sweep, submit_sweep

    store = get_store()
    if wait and not status(get_paths()).running:
        raise UserError("the daemon is not running; start it with 'mlxd daemon start' "
                        "(or leave out --wait to queue the sweep for later)")  # fmt: skip
    req = SweepRequest(
        base=ref,
        # Each value once: --bits 8,8 is one variant, not two.
        bits=list(dict.fromkeys(int_list(bits, "--bits"))),
        group_sizes=list(dict.fromkeys(int_list(group_size, "--group-size"))),
        recipes=list(dict.fromkeys(recipes)),
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        trials=trials,
        warmup=warmup,
        max_tokens=max_tokens,
        text=text,
    )
    plan = plan_sweep(store, req)

    def submit(kind, spec, after):
        job = store.submit_job(kind, spec.to_params(), after_job_id=after)
        release_if_runnable(job.id)
        return job.id

    sw = submit_sweep(store, plan, submit)
    click.echo(f"Sweep {sw.id} of {plan.base_name}: {len(plan.variants) - 1} variant(s) + base")
    for v in sw.variants:
        jobs = ", ".join(
            f"{k.removesuffix('_job')} {v[k]}"
            + (" (reused)" if k.removesuffix("_job") in v["reused"] else "")
            for k in ("quantize_job", "bench_job", "quality_job")
            if v.get(k) is not None
        )
        click.echo(f"  {v['variant']:<16} {v['model']:<28} {jobs}")
    reused = [v["variant"] for v in sw.variants if "quantize" in v["reused"]]
    if reused:
        click.echo(f"Reused existing variant(s), not quantized again: {', '.join(reused)}")
    if not status(get_paths()).running:
        click.echo("Note: the daemon is not running; the jobs start with 'mlxd daemon start'.",
                   err=True)  # fmt: skip
    if wait:
        _follow_all(sw)
        click.echo()
        _print_table(sw, fmt="text")
    else:
        click.echo(f"See the table with: mlxd sweep show {sw.id}")


def _follow_all(sw) -> None:
    from mlxd.sweeps import sweep_jobs

    failed = []
    for job_id in sweep_jobs(sw):
        try:
            follow(job_id, show_progress=True)
        except UserError as e:
            failed.append(job_id)
            click.echo(f"Error: {e.message}", err=True)
    if failed:
        _print_table(sw, fmt="text")
        raise UserError(f"sweep {sw.id}: job(s) {', '.join(map(str, failed))} did not succeed; "
                        f"see 'mlxd jobs logs ID'")  # fmt: skip


@sweep.command()
@click.argument("sweep_id", type=int)
@click.option("--md", "md", is_flag=True, help="Output as a Markdown table")
@output_options()
@catalog_errors
def show(sweep_id, md, json_, csv_):
    """Show a sweep as a table: perplexity, KL, speed, memory and size per variant."""
    from mlxd.sweeps import get_sweep

    sw = get_sweep(get_store(), sweep_id)
    _print_table(sw, fmt="json" if json_ else "csv" if csv_ else "md" if md else "text")


@sweep.command("list")
@output_options()
@catalog_errors
def list_(json_, csv_):
    """List sweeps, oldest first."""
    from mlxd.catalog.models import Model
    from mlxd.sweeps import list_sweeps

    store = get_store()
    sweeps = list_sweeps(store)
    rows = []
    with store.read() as s:
        for sw in sweeps:
            base = s.get(Model, sw.base_model_id)
            rows.append({
                "id": sw.id,
                "base": base.name if base else None,
                "variants": [v["variant"] for v in sw.variants if v["variant"] != "base"],
                "params": sw.params,
                "created_at": sw.created_at,
            })  # fmt: skip
    if json_:
        echo_json(rows)
        return
    if csv_:
        echo_csv(rows)
        return
    if not rows:
        click.echo("No sweeps. Queue one with 'mlxd sweep REF --bits 4,8'.")
        return
    table = [(r["id"], r["base"], ", ".join(r["variants"]),
              f"p={r['params'].get('prompt_tokens')} g={r['params'].get('gen_tokens')} "
              f"n={r['params'].get('trials')}", when(r["created_at"])) for r in rows]  # fmt: skip
    click.echo(render_table(["ID", "BASE", "VARIANTS", "BENCH", "CREATED"], table))


HEADERS = ["Precision", "Perplexity", "KL", "Prompt (tok/s)", "Generation (tok/s)",
           "Peak memory (GB)", "Size (GB)", "Bits per weight"]  # fmt: skip


BENCH_FIELDS = ("prompt_tps", "generation_tps", "peak_memory_gb")
QUALITY_FIELDS = ("perplexity", "kl_mean")


def _machine_row(row) -> dict:
    """A row for --json/--csv: numbers or null, and each unfinished job's state apart."""
    import dataclasses

    d = dataclasses.asdict(row)
    for status_key, fields in (("bench_status", BENCH_FIELDS), ("quality_status", QUALITY_FIELDS)):
        states = [d[f] for f in fields if isinstance(d[f], str)]
        d[status_key] = (
            states[0] if states else ("done" if any(d[f] is not None for f in fields) else None)
        )
        for f in fields:
            if isinstance(d[f], str):
                d[f] = None
    return d


def _print_table(sw, *, fmt: str) -> None:
    from mlxd.sweeps import sweep_rows

    rows = sweep_rows(get_store(), sw)
    if fmt == "json":
        echo_json({"id": sw.id, "params": sw.params, "rows": [_machine_row(r) for r in rows]})
        return
    if fmt == "csv":
        echo_csv([_machine_row(r) for r in rows])
        return
    p = sw.params
    table = [
        (
            r.precision,
            _num(r.perplexity, 3),
            "-" if r.variant == "base" else _num(r.kl_mean, 3, sig=True),
            _num(r.prompt_tps, 1),
            _num(r.generation_tps, 1),
            _num(r.peak_memory_gb, 3),
            _num(r.size_gb, 3),
            _num(r.bits_per_weight, 2),
        )
        for r in rows
    ]
    if fmt == "text":
        click.echo(f"Sweep {sw.id}: bench p={p.get('prompt_tokens')} g={p.get('gen_tokens')} "
                   f"n={p.get('trials')}; quality "
                   f"{'max ' + str(p['max_tokens']) + ' tokens' if p.get('max_tokens') else 'default text'}")  # fmt: skip  # noqa: E501
    click.echo(render_table(HEADERS, table, markdown=fmt == "md"))


def _num(v, digits: int, *, sig: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    # KL spans orders of magnitude (8-bit ~1e-5, 3-bit ~1e-1): significant digits, not decimals
    return f"{v:.{digits}g}" if sig else f"{v:.{digits}f}"
