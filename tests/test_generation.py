"""Generation workloads on the session's tiny model: sampling, chat, batch, caches, drafts.

Real MLX on the CPU; nothing here asserts a time or a speed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("mlx_lm")

from mlxd.vocab.errors import SpecError
from mlxd.vocab.sampling import PRESETS, Sampling, resolve_sampling

GREEDY = Sampling(max_tokens=6)


class Ran:
    def __init__(self, result):
        self.returncode = result.exit_code
        self.stdout, self.stderr = result.stdout, result.stderr


def here(*args: str, input: str | None = None, check: bool = False) -> Ran:
    """`mlxd ARGS` run in this process (the test process has mlx imported already)."""
    from click.testing import CliRunner

    from mlxd.cli.main import cli

    ran = Ran(CliRunner().invoke(cli, list(args), input=input))
    if check and ran.returncode != 0:
        raise AssertionError(f"mlxd {' '.join(args)}: {ran.returncode}\n{ran.stdout}{ran.stderr}")
    return ran


# -- sampling -----------------------------------------------------------------------------


def test_presets_set_values_and_explicit_options_win():
    creative = resolve_sampling("creative")
    assert (creative.temp, creative.top_p, creative.max_tokens) == (0.9, 0.95, 1024)
    assert creative.repetition_penalty == PRESETS["creative"]["repetition_penalty"]
    mixed = resolve_sampling("creative", temp=0.3, max_tokens=12, top_k=40)
    assert (mixed.temp, mixed.top_p, mixed.max_tokens, mixed.top_k) == (0.3, 0.95, 12, 40)
    assert resolve_sampling("factual").temp == 0.0
    assert resolve_sampling() == Sampling()
    with pytest.raises(SpecError, match="unknown preset"):
        resolve_sampling("poetry")
    with pytest.raises(SpecError, match="--top-p"):
        resolve_sampling(top_p=0)


def test_engine_passes_sampling_to_mlx_lm(monkeypatch):
    import mlx_lm.sample_utils as su

    from mlxd.engine.sampling import sampler_kwargs

    seen = {}
    real_sampler, real_processors = su.make_sampler, su.make_logits_processors
    monkeypatch.setattr(su, "make_sampler", lambda **kw: seen.update(kw) or real_sampler(**kw))
    monkeypatch.setattr(
        su,
        "make_logits_processors",
        lambda **kw: seen.update(kw) or real_processors(**kw),
    )
    out = sampler_kwargs(resolve_sampling("creative", top_k=7, min_p=0.1))
    assert seen["temp"] == 0.9 and seen["top_p"] == 0.95
    assert seen["top_k"] == 7 and seen["min_p"] == 0.1
    assert seen["repetition_penalty"] == PRESETS["creative"]["repetition_penalty"]
    assert len(out["logits_processors"]) == 1


def test_seeded_sampling_repeats_and_another_seed_differs(tiny_model_dir):
    from mlxd.engine.generate import generate_stream

    def text(seed):
        s = resolve_sampling("creative", max_tokens=12, seed=seed)
        return "".join(generate_stream(tiny_model_dir, "Once upon", sampling=s, raw=True))

    first = text(11)
    assert first and text(11) == first
    assert text(12) != first


# -- chat ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_session(tiny_model_dir):
    from mlxd.engine.chat import ChatSession

    return ChatSession.load(tiny_model_dir, sampling=GREEDY)


def test_chat_uses_the_models_own_template(chat_session):
    chat_session.reset()
    chat_session.set_system("Be brief.")
    chat_session.messages = [{"role": "user", "content": "Hello"}]
    expected = chat_session.tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        add_generation_prompt=True,
    )
    assert chat_session.render() == list(expected)
    chat_session.set_system(None)


def test_second_turn_prefills_only_new_tokens_and_says_what_a_fresh_prefill_says(
    chat_session, tiny_model_dir
):
    from mlxd.engine.chat import ChatSession

    s = chat_session
    s.reset()
    "".join(s.reply("Tell me about rivers"))
    first_prompt = s.last.prompt_tokens
    assert s.last.reused_tokens == 0 and s.last.generated_tokens == GREEDY.max_tokens
    second = "".join(s.reply("And lakes?"))
    total = len(s.render(s.messages[:-1]))  # the conversation the second reply answered
    assert s.last.reused_tokens >= first_prompt
    assert s.last.prompt_tokens == total - s.last.reused_tokens

    fresh = ChatSession(s.model, s.tokenizer, GREEDY)
    fresh.messages = [dict(m) for m in s.messages[:-1]]
    assert "".join(fresh.respond()) == second
    assert fresh.last.reused_tokens == 0 and fresh.last.prompt_tokens == total


def test_an_interrupted_reply_keeps_the_session_usable(chat_session):
    s = chat_session
    s.reset()
    pieces = s.reply("Count to ten")
    next(pieces)
    pieces.close()  # what Ctrl-C does in the CLI
    assert s.last.interrupted and s.messages[-1]["role"] == "assistant"
    reply = "".join(s.reply("Again"))
    assert reply and s.last.reused_tokens > 0 and not s.last.interrupted


def test_save_and_load_a_conversation(chat_session, tmp_path):
    s = chat_session
    s.reset()
    s.set_system("Sys")
    "".join(s.reply("Hi"))
    path = tmp_path / "conv.json"
    s.save(path)
    saved = json.loads(path.read_text())
    assert saved["system"] == "Sys" and [m["role"] for m in saved["messages"]] == [
        "user",
        "assistant",
    ]
    s.reset()
    s.set_system(None)
    s.load_conversation(path)
    assert s.system == "Sys" and len(s.messages) == 2
    path.write_text('[{"role": "robot", "content": "x"}]')
    with pytest.raises(ValueError, match="role"):
        s.load_conversation(path)
    s.set_system(None)


def test_chat_load_of_a_missing_or_broken_file_is_one_line_naming_it(
    chat_session, tmp_path, capsys
):
    from mlxd.cli.chat_cmd import _command

    missing = tmp_path / "missing.json"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path, line in (
        (missing, f"Error: cannot read {missing}: No such file or directory"),
        (broken, f"Error: {broken} is not valid JSON (Expecting property name enclosed in "),
    ):
        capsys.readouterr()
        assert _command(chat_session, f"/load {path}") is None  # the chat goes on
        err = capsys.readouterr().err
        assert err.startswith(line) and err.count("\n") == 1 and "Errno" not in err, err


def test_chat_once_reads_messages_and_prints_the_reply(tiny_model_dir):
    here("models", "add", str(tiny_model_dir), "--name", "tiny", check=True)
    messages = [{"role": "user", "content": "Hello"}]

    def once(data):
        return here("chat", "tiny", "--once", "--max-tokens", "5", input=json.dumps(data))

    first = once(messages)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() and once({"messages": messages}).stdout == first.stdout
    gen = here("generate", "tiny", "--prompt", "Hello", "--max-tokens", "5", check=True)
    assert gen.stdout == first.stdout  # the same template, the same greedy tokens
    bad = once([{"role": "assistant", "content": "x"}])
    assert bad.returncode == 2 and bad.stderr.startswith("Error: --once: the last message")


# -- drafts and prompt caches -----------------------------------------------------------------


def test_a_model_drafting_for_itself_accepts_everything(tiny_model_dir):
    from mlxd.engine.generate import generate_stream

    plain = generate_stream(tiny_model_dir, "The river", sampling=Sampling(max_tokens=9))
    text = "".join(plain)
    drafted = generate_stream(
        tiny_model_dir,
        "The river",
        sampling=Sampling(max_tokens=9),
        draft_path=tiny_model_dir,
        num_draft_tokens=3,
    )
    assert "".join(drafted) == text
    st = drafted.stats
    assert st.acceptance_rate == 1.0 and st.draft_proposed_tokens == st.draft_accepted_tokens > 0
    assert plain.stats.acceptance_rate is None


def test_prompt_cache_continues_the_prefix_and_is_refused_for_another_model(
    tiny_model_dir, tmp_path
):
    from mlxd.engine.generate import generate_stream

    prefix = "The river in winter is cold and slow. " * 20
    here("models", "add", str(tiny_model_dir), "--name", "tiny", check=True)
    made = here(
        "cache-prompt", "tiny", "--prompt", prefix, "--name", "river", "--foreground", check=True
    )
    assert "Made prompt cache" in made.stdout
    [cache] = json.loads(here("cache-prompt", "--list", "--json", check=True).stdout)
    assert cache["name"] == "river" and cache["model"] == "tiny" and cache["num_tokens"] > 100

    cached = generate_stream(
        tiny_model_dir, " Then", sampling=GREEDY, prompt_cache_path=Path(cache["path"])
    )
    text = "".join(cached)
    # Only the suffix went through the model; the result is what the whole text gives.
    assert cached.stats.cached_tokens == cache["num_tokens"]
    assert cached.stats.prompt_tokens < 5
    cold = generate_stream(tiny_model_dir, prefix + " Then", sampling=GREEDY, raw=True)
    assert "".join(cold) == text and cold.stats.prompt_tokens > cache["num_tokens"]

    here("models", "synth", "other", "--seed", "1", check=True)
    refused = here("generate", "other", "--prompt", "x", "--prompt-cache", "river")
    assert refused.returncode == 2
    assert "made with model 'tiny', not 'other'" in refused.stderr
    assert refused.stderr.count("\n") == 1


def test_memory_check_refuses_and_names_a_variant_that_fits(tiny_model_dir, monkeypatch):
    from mlxd.catalog.models import Model
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    here("models", "add", str(tiny_model_dir), "--name", "tiny", check=True)
    store = Store(paths())
    big = store.resolve_model("tiny")
    store.add_model(
        Model(
            name="tiny-2bit",
            path=big.path,
            format="mlx",
            source="quantize",
            parent_id=big.id,
            size_bytes=1000,
            architecture=big.architecture,
        )
    )
    store.close()
    monkeypatch.setenv("MLXD_MEMORY_BUDGET_BYTES", str(big.size_bytes // 2))
    refused = here("generate", "tiny", "--prompt", "hi")
    assert refused.returncode == 1
    assert "needs about" in refused.stderr and "'tiny-2bit'" in refused.stderr
    forced = here("generate", "tiny", "--prompt", "hi", "--max-tokens", "2", "--no-memory-check")
    assert forced.returncode == 0, forced.stderr


# -- batch --------------------------------------------------------------------------------


def test_batch_writes_one_line_per_prompt_in_order_equal_to_single_generation(
    tiny_model_dir, tmp_path
):
    from mlxd.engine.generate import generate_stream

    prompts = []
    for i in range(20):
        if i % 5 == 4:
            prompts.append(
                {"messages": [{"role": "user", "content": f"Question {i}?"}], "max_tokens": 3}
            )
        else:
            prompts.append(f"Tell me about item number {i}" + " please" * (i % 3))
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    here("models", "add", str(tiny_model_dir), "--name", "tiny", check=True)
    out = tmp_path / "out.jsonl"
    proc = here(
        "batch",
        "tiny",
        "--prompts",
        str(src),
        "-o",
        str(out),
        "--max-tokens",
        "6",
        "-b",
        "4",
        "--foreground",
        check=True,
    )
    assert "Wrote 20 outputs" in proc.stdout
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["index"] for x in lines] == list(range(20))
    for p, line in zip(prompts, lines, strict=True):
        text = p if isinstance(p, str) else p["messages"][0]["content"]
        n = 6 if isinstance(p, str) else 3
        single = "".join(generate_stream(tiny_model_dir, text, sampling=Sampling(max_tokens=n)))
        assert line["text"] == single
        assert line["generated_tokens"] == len(line["token_ids"]) <= n
    [run] = json.loads(here("results", "--json", check=True).stdout)
    assert run["mode"] == "batch" and run["batch_size"] == 4 and run["requests"] == 20
    assert run["generation_tps_mean"] > 0

    again = here("batch", "tiny", "--prompts", str(src), "-o", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    src.write_text('"ok"\n{"nothing": 1}\n')
    bad = here("batch", "tiny", "--prompts", str(src), "-o", str(tmp_path / "o2.jsonl"))
    assert bad.returncode == 2 and "line 2" in bad.stderr


# -- paired benchmarks (draft model, prompt cache) ------------------------------------------


def test_bench_with_a_draft_and_with_a_prompt_cache(daemon, tiny_model_dir):
    here("models", "add", str(tiny_model_dir), "--name", "tiny", check=True)
    daemon.start()
    out = here(
        *("bench", "tiny", "--draft-model", "tiny", "--num-draft-tokens", "3"),
        *("-p", "16", "-g", "12", "-n", "1", "--warmup", "0", "--wait"),
        check=True,
    ).stdout
    [drafted] = json.loads(here("results", "--json", check=True).stdout)
    assert drafted["draft_model"] == "tiny" and drafted["num_draft_tokens"] == 3
    assert drafted["acceptance_rate"] == 1.0 and drafted["draft_speedup"] > 0
    # --wait ends with the mode's headline: the speed-up and the acceptance rate.
    headline = out[out.index("Speculative decoding: 'tiny' with draft 'tiny', 3 tokens") :]
    header, row = headline.splitlines()[1:3]
    assert header.split() == ("P G N ALONE GEN TOK/S DRAFTED GEN TOK/S SPEED-UP ACCEPTED".split())
    assert row.split()[:3] == ["16", "12", "1"]
    assert row.split()[-2:] == [f"{drafted['draft_speedup']:.2f}x", "100.0%"]

    prefix = "The river in winter is cold and slow. " * 80
    here("cache-prompt", "tiny", "--prompt", prefix, "--name", "long", "--foreground", check=True)
    out = here(
        *("bench", "tiny", "--prompt-cache", "long", "-p", "8", "-g", "4", "-n", "2", "--wait"),
        check=True,
    ).stdout
    cached = json.loads(here("results", "--json", check=True).stdout)[-1]
    assert cached["prompt_cache"] == "long" and cached["cached_tokens"] > 500
    # Prefilling 8 tokens after the cache, against the whole ~1,000-token text cold: the
    # margin is wide enough that a busy machine does not reverse it.
    assert cached["ttft_cached_s_mean"] < cached["ttft_s_mean"]
    # --wait ends with cached against cold time to first token.
    headline = out[out.index("Prompt cache 'long' on 'tiny': time to first token") :]
    header, row = headline.splitlines()[1:3]
    assert header.split()[3:] == "CACHED TOKENS CACHED TTFT S COLD TTFT S SPEED-UP".split()
    cells = row.split()
    assert cells[:4] == ["8", "4", "2", str(cached["cached_tokens"])]
    assert cells[4:6] == [f"{cached['ttft_cached_s_mean']:.3f}", f"{cached['ttft_s_mean']:.3f}"]
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    store = Store(paths())
    assert [t.prompt_tokens for t in store.trials(cached["run_id"])] == [8, 8]
    store.close()


def test_a_cached_system_prompt_starts_a_chat_without_prefilling_it(tiny_model_dir):
    from mlxd.engine.chat import ChatSession

    here("models", "add", str(tiny_model_dir), "--name", "tiny", check=True)
    system = "You are a terse assistant. " * 10
    for name, bits in (("sys", []), ("sys8", ["--kv-bits", "8"])):
        here(
            "cache-prompt",
            "tiny",
            "--system",
            system,
            "--name",
            name,
            *bits,
            "--foreground",
            check=True,
        )
    caches = {c["name"]: c for c in json.loads(here("cache-prompt", "--list", "--json").stdout)}
    assert (
        caches["sys8"]["kv_bits"] == 8
        and caches["sys8"]["size_bytes"] < caches["sys"]["size_bytes"]
    )

    cached = ChatSession.load(
        tiny_model_dir, sampling=GREEDY, prompt_cache_path=Path(caches["sys"]["path"])
    )
    assert cached.system == system
    reply = "".join(cached.reply("Hello"))
    assert cached.last.reused_tokens == caches["sys"]["num_tokens"]
    fresh = ChatSession(cached.model, cached.tokenizer, GREEDY, system)
    assert "".join(fresh.reply("Hello")) == reply and fresh.last.reused_tokens == 0

    quantized = ChatSession.load(
        tiny_model_dir, sampling=GREEDY, prompt_cache_path=Path(caches["sys8"]["path"])
    )
    assert "".join(quantized.reply("Hello")) is not None
    assert quantized.last.reused_tokens == caches["sys8"]["num_tokens"]


def test_a_model_without_a_chat_template_gets_a_note_and_a_plain_transcript(
    tiny_model_dir, tmp_path
):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, plain)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    here("models", "add", str(plain), "--name", "plain", check=True)
    ran = here(
        "chat", "plain", "--once", "--max-tokens", "3", input='[{"role": "user", "content": "Hi"}]'
    )
    assert ran.returncode == 0, ran.stderr
    assert "has no chat template" in ran.stderr and ran.stdout.strip()

    from mlxd.engine.chat import ChatSession

    s = ChatSession.load(plain, sampling=GREEDY, system="Sys")
    s.messages = [{"role": "user", "content": "Hi"}]
    assert s.tokenizer.decode(s.render()).endswith("System: Sys\nUser: Hi\nAssistant:")
