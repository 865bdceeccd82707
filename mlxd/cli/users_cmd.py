"""mlxd users: who may use the team server (mlxd serve), with which role."""

from __future__ import annotations

import click

from mlxd.cli.context import BadUsage, catalog_errors, get_paths
from mlxd.cli.output import emit, output_options, when
from mlxd.vocab.choices import ROLES


@click.group()
def users():
    """The team server's users: names, roles (viewer, submitter, admin) and tokens."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the user may do.")
@catalog_errors
def add(name: str, role: str):
    """Add a user and print their token (shown this once; only its hash is kept)."""
    import getpass

    from mlxd.server.users import UserError as BadUser
    from mlxd.server.users import add_user, check_name

    try:
        check_name(name)
        token = add_user(get_paths(), name, role, created_by=getpass.getuser())
    except BadUser as e:
        raise BadUsage(str(e)) from None
    click.echo(token)
    click.echo(
        f"Added {name} ({role}). This token is shown once: give it to {name}, who uses it as "
        "MLXD_TOKEN, with 'mlxd login URL', or on the server's login page.",
        err=True,
    )


@users.command("list")
@output_options()
@catalog_errors
def list_(fmt: str):
    """Every user: name, role, when and by whom added (never a token)."""
    from mlxd.server.users import FIELDS, list_users

    rows = list_users(get_paths())
    emit(
        fmt,
        rows,
        fields=FIELDS,
        headers=("NAME", "ROLE", "ADDED", "BY"),
        table=lambda r: (r["name"], r["role"], when(r["created_at"]), r["created_by"] or ""),
        empty="No users yet: add one with 'mlxd users add NAME --role admin'.",
    )


@users.command("remove")
@click.argument("name")
@catalog_errors
def remove(name: str):
    """Remove a user: their token and browser sessions stop working at once."""
    from mlxd.server.users import UserError as BadUser
    from mlxd.server.users import remove_user

    try:
        remove_user(get_paths(), name)
    except BadUser as e:  # an unknown name: the command line is what to change
        raise BadUsage(str(e)) from None
    click.echo(f"Removed {name}.", err=True)
