"""mlxd daemon start|stop|status|install|uninstall."""

from __future__ import annotations

import click

from mlxd.cli.context import DAEMON_NOT_RUNNING_EXIT, UserError, get_paths
from mlxd.cli.output import echo_json, output_options
from mlxd.cli.params import renamed_option


@click.group()
def daemon():
    """Start, stop and inspect the background daemon that runs queued jobs."""


def _service_options(fn):
    """--workers, --digest and --serve: what the daemon runs with, started now or at login."""
    for flag, help_ in (
        ("--insecure-http", "With --serve: let the server listen beyond loopback without TLS"),
        ("--public-read", "With --serve: let the server answer reads without a token"),
    ):
        fn = click.option(flag, is_flag=True, help=help_)(fn)
    for flag, help_ in (
        ("--tls-key", "With --serve: the TLS private key (PEM)"),
        ("--tls-cert", "With --serve: the TLS certificate (PEM)"),
    ):
        fn = click.option(flag, metavar="FILE", help=help_)(fn)
    fn = click.option(
        "--serve",
        metavar="HOST:PORT",
        help="Run the team server (mlxd serve) beside the daemon, listening here",
    )(fn)
    fn = click.option(
        "--digest",
        metavar="HH:MM",
        help="Write the last 24 hours' report to MLXD_HOME/reports/ daily at this local time",
    )(fn)
    return click.option(
        "--workers",
        type=click.IntRange(1, 16),
        default=1,
        show_default=True,
        help="Jobs run at the same time",
    )(fn)


@daemon.command()
@click.option("--foreground", is_flag=True, help="Run in this process (for launchd/systemd)")
@_service_options
@click.option(
    "--host-id", metavar="NAME", help="This daemon's host identity (default: the hostname)"
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    metavar="NAME",
    help="Serve this pool (repeatable; default: default)",
)
def start(
    foreground: bool,
    workers: int,
    digest: str | None,
    host_id: str | None,
    pools: tuple[str, ...],
    **serve_flags,
):
    """Start the daemon (in the background unless --foreground)."""
    import os

    from mlxd.daemon.control import DaemonError, start_background
    from mlxd.scheduling.placement import check_name
    from mlxd.vocab import settings

    _check_digest(digest)
    serve = _serve_options(**serve_flags)
    try:
        if host_id is not None:
            os.environ[settings.HOST_ID.name] = check_name(host_id, "--host-id")
        if pools:
            os.environ[settings.POOLS.name] = ",".join(check_name(x, "--pool") for x in pools)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    p = get_paths()
    try:
        if foreground:
            from mlxd.daemon.service import run_daemon

            run_daemon(p, workers=workers, digest=digest, serve=serve)
            return
        pid = start_background(p, workers=workers, digest=digest, serve=serve)
    except DaemonError as e:
        raise UserError(str(e)) from None
    click.echo(f"Daemon started (pid {pid}, home {p.home}); logs in {p.logs}")
    if serve is not None:
        from mlxd.daemon.webserver import wait_ready

        try:
            click.echo(f"Team server at {wait_ready(p, serve)}")
        except RuntimeError as e:
            raise UserError(f"{e}; the daemon runs and starts it again") from None


@daemon.command()
@renamed_option("--timeout", "--stop-timeout", "timeout_s", type=click.FloatRange(min=0))
@click.option(
    "--stop-timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait before killing it",
)
def stop(timeout_s: float):
    """Stop the daemon; a running job is stopped and queued again."""
    from mlxd.daemon.control import stop as stop_daemon

    pid = stop_daemon(get_paths(), timeout_s=timeout_s)
    if pid is None:
        raise UserError("the daemon is not running")
    click.echo(f"Daemon stopped (pid {pid})")


