"""mlxd demo: the main job end to end on a small model made locally."""

from __future__ import annotations

import click

from mlxd.cli.common import UserError, follow, get_paths, get_store, submit


@click.command()
@click.option("--name", default="tiny", show_default=True, help="Name of the demo model")
@click.option(
    "--size", type=click.Choice(["tiny", "small", "base"]), default="tiny", show_default=True
)
@click.option("-p", "--prompt-tokens", type=int, default=128, show_default=True)
@click.option("-g", "--gen-tokens", type=int, default=64, show_default=True)
@click.option("-n", "--trials", type=int, default=3, show_default=True)
def demo(name: str, size: str, prompt_tokens: int, gen_tokens: int, trials: int):
    """Make a small model, then convert, quantize (4 and 8 bit) and benchmark each."""
    from mlxd.daemon import service
    from mlxd.jobs import bench, convert, quantize

    p = get_paths()
    click.echo(f"mlxd demo in {p.home}")
    started = False
    if not service.status(p).running:
        pid = service.start_background(p)
        started = True
        click.echo(f"Started the daemon (pid {pid})")
    try:
        store = get_store()
        if store.find_model(name) is None:
            click.get_current_context().invoke(_synth_cmd(), name=name, size=size)
        else:
            click.echo(f"Using the existing model '{name}'")

        jobs: list[int] = []

        def queue(kind, spec, after=None):
            if getattr(spec, "name", None) and store.find_model(spec.name) is not None:
                click.echo(f"Using the existing model '{spec.name}'")
                return None
            job_id = submit(kind, spec, after=after)
            jobs.append(job_id)
            return job_id

        conv = convert.Spec(model=name)
        conv_job = queue("convert", conv)
        targets = [conv.name]
        for bits in (4, 8):
            q = quantize.Spec(model=conv.name, bits=bits, group_size=64)
            queue("quantize", q, after=conv_job)
            targets.append(q.name)
        for target in targets:
            producer = next(
                (j for j in jobs if store.get_job(j).params.get("name") == target), None
            )
            spec = bench.Spec(model=target, prompt_tokens=[prompt_tokens],
                              gen_tokens=[gen_tokens], trials=trials, warmup=1)  # fmt: skip
            queue("bench", spec, after=producer)
        click.echo("Following the jobs...")
        failed = []
        for job_id in jobs:
            try:
                follow(job_id)
            except UserError as e:
                failed.append(job_id)
                click.echo(f"Error: {e.message}", err=True)
        from mlxd.cli.results_cmd import results

        click.echo()
        click.get_current_context().invoke(results, models=tuple(targets), md=False,
                                           json_=False, csv_=False)  # fmt: skip
        click.echo(f"\nSee these again with: MLXD_HOME={p.home} mlxd results")
        if failed:
            raise UserError(f"demo job(s) {failed} failed; see 'mlxd jobs logs ID'")
    finally:
        if started:
            service.stop(p)
            click.echo("Stopped the daemon the demo started")


def _synth_cmd():
    from mlxd.cli.models_cmd import synth

    return synth
