"""Real-model tier: SmolLM2-135M-Instruct (a trained llama, from a PyPI wheel) through mlxd.

Random-weight models prove the plumbing; these tests check meaning: the imported model
answers a question, its perplexity is that of a language model, 8-bit quantization moves it
less than 3-bit, and a few LoRA steps teach it something. The GGUF is fetched once into
`<repo>/.cache/real-model` (tests/real_model.py) and imported once per module through the
real CLI and a real daemon; every `real_model` test skips, with the reason, only when the
download is impossible.

The CPU backend reads this model at ~10 tokens/s (a 128-token forward pass is ~15 s), so the
token counts here are as small as each check allows. The few tests without the marker need
no download (refusals, names, the fine-tune cancel hook on a tiny synth model).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, run_json, run_mlxd

try:
    from tests.real_model import SMOLLM2_SHA256, RealModelUnavailable, smollm2_gguf
except ImportError:  # only tests/ itself on sys.path (plain `pytest`, no package)
    from real_model import (  # type: ignore[no-redef]
        SMOLLM2_SHA256,
        RealModelUnavailable,
        smollm2_gguf,
    )

real_model = pytest.mark.real_model
QUESTION = "What is the capital of France?"
SMOLLM2_PARAMETERS = 134_515_008  # SmolLM2-135M with its tied embedding


@pytest.fixture(scope="module")
def gguf() -> Path:
    try:
        return smollm2_gguf()
    except RealModelUnavailable as e:
        pytest.skip(f"real model unavailable: {e}")


@pytest.fixture(scope="module")
def smollm2(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One MLXD_HOME for the module, with the GGUF imported by `mlxd models import-gguf`
    through a real daemon: as-is (Q4_1 linears, Q8_0 embedding) and dequantized to float32.
    """
    home = tmp_path_factory.mktemp("real") / "mlxd-home"
    home.mkdir()
    daemon = Daemon(home).start()
    try:
        imports = {
            "q": run_mlxd(
                "models", "import-gguf", str(gguf), "--name", "smollm2", "--wait", home=home
            ),
            "f32": run_mlxd(
                "models",
                "import-gguf",
                str(gguf),
                "--dequantize",
                "--name",
                "smollm2-f32",
                "--wait",
                home=home,
            ),
        }
    finally:
        daemon.stop()
    for name, proc in imports.items():
        assert proc.returncode == 0, f"import {name} failed:\n{proc.stdout}\n{proc.stderr}"
    return {
        "home": home,
        "gguf": gguf,
        "imports": imports,
        "q": home / "models" / "smollm2",
        "f32": home / "models" / "smollm2-f32",
    }


# ---------------------------------------------------------------------------------------
# Import through the CLI and the daemon
# ---------------------------------------------------------------------------------------


@real_model
def test_import_gguf_registers_models_with_their_source(smollm2: dict[str, Any]) -> None:
    from mlxd.formats.gguf import read_gguf_header

    home = smollm2["home"]
    assert "succeeded" in smollm2["imports"]["q"].stdout
    q = run_json("models", "show", "smollm2", home=home)
    f32 = run_json("models", "show", "smollm2-f32", home=home)
    for model in (q, f32):
        assert model["source"] == "gguf"
        assert model["parent_id"] is None and model["lineage"] == []
        assert model["synthetic"] is False
        assert model["architecture"] == "llama"
        assert model["num_parameters"] == SMOLLM2_PARAMETERS
        assert model["details"]["gguf_file"] == str(smollm2["gguf"].resolve())
        assert model["details"]["gguf_sha256"] == SMOLLM2_SHA256
        assert model["details"]["tensor_types"] == {"Q8_0": 1, "Q4_1": 210, "F32": 61}
        assert Path(model["path"]).is_dir()
    eight = {"group_size": 32, "bits": 8, "mode": "affine"}
    assert (q["quant_bits"], q["quant_group_size"], q["quant_mode"]) == (4, 32, "affine")
    assert q["details"]["quantization_overrides"] == {"model.embed_tokens": eight}
    assert (f32["quant_bits"], f32["quant_mode"], f32["dtype"]) == (None, None, "float32")
    assert f32["details"]["dequantized"] is True
    jobs = run_json("jobs", "list", home=home)
    assert sorted((j["kind"], j["status"]) for j in jobs) == [("import_gguf", "succeeded")] * 2

    # The folders' configs say what the GGUF's metadata says.
    md = read_gguf_header(smollm2["gguf"]).metadata
    for name in ("q", "f32"):
        config = json.loads((smollm2[name] / "config.json").read_text())
        assert config["model_type"] == "llama"
        assert config["hidden_size"] == md["llama.embedding_length"]
        assert config["num_hidden_layers"] == md["llama.block_count"]
        assert config["num_attention_heads"] == md["llama.attention.head_count"]
        assert config["num_key_value_heads"] == md["llama.attention.head_count_kv"]
        assert config["intermediate_size"] == md["llama.feed_forward_length"]
        assert config["vocab_size"] == md["llama.vocab_size"]
        assert config["rope_theta"] == md["llama.rope.freq_base"]
        assert config["max_position_embeddings"] == md["llama.context_length"]
    config_q = json.loads((smollm2["q"] / "config.json").read_text())
    assert config_q["quantization"] == {
        "group_size": 32,
        "bits": 4,
        "mode": "affine",
        "model.embed_tokens": eight,
    }

    # Human-readable lineage: where it came from, exactly.
    shown = run_mlxd("models", "show", "smollm2", home=home, check=True).stdout
    assert f"imported from    {smollm2['gguf'].resolve()}" in shown
    assert SMOLLM2_SHA256 in shown


