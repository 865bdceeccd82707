"""mlxd doctor [--fix]."""

from __future__ import annotations

import click

from mlxd.cli.context import UserError, get_paths
from mlxd.cli.output import echo_json, output_options


@click.command()
@click.option("--fix", is_flag=True, help="Apply the safe fixes (never deletes a model)")
@click.option("--no-mlx", "skip_mlx", is_flag=True, help="Skip the mlx check (it imports mlx)")
@output_options("show")
def doctor(fix: bool, skip_mlx: bool, fmt: str):
    """Check mlx, disk, catalog, queue, daemon, jobs and model folders; say what to do."""
    from mlxd.daemon.doctor import apply_fixes, diagnose

    p = get_paths()
    if p.home.exists() and not p.home.is_dir():
        raise UserError(f"MLXD_HOME {p.home} is not a folder")
    findings = diagnose(p, mlx=not skip_mlx)
    if fix:
        apply_fixes(p, findings)
    if fmt == "json":
        echo_json([f.as_dict() for f in findings])
    else:
        for f in findings:
            mark = "ok  " if f.ok else "FAIL"
            click.echo(f"{mark}  {f.check}: {f.detail}")
            if not f.ok and f.advice:
                click.echo(f"      -> {f.advice}")
            if f.fixed:
                click.echo(f"      fixed: {f.fixed}")
            elif not f.ok and f.fix is not None and not fix:
                click.echo("      (mlxd doctor --fix does this)")
    unresolved = [f for f in findings if not f.ok and not f.resolved]
    if unresolved:
        raise SystemExit(1)