@daemon.command()
@output_options("show")
def status(fmt: str):
    """Whether the daemon runs and what it is doing (exit status 3: not running)."""
    from mlxd.cli.context import get_reader
    from mlxd.daemon.control import status as daemon_status

    p = get_paths()
    st = daemon_status(p)
    info = st.as_dict()
    from mlxd.catalog.backend import catalog_exists, database

    info["database"] = database(p).display()
    if catalog_exists(p):
        reader = get_reader()
        info["running_jobs"] = [j.id for j in reader.jobs(["running"])]
        info["queued_jobs"] = reader.count_jobs(["queued"])
    else:
        info["running_jobs"], info["queued_jobs"] = [], 0
    from mlxd.daemon.webserver import server_status

    server = server_status(p) if st.running else None
    info["server"] = server
    if fmt == "json":
        echo_json(info)
    else:
        if st.running:
            click.echo(f"Daemon running (pid {st.pid}), home {st.home}")
        else:
            click.echo(f"Daemon not running, home {st.home}")
        click.echo(f"Catalog and queue: {info['database']}")
        running = ", ".join(map(str, info["running_jobs"])) or "none"
        click.echo(f"Jobs running: {running}; queued: {info['queued_jobs']}")
        if server is not None:
            state = f"pid {server['pid']}" if server["running"] else "not running; see logs"
            click.echo(f"Team server: {server['url']} ({state})")
    if not st.running:
        # As `systemctl is-active`: a script can test `mlxd daemon status` directly.
        raise SystemExit(DAEMON_NOT_RUNNING_EXIT)


@daemon.command()
@_service_options
@click.option("--dry-run", is_flag=True, help="Print the service file; change nothing")
def install(workers: int, dry_run: bool, digest: str | None, **serve_flags):
    """Start the daemon at login (launchd agent on macOS, systemd user unit on Linux)."""
    from mlxd.daemon import autostart

    _check_digest(digest)
    serve = _serve_options(**serve_flags)
    from mlxd.daemon.control import status as daemon_status

    p = get_paths()
    try:
        service = autostart.plan(p, workers=workers, digest=digest, serve=serve)
        if dry_run:
            click.echo(f"# {service.path}")
            click.echo(service.content, nl=False)
            return
        st = daemon_status(p)
        if st.running:
            raise UserError(
                f"the daemon is already running (pid {st.pid}); stop it with "
                "'mlxd daemon stop' first, so the service can start its own"
            )
        p.ensure()
        autostart.install(service)
    except autostart.AutostartError as e:
        raise UserError(str(e)) from None
    click.echo(f"Installed {service.path} ({service.manager}); the daemon starts now and at login")
    if serve is not None:
        click.echo(f"The team server runs beside it at {serve.url}")


@daemon.command()
def uninstall():
    """Stop starting the daemon at login (and stop the one the service runs)."""
    from mlxd.daemon import autostart

    try:
        service = autostart.plan(get_paths())
        removed = autostart.uninstall(service)
    except autostart.AutostartError as e:
        raise UserError(str(e)) from None
    if not removed:
        raise UserError(f"no login service is installed ({service.path} does not exist)")
    click.echo(f"Removed {service.path}")


def _check_digest(digest: str | None) -> None:
    from mlxd.cli.context import BadUsage

    if digest is None:
        return
    from mlxd.reports.digest import DigestError, parse_hhmm

    try:
        parse_hhmm(digest)
    except DigestError as e:
        raise BadUsage(str(e)) from None


def _serve_options(
    serve: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    public_read: bool,
    insecure_http: bool,
):
    """--serve and the flags passed on to `mlxd serve`, checked; None without --serve."""
    from mlxd.cli.context import BadUsage
    from mlxd.daemon.webserver import ServeOptions, parse_bind

    if serve is None:
        given = [
            flag
            for flag, value in (
                ("--tls-cert", tls_cert),
                ("--tls-key", tls_key),
                ("--public-read", public_read),
                ("--insecure-http", insecure_http),
            )
            if value
        ]
        if given:
            raise BadUsage(f"{given[0]} needs --serve HOST:PORT")
        return None
    try:
        parse_bind(serve)
    except ValueError as e:
        raise BadUsage(f"--serve: {e}") from None
    if bool(tls_cert) != bool(tls_key):
        raise BadUsage("--tls-cert and --tls-key go together")
    from pathlib import Path

    # The service starts elsewhere (launchd, systemd): files by absolute path.
    return ServeOptions(
        bind=serve,
        tls_cert=str(Path(tls_cert).expanduser().resolve()) if tls_cert else None,
        tls_key=str(Path(tls_key).expanduser().resolve()) if tls_key else None,
        public_read=public_read,
        insecure_http=insecure_http,
    )
