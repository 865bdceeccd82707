"""Engine tests on real tiny synthetic models (CPU, offline). No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

# Nothing here may reach the model hub.
os.environ["HF_HUB_OFFLINE"] = "1"

pytest.importorskip("mlx_lm")

from mlxd.engine.backend import backend_facts
from mlxd.engine.bench import bench_model
from mlxd.engine.convert import convert_model, default_dtype, model_info, quantize_model
from mlxd.engine.generate import generate_stream
from mlxd.engine.synth import SIZES, list_sizes, synth_model
from mlxd.engine.types import BenchPoint, TrialResult


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Path:
    # The session's tiny llama (conftest): the same synth_model(size="tiny", seed=0).
    return tiny_model_dir


def _scale_bits() -> int:
    """Bits of one quantization scale/bias: float32 on CPU, float16 where mlx-lm keeps it."""
    return 32 if default_dtype() == "float32" else 16


def test_import_engine_does_not_import_mlx() -> None:
    code = "import sys, mlxd.engine, mlxd.engine.types; sys.exit('mlx' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_synth_tiny_loads_and_generates(tiny: Path) -> None:
    from mlx_lm import generate, load

    info = json.loads((tiny / "mlxd_synth.json").read_text())
    assert info["synthetic"] is True and info["arch"] == "llama" and info["seed"] == 0
    config = json.loads((tiny / "config.json").read_text())
    assert config["vocab_size"] == SIZES["tiny"]["vocab_size"]
    assert 0.5e6 < list_sizes()["tiny"]["num_parameters"] < 1.5e6

    model, tokenizer = load(str(tiny))
    assert len(tokenizer.get_vocab()) == config["vocab_size"]
    assert tokenizer.chat_template is not None
    text = generate(model, tokenizer, "The river in winter", max_tokens=8)
    assert isinstance(text, str) and text


def test_synth_is_deterministic_per_seed(tiny: Path, work: Path) -> None:
    same = work / "tiny_same"
    other = work / "tiny_other"
    synth_model(same, seed=0)
    synth_model(other, seed=1)
    weights = (tiny / "model.safetensors").read_bytes()
    assert (same / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights
    assert (same / "tokenizer.json").read_bytes() == (tiny / "tokenizer.json").read_bytes()


def test_synth_rejects_bad_input(work: Path, tiny: Path) -> None:
    with pytest.raises(ValueError, match="arch must be one of llama, qwen2, not 'gpt2'"):
        synth_model(work / "bad", arch="gpt2")
    with pytest.raises(ValueError, match="size must be one of tiny, small, base"):
        synth_model(work / "bad", size="huge")
    with pytest.raises(FileExistsError, match="is not empty"):
        synth_model(tiny)


def test_synth_like_qwen2_pads_vocab(work: Path) -> None:
    from mlx_lm import generate, load

    like = work / "like_config.json"
    like.write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "hidden_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "intermediate_size": 256,
                # More ids than the corpus yields merges for: the tokenizer gets padded.
                "vocab_size": 6000,
                "tie_word_embeddings": False,
            }
        )
    )
    path = work / "like"
    info = synth_model(path, like=like, seed=2)
    assert info["arch"] == "qwen2" and info["vocab_size"] == 6000
    model, tokenizer = load(str(path))
    assert len(tokenizer.get_vocab()) == 6000
    assert generate(model, tokenizer, "hello", max_tokens=4)


def test_convert_float32(tiny: Path, work: Path) -> None:
    out = convert_model(tiny, work / "f32", dtype="float32")
    assert out["dtype"] == "float32"
    assert out["bits_per_weight"] == pytest.approx(32.0)
    assert (
        out["num_parameters"]
        == json.loads((tiny / "mlxd_synth.json").read_text())["num_parameters"]
    )
    with pytest.raises(ValueError, match="f32 already exists"):
        convert_model(tiny, work / "f32")  # exists already


def test_quantize_affine_bits(tiny: Path, work: Path) -> None:
    q4 = quantize_model(tiny, work / "q4", bits=4, group_size=64)
    q8 = quantize_model(tiny, work / "q8", bits=8, group_size=64)
    overhead = 2 * _scale_bits() / 64  # one scale and one bias per group of 64
    assert q4["bits_per_weight"] == pytest.approx(4 + overhead, abs=0.1)
    assert q8["bits_per_weight"] == pytest.approx(8 + overhead, abs=0.1)
    assert q8["bits_per_weight"] > q4["bits_per_weight"]
    assert q4["num_parameters"] == q8["num_parameters"] == model_info(tiny)["num_parameters"]
    assert model_info(work / "q4")["bits_per_weight"] == pytest.approx(q4["bits_per_weight"])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"bits": 7}, "affine quantization supports bits 2/3/4/5/6/8, not 7"),
        ({"bits": 4, "group_size": 16}, "supports group size 32/64/128, not 16"),
        ({"mode": "mxfp8", "bits": 4}, "mxfp8 quantization supports bits 8, not 4"),
        ({"mode": "nvfp4", "group_size": 32}, "nvfp4 quantization supports group size 16"),
        ({"mode": "int4"}, "Quantization mode must be one of"),
        ({"recipe": "mixed_9_9"}, "Recipe must be one of"),
        ({"recipe": "mixed_3_6", "mode": "mxfp4"}, "only support affine"),
    ],
)
def test_quantize_rejects_invalid(tiny: Path, work: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        quantize_model(tiny, work / "never", **kwargs)
    assert not (work / "never").exists()


def test_quantize_mxfp4_and_mixed_recipe(tiny: Path, work: Path) -> None:
    from mlx_lm import generate, load

    mx4 = quantize_model(tiny, work / "mxfp4", mode="mxfp4")
    assert (mx4["bits"], mx4["group_size"]) == (4, 32)
    assert 4 < mx4["bits_per_weight"] < 5
    mixed = quantize_model(tiny, work / "mixed", bits=3, recipe="mixed_3_6")
    assert 3 < mixed["bits_per_weight"] < 6 + 2 * _scale_bits() / 64
    for name in ("mxfp4", "mixed"):
        model, tokenizer = load(str(work / name))
        assert generate(model, tokenizer, "hello", max_tokens=4)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(work / "mxfp4", work / "twice")


def test_bench_points_and_trials(tiny: Path) -> None:
    seen: list[TrialResult] = []
    progress: list[float] = []
    points = [
        BenchPoint(prompt_tokens=16, gen_tokens=8),
        BenchPoint(prompt_tokens=32, gen_tokens=8),
    ]
    result = bench_model(
        tiny,
        points,
        trials=2,
        warmup=1,
        on_trial=seen.append,
        on_progress=lambda fraction, _message: progress.append(fraction),
    )
    assert len(result.trials) == 4 and seen == result.trials
    assert [t.trial_index for t in result.trials] == [0, 1, 0, 1]
    for trial in result.trials:
        assert trial.generated_tokens == 8
        assert trial.prompt_tokens == trial.point.prompt_tokens
        assert trial.prompt_tps > 0 and trial.generation_tps > 0
        assert 0 < trial.ttft_s <= trial.total_s
        assert trial.peak_memory_bytes > 0 and trial.peak_rss_bytes > 0
    assert result.load_time_s > 0
    assert result.model_memory_bytes == model_info(tiny)["model_bytes"]
    assert progress[-1] == 1.0 and progress == sorted(progress)
    json.dumps(asdict(result))


def test_bench_depth_kv_bits_and_batch(tiny: Path) -> None:
    points = [
        BenchPoint(prompt_tokens=16, gen_tokens=8, depth=32),
        BenchPoint(prompt_tokens=16, gen_tokens=8, kv_bits=8),
        BenchPoint(prompt_tokens=16, gen_tokens=8, depth=32, kv_bits=4, prefill_step_size=16),
        BenchPoint(prompt_tokens=16, gen_tokens=8, batch_size=2),
    ]
    result = bench_model(tiny, points, trials=1, warmup=1)
    assert [t.point for t in result.trials] == points
    assert [t.generated_tokens for t in result.trials] == [8, 8, 8, 16]
    assert all(t.generation_tps > 0 and t.peak_memory_bytes > 0 for t in result.trials)
    with pytest.raises(ValueError, match="only with batch_size 1"):
        bench_model(tiny, [BenchPoint(16, 8, batch_size=2, kv_bits=8)])


def test_generate_stream_is_deterministic_at_temp_0(tiny: Path) -> None:
    first = generate_stream(tiny, "Tell me about bread.", max_tokens=10)
    pieces = list(first)
    assert pieces and all(isinstance(p, str) for p in pieces)
    again = generate_stream(tiny, "Tell me about bread.", max_tokens=10)
    assert "".join(again) == "".join(pieces)
    assert first.stats.generated_tokens == 10
    assert first.stats.prompt_tokens > 0 and first.stats.peak_memory_bytes > 0
    raw = generate_stream(tiny, "Tell me about bread.", max_tokens=4, raw=True)
    assert "".join(raw)
    assert raw.stats.prompt_tokens < first.stats.prompt_tokens  # no chat template around it


def test_backend_facts() -> None:
    facts = backend_facts()
    assert facts["backend"] in {"metal", "cpu", "cuda"}
    assert facts["mlx_version"] and facts["mlx_lm_version"]
    assert "memory_bytes" in facts and "device_name" in facts
    json.dumps(facts)


@pytest.mark.parametrize("kernel_peak", [True, False])
def test_peak_rss_sees_a_short_lived_allocation(monkeypatch, kernel_peak):
    import time

    import numpy as np

    from mlxd.engine import bench as bench_mod

    if not kernel_peak:  # as on macOS: no resettable peak, a sampling thread instead
        monkeypatch.setattr(bench_mod, "_vm_hwm_bytes", lambda: None)
    import psutil

    before = psutil.Process().memory_info().rss
    with bench_mod._RssSampler() as rss:
        block = np.ones(40_000_000)  # 320 MB, freed before the block ends
        time.sleep(0.2)
        del block
    assert rss._kernel_peak is kernel_peak
    assert rss.peak > before + 250_000_000


def test_quantize_refuses_a_group_size_that_leaves_the_mlp_unquantized(tmp_path):
    import json

    from mlxd.engine.convert import quantize_model
    from mlxd.engine.synth import synth_model

    cfg = {
        "model_type": "llama",
        "hidden_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 352,
        "vocab_size": 1024,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 256,
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    synth_model(tmp_path / "odd", like=tmp_path / "config.json")
    with pytest.raises(ValueError, match="does not divide this model's intermediate_size 352"):
        quantize_model(tmp_path / "odd", tmp_path / "odd-q", bits=4, group_size=64)
    info = quantize_model(tmp_path / "odd", tmp_path / "odd-q32", bits=4, group_size=32)
    assert info["bits_per_weight"] < 8  # every layer really quantized
