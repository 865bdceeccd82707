"""mlxd serve: the team server (dashboard, JSON API, metrics) on this machine's catalog."""

from __future__ import annotations

import click

from mlxd.cli.context import BadUsage, UserError, catalog_errors, get_paths


@click.command()
@click.option(
    "--bind",
    default="127.0.0.1:8765",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to listen; anything but loopback needs TLS (or --insecure-http).",
)
@click.option("--tls-cert", metavar="FILE", help="PEM certificate: serve HTTPS.")
@click.option("--tls-key", metavar="FILE", help="PEM private key of --tls-cert.")
@click.option(
    "--public-read", is_flag=True, help="Let anyone read without a token (writes still need one)."
)
@click.option(
    "--insecure-http",
    is_flag=True,
    help="Allow plain HTTP on a non-loopback address (tokens cross the network in clear).",
)
@catalog_errors
def serve(
    bind: str, tls_cert: str | None, tls_key: str | None, public_read: bool, insecure_http: bool
):
    """Run the team server: dashboard, JSON API, metrics; tokens and roles."""
    from mlxd.cli.bridge import attach
    from mlxd.server.run import ServeError, check_tls, parse_bind, serve

    try:
        parse_bind(bind)
        check_tls(tls_cert, tls_key)
    except ServeError as e:
        raise BadUsage(str(e)) from None
    try:
        serve(
            get_paths(),
            bind,
            tls_cert=tls_cert,
            tls_key=tls_key,
            public_read=public_read,
            insecure_http=insecure_http,
            prepare=attach,  # the API runs the CLI's own commands (cli/bridge.py)
        )
    except ServeError as e:
        raise UserError(str(e)) from None
