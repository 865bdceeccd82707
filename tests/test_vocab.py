"""The shared vocabulary (mlxd/vocab/): one quantization label, one table of settings."""

from __future__ import annotations

import re
from pathlib import Path

from mlxd.vocab import settings
from mlxd.vocab.choices import (
    BITS,
    GROUP_SIZES,
    QUANT_MODES,
    QUANT_RECIPES,
    model_quant_label,
    quant_label,
)
from tests.conftest import run_mlxd

MLXD = Path(__file__).resolve().parent.parent / "mlxd"


def every_quantization() -> list[dict]:
    """A model's quantization columns for every choice quantize offers, plus what a folder
    registered by `models add` may carry (no mode, no group size) and no quantization."""
    shapes: list[dict] = [{}]
    for bits in BITS:
        for group in GROUP_SIZES:
            shapes.append({"quant_bits": bits, "quant_group_size": group, "quant_mode": "affine"})
        shapes.append({"quant_bits": bits, "quant_group_size": 64})
        shapes.append({"quant_bits": bits})
    for mode, fixed in QUANT_MODES.items():
        if fixed is not None:
            shapes.append(
                {"quant_bits": fixed[0], "quant_group_size": fixed[1], "quant_mode": mode}
            )
    for recipe in QUANT_RECIPES:
        for group in GROUP_SIZES:
            shapes.append(
                {"quant_group_size": group, "quant_mode": "affine", "quant_recipe": recipe}
            )
        shapes.append({"quant_recipe": recipe})
    # Learned methods (migration 0015): the method leads the label; dynamic bit allocation
    # mixes widths and is labelled by its bits per weight (halves round up in both).
    for method in ("rtn", "awq", "gptq", "dwq"):
        shapes.append(
            {
                "quant_bits": 3,
                "quant_group_size": 64,
                "quant_mode": "affine",
                "quant_method": method,
            }
        )
    for bpw in (4.5, 4.47, 5.0, 6.25, 4.45, 3.96):
        shapes.append(
            {
                "quant_group_size": 64,
                "quant_mode": "affine",
                "quant_method": "dynamic",
                "bits_per_weight": bpw,
            }
        )
    return shapes


def test_the_label_is_the_name_quantize_gives():
    from mlxd.jobs.quantize import Spec

    assert Spec(model="tiny", bits=4, group_size=64).name == "tiny-4bit-g64"
    assert Spec(model="tiny", mode="mxfp4").name == "tiny-mxfp4"
    assert Spec(model="tiny", recipe="mixed_3_6", group_size=32).name == "tiny-mixed_3_6-g32"
    assert quant_label(recipe=None, mode="mxfp4", bits=4, group_size=32) == "mxfp4"
    assert quant_label(recipe=None, mode=None, bits=None, group_size=None) == ""
    assert Spec(model="tiny", method="gptq", bits=4).name == "tiny-gptq-4bit-g64"
    assert Spec(model="tiny", method="awq", bits=3).name == "tiny-awq-3bit-g64"
    assert Spec(model="tiny", method="dynamic", bits=4, target_bpw=5.5).name == (
        "tiny-dynamic-5.5bpw"
    )


def test_the_quantization_label_is_the_same_in_python_and_in_sql(mlxd_home, catalog_backend):
    """Every label through mlxd.vocab.choices and through the catalog's SQL (results rows),
    on SQLite and on PostgreSQL; and the report's variant is that label too."""
    from datetime import UTC, datetime

    from mlxd.catalog.models import BenchRun, Model
    from mlxd.catalog.read import Reader
    from mlxd.catalog.store import Store
    from mlxd.config import paths
    from mlxd.reports.data import load_models

    p = paths()
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
    shapes = every_quantization()
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
        rows = reader.result_rows()
        assert len(rows) == len(shapes)
        variants = {m.name: m.variant for m in load_models(reader).values()}
        for row in rows:
            model = reader.model(row["model"])
            python = model_quant_label(model) or model.dtype
            assert python == row["quantization"], dict(model)
            assert variants[row["model"]] == python
    labels = {row["quantization"] for row in rows}
    assert {"float32", "4bit-g64", "4bit", "mxfp4", "mixed_3_6-g32", "mixed_3_6"} <= labels
    assert {"3bit-g64", "awq-3bit-g64", "gptq-3bit-g64", "dwq-3bit-g64"} <= labels
    assert {"dynamic-4.5bpw", "dynamic-5.0bpw", "dynamic-6.3bpw", "dynamic-4.0bpw"} <= labels


def test_every_mlxd_variable_is_declared_once_and_read_through_settings():
    declared = {s.name for s in settings.SETTINGS}
    assert len(declared) == len(settings.SETTINGS)
    for f in sorted(MLXD.rglob("*.py")):
        if f.name == "settings.py" and f.parent.name == "vocab":
            continue
        text = f.read_text()
        rel = f.relative_to(MLXD.parent)
        for line_no, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not re.search(r"""(environ|getenv)\b.*["']MLXD_""", code), (
                f"{rel}:{line_no} reads an MLXD_ variable itself: {line.strip()}"
            )
            for name in re.findall(r"""["'](MLXD_[A-Z_]+)["']""", code):
                assert name in declared, f"{rel}:{line_no}: {name} is not in mlxd/vocab/settings.py"


def test_help_env_lists_every_variable_with_its_default():
    proc = run_mlxd("--help-env")
    assert proc.returncode == 0, proc.stderr
    for s in settings.SETTINGS:
        assert (s.name in proc.stdout) is not s.internal, s.name
    assert "MLXD_LEASE_TIMEOUT_S" in proc.stdout and "[default: 120.0]" in proc.stdout


def test_a_setting_that_does_not_parse_is_its_default(monkeypatch):
    monkeypatch.setenv("MLXD_LEASE_TIMEOUT_S", "soon")
    assert settings.LEASE_TIMEOUT_S.get() == 120.0
    monkeypatch.setenv("MLXD_LEASE_TIMEOUT_S", "-3")
    assert settings.LEASE_TIMEOUT_S.get() == 120.0
    monkeypatch.setenv("MLXD_LEASE_TIMEOUT_S", "7.5")
    assert settings.LEASE_TIMEOUT_S.get() == 7.5
    monkeypatch.setenv("MLXD_POOLS", " a, b ,a,")
    assert settings.POOLS.get() == ["a", "b"]
    monkeypatch.setenv("MLXD_SPARE_CHILD", "0")
    assert settings.SPARE_CHILD.get() is False
