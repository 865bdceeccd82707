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
    "eval": "mlxd.cli.eval_cmd:eval_",
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
    "login": "mlxd.cli.remote:login",
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
        if remote_url():
            # MLXD_URL: a laptop's mlxd, whose commands run on the team server.
            from mlxd.cli.remote import remote_main

            sys.exit(remote_main(sys.argv[1:] if args is None else list(args)))
        sys.exit(self.run(args, prog_name=prog_name, **kwargs))

    def run(self, args=None, prog_name=None, on_error=None, **kwargs) -> int:
        """Run the command line ``args``; its exit status. A failure is one line on stderr
        (``on_error(exception, line)`` hears it too: the team server maps it to a status)."""
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **kwargs)
        except (Exception, KeyboardInterrupt) as e:
            code, message = failure(e)
            if message is None:
                return code
            if on_error is not None:
                on_error(e, message)
            click.echo(f"Error: {message}", err=True)
            return code
        return rv if isinstance(rv, int) else 0


def failure(e: BaseException) -> tuple[int, str | None]:
    """What a command's exception means: (exit status, the one-line message or None)."""
    if isinstance(e, click.exceptions.Abort):
        if isinstance(e.__cause__, KeyboardInterrupt):  # Click turns Ctrl-C into Abort
            return 130, "interrupted"
        return 1, "aborted"
    if isinstance(e, click.exceptions.NoArgsIsHelpError):
        # `mlxd jobs` alone: its help, as a user asking for it would expect.
        click.echo(e.ctx.get_help())
        return 0, None
    if isinstance(e, click.ClickException):
        # One line, no usage dump: scripts read the first line of stderr.
        return e.exit_code, " ".join(e.format_message().split())
    if isinstance(e, click.exceptions.Exit):
        return e.exit_code, None
    if isinstance(e, KeyboardInterrupt):
        return 130, "interrupted"
    from mlxd.catalog.errors import CatalogError
    from mlxd.config import HomeError

    if isinstance(e, CatalogError | HomeError):  # a state the user can mend
        return 1, " ".join(str(e).split())
    # A bug: one line for the user, the traceback in a log.
    where = _log_traceback()
    message = " ".join(str(e).split())[:300] or type(e).__name__
    return 1, f"internal error ({type(e).__name__}: {message}); see {where}"


def remote_url() -> str | None:
    """The team server this mlxd talks to (MLXD_URL, else `mlxd login`'s), or None: local."""
    from mlxd.vocab import settings

    if settings.URL.get():
        return settings.URL.get()
    from mlxd.config import remote_login

    return remote_login().get("url")


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
