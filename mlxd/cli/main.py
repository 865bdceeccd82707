"""The `mlxd` entry point: a Click group that loads its subcommands only when asked."""

from __future__ import annotations

import importlib
import sys

import click

from mlxd import __version__

# name -> "module:attribute"; a command's module is imported only when that command runs
# (or when help lists it), so `mlxd --help` stays fast.
COMMANDS = {
    "daemon": "mlxd.cli.daemon_cmd:daemon",
    "models": "mlxd.cli.models_cmd:models",
    "convert": "mlxd.cli.work_cmd:convert",
    "quantize": "mlxd.cli.work_cmd:quantize",
    "bench": "mlxd.cli.work_cmd:bench",
    "quality": "mlxd.cli.quality_list_cmd:quality",
    "generate": "mlxd.cli.generate_cmd:generate",
    "chat": "mlxd.cli.chat_cmd:chat",
    "batch": "mlxd.cli.batch_cmd:batch",
    "cache-prompt": "mlxd.cli.batch_cmd:cache_prompt",
    "jobs": "mlxd.cli.jobs_cmd:jobs",
    "results": "mlxd.cli.results_cmd:results",
    "sweep": "mlxd.cli.sweep_cmd:sweep",
    "demo": "mlxd.cli.demo_cmd:demo",
    "system": "mlxd.cli.system_cmd:system",
    "doctor": "mlxd.cli.doctor_cmd:doctor",
    "pull": "mlxd.cli.hub_cmd:pull",
    "push": "mlxd.cli.hub_cmd:push",
    "report": "mlxd.cli.report_cmd:report",
    "recommend": "mlxd.cli.report_cmd:recommend",
    "regressions": "mlxd.cli.report_cmd:regressions",
    "finetune": "mlxd.cli.finetune_cmd:finetune",
    "fuse": "mlxd.cli.finetune_cmd:fuse",
    "adapters": "mlxd.cli.adapters_cmd:adapters",
    "machines": "mlxd.cli.machines_cmd:machines",
    "serve": "mlxd.cli.serve_cmd:serve",
    "users": "mlxd.cli.users_cmd:users",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on demand, and whose errors are one line."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def main(self, args=None, prog_name=None, **kwargs):
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **kwargs)
        except click.exceptions.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):  # Click turns Ctrl-C into Abort
                click.echo("Error: interrupted", err=True)
                sys.exit(130)
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        except click.exceptions.NoArgsIsHelpError as e:
            # `mlxd jobs` alone: its help, as a user asking for it would expect.
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.ClickException as e:
            # One line, no usage dump: scripts read the first line of stderr.
            message = " ".join(e.format_message().split())
            click.echo(f"Error: {message}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)
        except Exception as e:
            from mlxd.catalog.errors import CatalogError
            from mlxd.config import HomeError

            if isinstance(e, CatalogError | HomeError):  # a state the user can mend
                click.echo(f"Error: {' '.join(str(e).split())}", err=True)
                sys.exit(1)
            # A bug: one line for the user, the traceback in a log.
            where = _log_traceback()
            message = " ".join(str(e).split())[:300] or type(e).__name__
            click.echo(
                f"Error: internal error ({type(e).__name__}: {message}); see {where}", err=True
            )
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _log_traceback() -> str:
    import traceback
    from datetime import datetime

    from mlxd.config import paths

    try:
        logs = paths().logs
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / "cli-errors.log"
        with open(path, "a") as f:
            f.write(f"--- {datetime.now().isoformat()} mlxd {' '.join(sys.argv[1:])}\n")
            f.write(traceback.format_exc())
        return str(path)
    except OSError:
        traceback.print_exc()
        return "the traceback above"


def _help_env(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from mlxd.vocab.settings import help_env

    click.echo(help_env())
    ctx.exit(0)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlxd")
@click.option(
    "--help-env",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_help_env,
    help="Show the MLXD_* environment variables, their defaults and meaning, and exit.",
)
def cli():
    """Queue, run and compare MLX model work: convert, quantize, benchmark."""
