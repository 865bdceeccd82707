"""One grammar for option values: lists, ranges and the old spellings of renamed options.

Wherever a command takes several values, a comma list and a repeated flag mean the same:
``--bits 4,8`` = ``--bits 4 --bits 8``; ``--model a --model b`` = ``--model a,b``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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
    if default is not None:  # one comma list, shown as typed: [default: 1,4]
        values = default if isinstance(default, list | tuple) else [default]
        default = (",".join(str(v) for v in values),)

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


def spec_default(spec: type, name: str) -> Any:
    """The default of field ``name`` of a job kind's ``Spec`` (or any dataclass): the one
    place a default is written. An option takes it as ``default=`` (with ``show_default``),
    or, when the option stays None so that a preset or a config shows through, as
    ``show_default=shown_default(Spec, name)``."""
    for f in dataclasses.fields(spec):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            break
    raise LookupError(f"{spec.__qualname__}.{name} has no default")


def shown_default(spec: type, name: str) -> str:
    """``spec_default`` as help shows it: ``1e-05``, a list as ``1,4``."""
    value = spec_default(spec, name)
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return format(value, "g") if isinstance(value, float) else str(value)


class _TextDefault(click.Option):
    """Shows a text ``show_default`` as ``[default: 8]`` (Click writes ``(8)``)."""

    def get_help_extra(self, ctx):
        extra = super().get_help_extra(ctx)
        if isinstance(self.show_default, str):
            extra["default"] = self.show_default
        return extra


def shows_default(text: str) -> dict[str, Any]:
    """Option keywords for an option whose value stays None when not given (a preset, a
    --config or --resume shows through) but whose help states the default that then applies:
    ``click.option("--rank", **shows_default(shown_default(Spec, "rank")))``."""
    return {"cls": _TextDefault, "show_default": text}


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
