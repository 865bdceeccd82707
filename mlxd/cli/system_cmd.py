"""mlxd system probe|show: this machine's facts, power state and measured memory bandwidth."""

from __future__ import annotations

import click

from mlxd.cli.context import UserError, catalog_errors, get_paths
from mlxd.cli.output import echo_facts, echo_json, human_bytes, output_options, row_dict, when
from mlxd.cli.params import spec_default
from mlxd.jobs.probe import Spec as ProbeSpec


@click.group()
def system():
    """Show this machine's facts and measure its memory bandwidth."""


@system.command()
@click.option(
    "--size-mb",
    type=click.IntRange(min=1),
    metavar="MB",
    help="Array size in MiB (default: 256-1024, from the machine's RAM)",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=spec_default(ProbeSpec, "repeats"),
    show_default=True,
    help="Timed runs; the best one counts",
)
@catalog_errors
def probe(size_mb: int | None, repeats: int):
    """Measure the memory bandwidth once and store it (runs now, no daemon)."""
    from mlxd.catalog.read import Reader
    from mlxd.cli.submit import foreground_runner
    from mlxd.config import host_id
    from mlxd.jobs.probe import Spec
    from mlxd.scheduling import foreground_job

    spec = Spec(size_mb=size_mb, repeats=repeats)
    # A job row like any other, run in its own child process: this command never imports mlx.
    job_id = foreground_job("probe", spec, paths=get_paths())
    click.echo(f"Measuring memory bandwidth (best of {repeats} runs per kernel)...", err=True)
    # What it measures, step i/n, on stderr: a probe of a large array takes a while.
    outcome = foreground_runner(on_progress=lambda _, msg: click.echo(f"  {msg}", err=True)).handle(
        job_id
    )
    if outcome is None or outcome.status != "succeeded":
        raise UserError(f"probe failed: {outcome.error if outcome else 'not run'}")
    with Reader(get_paths()) as reader:
        p = reader.latest_probe(host_id())
    click.echo(
        f"Memory bandwidth: {p.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s "
        f"({p.backend}, {p.method}); stored as probe {p.id}"
    )


@system.command()
@output_options("show")
def show(fmt: str):
    """Show this machine's facts, power state and latest bandwidth probe."""
    from mlxd.catalog.read import Reader
    from mlxd.system.sysinfo import machine_facts, power_state

    facts = machine_facts()
    power = power_state()
    with Reader(get_paths()) as reader:
        latest = reader.latest_probe(facts["host"])
    if fmt == "json":
        echo_json({**facts, **power, "probe": row_dict(latest) if latest else None})
        return
    rows = [
        ("host", facts["host"]),
        ("os", f"{facts['os_name']} {facts['os_version']}"),
        ("cpu", facts["cpu"]),
        ("chip", facts["chip"]),
        ("cores", _cores(facts)),
        ("gpu cores", facts["gpu_cores"]),
        ("ram", human_bytes(facts["ram_bytes"])),
        ("backend", facts["backend"]),
        ("python", facts["python_version"]),
        ("mlx", facts["mlx_version"]),
        ("mlx-lm", facts["mlx_lm_version"]),
        ("mlxd", facts["mlxd_version"]),
        ("power source", power["power_source"]),
        ("low power mode", _yes_no(power["low_power_mode"])),
        ("thermal state", power["thermal_state"]),
    ]
    if latest:
        rows.append(
            (
                "memory bandwidth",
                f"{latest.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s "
                f"(probe {latest.id}, {when(latest.created_at)}, {latest.method})",
            )
        )
    else:
        rows.append(("memory bandwidth", "not measured yet; run 'mlxd system probe'"))
    echo_facts(rows)


def _cores(facts: dict) -> str:
    text = f"{facts['cores_physical']} physical, {facts['cores_logical']} logical"
    if facts.get("cores_performance"):
        text += f" ({facts['cores_performance']}P + {facts.get('cores_efficiency') or 0}E)"
    return text


def _yes_no(value: bool | None) -> str | None:
    return None if value is None else ("on" if value else "off")
