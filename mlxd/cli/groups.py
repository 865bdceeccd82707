"""Command groups shared by several commands."""

from __future__ import annotations

import click


class DefaultGroup(click.Group):
    """A group whose first argument, when it names none of its subcommands, goes to the
    ``default`` one: ``mlxd sweep REF --bits 4,8`` is ``mlxd sweep run REF --bits 4,8``.

    A value that happens to be a subcommand's name is still reachable through the explicit
    form (``mlxd sweep run show``)."""

    def __init__(self, *args, default: str = "run", **kwargs):
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default, *args]
        return super().parse_args(ctx, args)
