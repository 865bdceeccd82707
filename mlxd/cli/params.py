"""One grammar for option values: lists, ranges and the old spellings of renamed options.

Wherever a command takes several values, a comma list and a repeated flag mean the same:
``--bits 4,8`` = ``--bits 4 --bits 8``; ``--model a --model b`` = ``--model a,b``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import click


def split_values(values: str | Iterable[str] | None) -> list[str]:
    """``("4,8", "6")`` -> ``["4", "8", "6"]``; empty items dropped."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [v.strip() for text in values for v in str(text).split(",") if v.strip()]


def int_list(
    values: str | Iterable[str] | None, what: str, *, minimum: int | None = None
) -> list[int]:
    """Whole numbers from comma lists and/or repeated flags; a one-line error otherwise."""
    items = split_values(values)
    from mlxd.cli.context import BadUsage

    try:
        numbers = [int(v) for v in items]
    except ValueError:
        raise BadUsage(
            f"{what} must be a comma-separated list of whole numbers, not '{','.join(items)}'"
        ) from None
    if not numbers:
        raise BadUsage(f"{what} needs at least one value")
    if minimum is not None and any(n < minimum for n in numbers):
        raise BadUsage(f"{what} values must be at least {minimum}")
    return numbers


def list_option(*decls: str, **kwargs) -> Callable:
    """A ``multiple=True`` option whose values may also be comma lists (strings)."""
    choices: Sequence[str] | None = kwargs.pop("choices", None)
    default = kwargs.pop("default", None)
    if default is not None and not isinstance(default, list | tuple):
        default = (str(default),)

    def callback(ctx, param, value):
        items = split_values(value)
        if choices is not None:
            bad = [v for v in items if v not in choices]
            if bad:
                raise click.BadParameter(
                    f"'{bad[0]}' is not one of {', '.join(choices)}", ctx=ctx, param=param
                )
        return tuple(dict.fromkeys(items))  # each value once, in the order given

    if choices is not None and "metavar" not in kwargs:
        kwargs["metavar"] = "[" + "|".join(choices) + "],..."
    return click.option(*decls, multiple=True, default=default, callback=callback, **kwargs)


def renamed_option(old: str, new: str, dest: str, **kwargs) -> Callable:
    """Keep an old spelling working for one release: hidden, with a note on stderr.

    Its value lands in ``dest`` (the new option's parameter) unless that was given too."""

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            value = kw.pop(f"old_{dest}", None)
            if value is not None:
                click.echo(
                    f"Note: {old} is now {new}; the old name goes in the next release.", err=True
                )
                ctx = click.get_current_context()
                if kw.get(dest) is None or ctx.get_parameter_source(dest) in (
                    click.core.ParameterSource.DEFAULT,
                    click.core.ParameterSource.DEFAULT_MAP,
                ):
                    kw[dest] = value
            return fn(*args, **kw)

        return click.option(old, f"old_{dest}", hidden=True, **kwargs)(wrapper)

    return decorator


# A seed reaches NumPy and MLX, which take unsigned 32-bit seeds.
SEED = click.IntRange(0, 2**32 - 1)
