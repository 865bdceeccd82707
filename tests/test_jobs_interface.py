"""Every registered job kind implements the JobKind interface; rules are written once."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from mlxd.jobs import KINDS, load_kind
from mlxd.jobs.base import JobKind, JobSpec


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_implements_the_interface(name):
    kind = load_kind(name)
    assert isinstance(kind.PRODUCES_MODEL, bool) and isinstance(kind.QUIET, bool)
    assert kind.TIME_LIMIT_S >= 60
    assert dataclasses.is_dataclass(kind.Spec) and issubclass(kind.Spec, JobSpec)
    for method in ("describe", "prepare", "run", "finish"):
        expected = list(inspect.signature(getattr(JobKind, method)).parameters)[1:]
        got = list(inspect.signature(getattr(kind, method)).parameters)
        assert got == expected, f"{name}.{method}{tuple(got)} != {tuple(expected)}"


def test_the_cli_engine_and_specs_accept_the_same_choices():
    from click.testing import CliRunner

    from mlxd.cli.main import cli
    from mlxd.engine.bench import KV_BITS as ENGINE_KV_BITS
    from mlxd.engine.convert import QUANT_MODES, QUANT_RECIPES
    from mlxd.vocab import choices

    assert ENGINE_KV_BITS == choices.KV_BITS and 5 in choices.KV_BITS
    assert QUANT_MODES is choices.QUANT_MODES and QUANT_RECIPES is choices.QUANT_RECIPES
    help_text = CliRunner().invoke(cli, ["quantize", "--help"]).output
    for mode in choices.QUANT_MODES:
        assert mode in help_text
