"""Every registered job kind implements the JobKind interface; rules are written once."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from mlxd.jobs import KINDS, load_kind
from mlxd.jobs.base import JobKind, JobSpec
from mlxd.jobs.choices import quant_label


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
    from mlxd.jobs import choices

    assert ENGINE_KV_BITS == choices.KV_BITS and 5 in choices.KV_BITS
    assert QUANT_MODES is choices.QUANT_MODES and QUANT_RECIPES is choices.QUANT_RECIPES
    help_text = CliRunner().invoke(cli, ["quantize", "--help"]).output
    for mode in choices.QUANT_MODES:
        assert mode in help_text


def test_the_quantization_label_is_the_same_in_python_and_in_sql(tmp_path):
    from datetime import UTC, datetime

    from mlxd.catalog.models import BenchRun, Model
    from mlxd.catalog.read import Reader
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    p = paths(tmp_path / "h")
    store = Store(p)
    system = store.system_for(
        {
            "host": "h",
            "os_name": "Linux",
            "os_version": "6",
            "cpu": "x",
            "backend": "cpu",
            "python_version": "3.11",
            "mlx_version": "0.32",
            "mlx_lm_version": "0.32",
            "mlxd_version": "0.1",
        }
    )
    shapes = [
        {},
        {"quant_bits": 4, "quant_group_size": 64, "quant_mode": "affine"},
        {"quant_bits": 4, "quant_group_size": 32, "quant_mode": "mxfp4"},
        {"quant_group_size": 64, "quant_mode": "affine", "quant_recipe": "mixed_3_6"},
    ]
    for i, shape in enumerate(shapes):
        m = store.add_model(
            Model(name=f"m{i}", path=f"/x/{i}", format="mlx", source="t", dtype="float32", **shape)
        )
        store.add_bench_run(
            BenchRun(
                model_id=m.id,
                system_id=system.id,
                prompt_tokens=1,
                gen_tokens=2,
                trials=1,
                warmup=0,
                created_at=datetime.now(UTC),
            ),
            [],
        )
    with Reader(p) as reader:
        for row in reader.result_rows():
            model = reader.model(row["model"])
            assert (quant_label(model) or model.dtype) == row["quantization"]