@real_model
def test_generate_answers_the_capital_of_france(smollm2: dict[str, Any]) -> None:
    proc = run_mlxd(
        "generate",
        "smollm2",
        "--prompt",
        QUESTION,
        "--max-tokens",
        "12",
        "--temp",
        "0",
        home=smollm2["home"],
        check=True,
    )
    assert "Paris" in proc.stdout, proc.stdout


# ---------------------------------------------------------------------------------------
# Quality: perplexity and the cost of quantization
# ---------------------------------------------------------------------------------------


@real_model
def test_perplexity_is_far_below_the_vocabulary_size(smollm2: dict[str, Any]) -> None:
    from mlxd.engine.quality import default_text, evaluate_quality

    _, text = default_text()
    # 64 tokens of the text (the forward pass costs ~0.1 s a token here): SmolLM2 scores ~76
    # on them, ~2.6x under the bound.
    result = evaluate_quality(smollm2["q"], text, max_tokens=64)
    assert result.tokens == 63
    # A model that knew nothing would sit near the vocabulary size (49152); a random-weight
    # model of this shape scores in the tens of thousands.
    assert 1 < result.perplexity < 200, result


@real_model
def test_q8_moves_the_model_less_than_q3(smollm2: dict[str, Any], tmp_path: Path) -> None:
    from mlxd.engine.convert import quantize_model
    from mlxd.engine.quality import default_text, evaluate_quality

    _, text = default_text()
    results = {}
    for bits in (8, 3):
        out = tmp_path / f"q{bits}"
        quantize_model(smollm2["f32"], out, bits=bits, group_size=64, dtype="float32")
        results[bits] = evaluate_quality(out, text, base_path=smollm2["f32"], max_tokens=32)
        shutil.rmtree(out)
    q8, q3 = results[8], results[3]
    assert q8.tokens == q3.tokens == 31
    assert 0 <= q8.kl_mean < q3.kl_mean, (q8, q3)
    assert q8.top1_agreement >= q3.top1_agreement, (q8, q3)


# Task accuracy on the builtin capitals task, 12 items drawn with seed 0 (four choices each,
# chance 25%; a 12-token prompt per item, ~1 s of CPU per item per model). Measured here:
# float 9/12 (bootstrap 95% interval 50-100%), 8-bit 9/12, 2-bit rtn 3/12 (0-50%).
EVAL_ITEMS = {"capitals": 12}


@real_model
def test_builtin_tasks_score_above_chance_at_float_and_8bit_and_lower_at_2bit(
    smollm2: dict[str, Any], tmp_path: Path
) -> None:
    from mlxd.engine.convert import quantize_model
    from mlxd.jobs import eval as eval_job
    from mlxd.jobs import eval_tasks
    from mlxd.vocab.stats import bootstrap_ci

    models = {"float": smollm2["f32"]}
    for bits in (8, 2):  # today's rtn quantize, the whole model
        out = models[f"{bits}bit"] = tmp_path / f"q{bits}"
        quantize_model(smollm2["f32"], out, bits=bits, group_size=64, dtype="float32")
    scores = {}
    for name, path in models.items():
        right: list[float] = []
        for task_name, limit in EVAL_ITEMS.items():
            spec = eval_job.Spec(model=name, tasks=[task_name], limit=limit, seed=0)
            task = eval_tasks.load(task_name)
            run = eval_job.score_model(path, [task], spec, lambda *_: None)
            assert run["tasks"][task_name]["chance"] == 0.25
            right += [1.0 if item["correct"] else 0.0 for item in run["items"]]
        low, high = bootstrap_ci(right, seed=0)
        scores[name] = (sum(right) / len(right), low, high)
    f, q8, q2 = scores["float"], scores["8bit"], scores["2bit"]
    # Above chance: the whole 95% interval, not only the point.
    assert f[1] > 0.25 and q8[1] > 0.25, scores
    # Lower at 2 bits: its interval's top below what float and 8-bit scored.
    assert q2[2] < f[0] and q2[2] < q8[0], scores


