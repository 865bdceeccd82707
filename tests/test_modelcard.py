"""The model card a push uploads, from catalog rows: header, recipe, lineage, figures."""

from __future__ import annotations

from datetime import UTC, datetime

import yaml

from mlxd.catalog.models import BenchRun, HubFile, HubSnapshot, Model, QualityRun
from mlxd.catalog.read import Reader
from mlxd.catalog.store import Store
from mlxd.config import paths
from mlxd.reports.modelcard import model_card


def test_card_has_the_hub_header_recipe_lineage_and_latest_figures(tmp_path):
    p = paths(tmp_path / "home")
    store = Store(p)
    base = store.add_model(
        Model(
            name="Qwen3-0.6B",
            path="/c/snap",
            format="hf",
            source="hub",
            architecture="qwen3",
            managed=False,
        )
    )
    store.add_hub_snapshot(
        HubSnapshot(
            model_id=base.id,
            repo_id="Qwen/Qwen3-0.6B",
            revision="main",
            commit_sha="a" * 40,
            cache_dir="/c",
            total_bytes=1,
            file_count=1,
            is_mlx=False,
        ),
        [HubFile(path="config.json", size_bytes=1, sha256="b" * 64, lfs=False)],
    )
    mlx = store.add_model(
        Model(
            name="Qwen3-0.6B-mlx",
            path="/m/1",
            format="mlx",
            source="convert",
            architecture="qwen3",
            parent_id=base.id,
            details={"recipe": {"convert": {"dtype": "bfloat16"}}},
        )
    )
    q4 = store.add_model(
        Model(
            name="Qwen3-0.6B-4bit-g64",
            path="/m/2",
            format="mlx",
            source="quantize",
            architecture="qwen3",
            parent_id=mlx.id,
            quant_bits=4,
            quant_group_size=64,
            quant_mode="affine",
            bits_per_weight=4.5,
            details={"recipe": {"quantize": {"bits": 4, "group_size": 64, "mode": "affine"}}},
        )
    )
    system = store.system_for(
        {
            "host": "studio",
            "os_name": "Darwin",
            "os_version": "15",
            "cpu": "Apple M3 Max",
            "chip": "Apple M3 Max",
            "backend": "metal",
            "python_version": "3.12",
            "mlx_version": "0.32.4",
            "mlx_lm_version": "0.32.2",
            "mlxd_version": "0.1",
        }
    )
    for tps in (101.25, 123.45):  # the newest comes last
        store.add_bench_run(
            BenchRun(
                model_id=q4.id,
                system_id=system.id,
                prompt_tokens=512,
                gen_tokens=128,
                trials=3,
                warmup=1,
                prompt_tps_mean=900.0,
                generation_tps_mean=tps,
                ttft_s_mean=0.25,
                peak_memory_bytes=500_000_000,
                created_at=datetime.now(UTC),
            ),
            [],
        )
    with store.write() as s:
        s.add(
            QualityRun(
                model_id=q4.id,
                base_model_id=mlx.id,
                text_name="default",
                text_sha256="c" * 64,
                tokens=2048,
                perplexity=12.345,
                base_perplexity=11.9,
                kl_mean=0.0123,
                top1_agreement=0.91,
            )
        )

    with Reader(p) as reader:
        card = model_card(reader, q4.id, "me/Qwen3-0.6B-4bit")
    front = card.split("---\n")[1]
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "mlx" and meta["base_model"] == "Qwen/Qwen3-0.6B"
    assert {"mlx", "qwen3", "quantized", "4-bit"} <= set(meta["tags"])
    assert "synthetic" not in meta["tags"] and "Random weights" not in card
    assert "- quantize: bits=4, group_size=64, mode=affine" in card
    assert "(4.50 bits per weight)" in card
    assert "2. `Qwen3-0.6B-mlx`: convert of the model below" in card
    assert "3. `Qwen3-0.6B`: pulled from [Qwen/Qwen3-0.6B]" in card and "a" * 40 in card
    assert (
        "| 512 | 128 | 1 | 900.0 | 123.5 | 0.250 | 500.0 MB | Apple M3 Max (metal) | 0.32.4 |"
        in card
    )
    assert "| default | 2048 | 12.345 | 11.900 | 0.0123 | 0.910 |" in card
    assert 'load("me/Qwen3-0.6B-4bit")' in card
    assert "studio" not in card  # the host name stays home
    store.close()
