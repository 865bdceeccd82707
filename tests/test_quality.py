"""Quality metrics: perplexity and drift from a base, on tiny synth models and through the daemon."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

pytest.importorskip("mlx_lm")

from mlxd.engine.convert import quantize_model
from mlxd.engine.quality import QualityResult, default_text, evaluate_quality
from mlxd.engine.synth import synth_model
from tests.conftest import run_json, run_mlxd

TOKENS = 256


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quality")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Path:
    # The session's tiny llama (conftest): the same synth_model(size="tiny", seed=0).
    return tiny_model_dir


@pytest.fixture(scope="module")
def text() -> str:
    return default_text()[1]


def test_default_text_ships_with_mlxd() -> None:
    name, text = default_text()
    corpus = (Path(__file__).resolve().parent.parent / "mlxd/data/corpus.txt").read_text()
    assert name == "default"
    assert 6000 < len(text.encode()) < 11000
    assert text[:200] not in corpus


def test_model_against_itself_has_no_drift(tiny: Path, text: str) -> None:
    r = evaluate_quality(tiny, text, base_path=tiny, max_tokens=TOKENS, chunk_tokens=100)
    assert isinstance(r, QualityResult)
    assert r.tokens == TOKENS - 1
    assert abs(r.kl_mean) < 1e-6
    assert r.top1_agreement == 1.0
    assert r.max_abs_delta_logprob == pytest.approx(0.0, abs=1e-6)
    assert r.base_perplexity == pytest.approx(r.perplexity, rel=1e-6)
    assert r.text_sha256 == __import__("hashlib").sha256(text.encode()).hexdigest()


def test_base_logprobs_spilled_to_disk_give_the_same_figures(
    tiny: Path, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlxd.engine.quality as quality

    in_memory = evaluate_quality(tiny, text, base_path=tiny, max_tokens=64)
    monkeypatch.setattr(quality, "SPILL_BYTES", 0)
    seen: list[float] = []
    spilled = evaluate_quality(
        tiny,
        text,
        base_path=tiny,
        max_tokens=64,
        chunk_tokens=16,
        on_progress=lambda f, _m: seen.append(f),
    )
    assert abs(spilled.kl_mean) < 1e-6 and spilled.top1_agreement == 1.0
    assert spilled.perplexity == pytest.approx(in_memory.perplexity, rel=1e-5)
    assert seen == sorted(seen) and seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) > 8


def test_fewer_bits_drift_further(tiny: Path, work: Path, text: str) -> None:
    results = {}
    for bits in (8, 3):
        out = work / f"tiny-{bits}bit"
        quantize_model(tiny, out, bits=bits, group_size=64)
        results[bits] = evaluate_quality(out, text, base_path=tiny, max_tokens=TOKENS)
    q8, q3 = results[8], results[3]
    assert 0 < q8.kl_mean < q3.kl_mean
    assert q8.max_abs_delta_logprob < q3.max_abs_delta_logprob
    assert q3.top1_agreement < 1.0
    # The base's perplexity does not depend on what it is compared with.
    assert q8.base_perplexity == pytest.approx(q3.base_perplexity, rel=1e-6)


def test_perplexity_matches_a_single_forward_pass(tiny: Path, text: str) -> None:
    import mlx.core as mx
    from mlx_lm import load

    model, tokenizer = load(str(tiny))
    ids = tokenizer.encode(text)[:200]
    logits = model(mx.array(ids[:-1])[None])[0].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    nll = -mx.take_along_axis(logprobs, mx.array(ids[1:])[:, None], axis=-1)
    expected = math.exp(nll.mean().item())

    # Chunks of 64 with the cache carried over give the same figure as one pass; scoring each
    # chunk without its preceding context would not (about 0.2% off on this model).
    r = evaluate_quality(tiny, text, max_tokens=200, chunk_tokens=64)
    assert r.tokens == 199
    assert r.perplexity == pytest.approx(expected, rel=1e-4)
    assert r.base_perplexity is None and r.kl_mean is None and r.top1_agreement is None


def test_text_longer_than_the_context_is_cut_to_it(tiny: Path, text: str) -> None:
    context = json.loads((tiny / "config.json").read_text())["max_position_embeddings"]
    r = evaluate_quality(tiny, text * 2, max_tokens=context + 100, chunk_tokens=1024)
    assert r.tokens == context - 1


def test_base_with_another_tokenizer_is_refused(tiny: Path, work: Path, text: str) -> None:
    config = json.loads((tiny / "config.json").read_text())
    like = work / "other-config.json"
    like.write_text(json.dumps({**config, "vocab_size": 768}))
    other = work / "other"
    synth_model(other, like=like, seed=1)
    with pytest.raises(ValueError, match="tokenize the text differently"):
        evaluate_quality(tiny, text, base_path=other, max_tokens=64)


def test_too_short_text_is_refused(tiny: Path) -> None:
    with pytest.raises(ValueError, match="too short"):
        evaluate_quality(tiny, "a", max_tokens=64)


# -- the job, through the CLI and a real daemon ------------------------------------------------


def test_bad_input_is_one_line_exit_2(tiny: Path, tmp_path: Path) -> None:
    run_mlxd("models", "add", str(tiny), "--name", "tiny", check=True)
    missing = run_mlxd("quality", "tiny", "--text", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("Error:") and "nope.txt" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    r = run_mlxd("quality", "tiny", "--text", str(empty))
    assert r.returncode == 2 and "empty" in r.stderr
    few = run_mlxd("quality", "tiny", "--text-tokens", "3")
    assert few.returncode == 2
    assert few.stderr.startswith("Error:") and "--text-tokens" in few.stderr
    # Nothing was queued.
    assert run_json("jobs", "list") == []


@pytest.mark.daemon
def test_quality_job_finds_its_base_in_the_lineage(daemon, tiny: Path, tmp_path: Path) -> None:
    from mlxd.catalog.read import Reader
    from mlxd.cli.context import get_paths, get_store

    run_mlxd("models", "add", str(tiny), "--name", "tiny", check=True)
    daemon.start()
    q = _submit("quantize", "tiny", "--bits", "4")
    own_text = tmp_path / "own.txt"
    own_text.write_text(default_text()[1][:3000])
    # Named before the model exists: looked up when the quantize job has finished.
    qq = _submit("quality", "tiny-4bit-g64", "--text-tokens", "64", "--after", str(q))
    qt = _submit("quality", "tiny", "--text", str(own_text), "--text-tokens", "32")
    for j in (q, qq, qt):
        run_mlxd("jobs", "wait", str(j), "--timeout", "180", timeout=210)
        assert run_json("jobs", "show", str(j))["status"] == "succeeded", daemon.stdio()

    job = run_json("jobs", "show", str(qq))
    assert job["result"]["base"] == "tiny"
    assert job["result"]["tokens"] == 63
    assert job["result"]["kl_mean"] > 0

    store = get_store()
    ids = {m.name: m.id for m in store.list_models()}
    reader = Reader(get_paths())
    rows = {r["job_id"]: r for r in reader.quality_rows()}
    quant = rows[qq]
    assert quant["model"] == "tiny-4bit-g64" and quant["base"] == "tiny"
    assert quant["base_model_id"] == ids["tiny"] and quant["model_id"] == ids["tiny-4bit-g64"]
    assert quant["kl_mean"] > 0 and 0 <= quant["top1_agreement"] <= 1
    assert quant["max_abs_delta_logprob"] > 0 and quant["perplexity"] > 1
    assert quant["text_name"] == "default" and quant["host"]
    # A model without an unquantized ancestor gets perplexity only, on the given text.
    plain = rows[qt]
    assert plain["base"] is None and plain["kl_mean"] is None and plain["perplexity"] > 1
    assert plain["text_name"] == "own.txt" and plain["tokens"] == 31
    assert [r["job_id"] for r in reader.quality_rows([ids["tiny"]])] == [qt]
    reader.close()


def _submit(*args: str) -> int:
    proc = run_mlxd(*args, check=True)
    return int(proc.stdout.split()[2].rstrip(":"))  # "Queued job N: ..."