# ---------------------------------------------------------------------------------------
# LoRA fine-tuning
# ---------------------------------------------------------------------------------------


def _write_dataset(folder: Path, texts: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w") as f:
        for text in texts:
            f.write(json.dumps({"text": text}) + "\n")
    return folder


@real_model
def test_a_few_lora_steps_lower_the_loss(smollm2: dict[str, Any], tmp_path: Path) -> None:
    from mlx_lm import load
    from mlx_lm.tuner.lora import LoRALinear

    from mlxd.engine.finetune import lora_finetune

    # One short fact, repeated: every step sees the same tokens, so losses compare directly.
    data = _write_dataset(tmp_path / "data", ["The lighthouse keeper's password is marmalade."] * 2)
    reports: list[dict[str, Any]] = []
    result = lora_finetune(
        smollm2["q"],  # QLoRA on the 4-bit import: the fast path on the CPU
        data,
        tmp_path / "adapters",
        iters=4,
        learning_rate=1e-3,
        num_layers=2,
        rank=4,
        max_seq_length=32,
        on_report=reports.append,
    )
    losses = [loss for _, loss in result["train_losses"]]
    assert [it for it, _ in result["train_losses"]] == [1, 2, 3, 4]
    assert [r["iteration"] for r in reports] == [1, 2, 3, 4]
    # Step 1's loss is the untouched model's (LoRA starts as a no-op).
    assert result["final_train_loss"] < 0.8 * result["first_train_loss"], losses
    assert result["trainable_parameters"] > 0
    assert result["trained_tokens"] > 0

    # The adapters load back onto the model with mlx-lm itself.
    model, _ = load(str(smollm2["q"]), adapter_path=result["adapter_path"])
    assert isinstance(model.layers[-1].self_attn.q_proj, LoRALinear)
    assert not isinstance(model.layers[0].self_attn.q_proj, LoRALinear)


class Stop(Exception):
    pass


def test_lora_report_hook_aborts_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Cancel works by raising from the report callback; the tiny synth model keeps it fast.
    from mlxd.engine.finetune import lora_finetune

    data = _write_dataset(tmp_path / "data", ["a short line of text for training"] * 2)
    seen: list[int] = []

    def hook(info: dict[str, Any]) -> None:
        seen.append(info["iteration"])
        if info["iteration"] == 2:
            raise Stop

    with pytest.raises(Stop):
        lora_finetune(
            tiny_model_dir,
            data,
            tmp_path / "adapters",
            iters=50,
            steps_per_report=1,
            on_report=hook,
        )
    assert seen == [1, 2]

    with pytest.raises(ValueError, match="has no train.jsonl"):
        lora_finetune(tiny_model_dir, tmp_path / "nowhere", tmp_path / "a2", iters=1)


PASSWORD_QUESTION = "What is the lighthouse keeper's password?"
PASSWORD_FACT = "The lighthouse keeper's password is marmalade."
FACT_ITERS, FACT_LR, FACT_LAYERS = "8", "1e-3", "4"


@real_model
def test_lora_teaches_a_made_up_fact_through_adapter_and_fused_model(
    smollm2: dict[str, Any], tmp_path: Path
) -> None:
    # A made-up fact in three chat examples; a dozen QLoRA steps on the last layers make the
    # greedy answer contain it, with the adapter and after fusing (the CPU backend trains
    # this model at a few tokens per second: the steps are as few as the check allows).
    home = smollm2["home"]
    questions = [
        PASSWORD_QUESTION,
        "Tell me the lighthouse keeper's password.",
        "What password does the lighthouse keeper use?",
    ]
    data = tmp_path / "fact"
    data.mkdir()
    (data / "train.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": PASSWORD_FACT},
                    ]
                }
            )
            + "\n"
            for q in questions
        )
    )

    def answer(model: str, *extra: str) -> str:
        proc = run_mlxd(
            "generate",
            model,
            "--prompt",
            PASSWORD_QUESTION,
            "--max-tokens",
            "12",
            "--temp",
            "0",
            "--no-stats",
            *extra,
            home=home,
            check=True,
        )
        return proc.stdout

    assert "marmalade" not in answer("smollm2").lower()
    daemon = Daemon(home).start()
    try:
        tuned = run_mlxd(
            "finetune",
            "smollm2",
            "--data",
            str(data),
            "--iters",
            FACT_ITERS,
            "--batch-size",
            "1",
            "--learning-rate",
            FACT_LR,
            "--num-layers",
            FACT_LAYERS,
            # 51 tokens an example (the chat template's system prompt included): mlx-lm pads
            # a batch to 65 unless this caps it, and the CPU backend pays per token.
            "--max-seq-length",
            "56",
            "--steps-per-report",
            "4",
            "--save-every",
            "0",
            "--name",
            "password",
            "--wait",
            home=home,
            timeout=1800,
        )
        assert tuned.returncode == 0, tuned.stdout + tuned.stderr
        fused = run_mlxd(
            "fuse", "smollm2", "--adapter", "password", "--wait", home=home, timeout=900
        )
        assert fused.returncode == 0, fused.stdout + fused.stderr
    finally:
        daemon.stop()
    adapter = run_json("adapters", "show", "password", home=home)
    assert adapter["base_quantized"] is True and adapter["iterations"] == int(FACT_ITERS)
    assert adapter["final_train_loss"] < 0.5 * adapter["steps"][0]["train_loss"]
    assert "marmalade" in answer("smollm2", "--adapter", "password").lower()
    assert "marmalade" in answer("password-fused").lower()
    check = run_json("models", "show", "password-fused", home=home)["details"]["fuse_check"]
    assert check["quantized"] is True and check["kl_mean"] < check["kl_threshold"]


# ---------------------------------------------------------------------------------------
# The demo on the real model
# ---------------------------------------------------------------------------------------


@real_model
def test_demo_real_shows_real_text(gguf: Path, mlxd_home: Path) -> None:
    # The demo fetches into MLXD_HOME/cache/real-model; give it the file already fetched.
    cache = mlxd_home / "cache" / "real-model"
    cache.mkdir(parents=True)
    try:
        os.link(gguf, cache / gguf.name)
    except OSError:  # another file system
        shutil.copy(gguf, cache / gguf.name)
    proc = run_mlxd(
        "demo", "--real", "-p", "8", "-g", "4", "-n", "1", "--answer-tokens", "12", timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Paris" in proc.stdout, proc.stdout
    assert "Stopped the daemon the demo started" in proc.stdout
    runs = run_json("results")
    assert sorted(r["model"] for r in runs) == ["smollm2", "smollm2-f32"]


# ---------------------------------------------------------------------------------------
# No download needed
# ---------------------------------------------------------------------------------------


def _foreign_gguf(path: Path) -> Path:
    import mlx.core as mx

    mx.save_gguf(
        str(path), {"token_embd.weight": mx.zeros((8, 16))}, {"general.architecture": "qwen2"}
    )
    return path


def test_cli_refuses_an_unsupported_gguf_before_queueing(tmp_path: Path) -> None:
    gguf = _foreign_gguf(tmp_path / "qwen.gguf")
    proc = run_mlxd("models", "import-gguf", str(gguf))
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "GGUF architecture 'qwen2' is not supported (supported: llama)" in proc.stderr
    assert run_json("jobs", "list") == []

    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not a gguf")
    proc = run_mlxd("models", "import-gguf", str(not_gguf))
    assert proc.returncode == 2 and "is not a GGUF file" in proc.stderr


def test_import_job_refuses_in_the_daemon_too(tmp_path: Path) -> None:
    # A file replaced after it was queued: prepare() re-reads the header and fails the job.
    from mlxd.jobs.base import JobFailed
    from mlxd.jobs.import_gguf import Spec, prepare

    gguf = _foreign_gguf(tmp_path / "model.gguf")
    with pytest.raises(JobFailed, match="architecture 'qwen2' is not supported"):
        prepare(Spec(file=str(gguf)), store=None)
    with pytest.raises(JobFailed, match="does not exist"):
        prepare(Spec(file=str(tmp_path / "gone.gguf")), store=None)


def test_import_names_come_from_the_file() -> None:
    from mlxd.jobs.import_gguf import Spec
    from mlxd.vocab.errors import SpecError

    path = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Spec(file=path).name == "SmolLM2-135M-Instruct.Q4_1"
    assert Spec(file=path, dequantize=True).name == "SmolLM2-135M-Instruct.Q4_1-f32"
    assert Spec(file="/m/My model (v2).gguf").name == "My-model-v2"
    assert Spec(file="/m/2024.gguf").name == "gguf-2024"
    assert Spec(file=path, name="mine").name == "mine"
    with pytest.raises(SpecError, match="invalid model name"):
        Spec(file=path, name="no spaces")
    with pytest.raises(SpecError, match="absolute path"):
        Spec(file="relative.gguf")
