"""The door: every class of bad input gets one `Error:` line and a non-zero exit at submit,
the daemon stays alive, and the catalog is unchanged (issue 8, item 8)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tests.conftest import add_tiny, run_json, run_mlxd


def _bad_folders(root: Path, tiny: Path) -> dict[str, Path]:
    """Broken copies of the tiny model, one fault each."""
    out = {}

    def copy(name: str) -> Path:
        dst = root / name
        shutil.copytree(tiny, dst)
        return dst

    truncated = copy("truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4096])
    out["truncated"] = truncated
    for name, change in (("no-type", {"model_type": None}), ("gpt9", {"model_type": "gpt9"})):
        d = copy(name)
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(change)
        (d / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v}))
        out[name] = d
    d = copy("bad-json")
    (d / "config.json").write_text("{not json")
    out["bad-json"] = d
    d = copy("no-weights")
    (d / "model.safetensors").unlink()
    out["no-weights"] = d
    d = copy("other-vocab")
    tok = json.loads((d / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    first = next(iter(vocab))
    vocab[first + "x"] = vocab.pop(first)  # the same ids, one token spelled otherwise
    (d / "tokenizer.json").write_text(json.dumps(tok))
    out["other-vocab"] = d
    out["not-gguf"] = root / "model.gguf"
    out["not-gguf"].write_bytes(b"GGML not really")
    out["file"] = root / "a-file"
    out["file"].write_text("x")
    return out


def cases(f: dict[str, Path], tiny: Path, tmp: Path) -> list[tuple[list[str], int, str]]:
    long = "x" * 101
    return [
        # names: length, separators, escapes
        (["quantize", "tiny", "--name", long], 2, "at most 100"),
        (["quantize", "tiny", "--name", "a/b"], 2, "invalid model name 'a/b'"),
        (["quantize", "tiny", "--name", ".."], 2, "invalid model name '..'"),
        (["quantize", "tiny", "--name", ""], 2, "invalid model name ''"),
        (["convert", "tiny", "--name", "../up"], 2, "invalid model name '../up'"),
        (["models", "add", str(tiny), "--name", "has space"], 2, "invalid model name"),
        (["models", "synth", "123"], 2, "invalid model name '123'"),
        # numbers out of range
        (["bench", "tiny", "--seed", "-1"], 2, "-1 is not in the range"),
        (["bench", "tiny", "--seed", str(2**40)], 2, "is not in the range"),
        (["models", "synth", "s", "--seed", str(2**64)], 2, "is not in the range"),
        (["quantize", "tiny", "--priority", str(10**7)], 2, "is not in the range"),
        (["quantize", "tiny", "--after", "0"], 2, "0 is not in the range x>=1"),
        (["bench", "tiny", "--timeout", "nan"], 2, "--timeout must be a number of seconds"),
        (["bench", "tiny", "--timeout", "-5"], 2, "is not in the range"),
        (["jobs", "list", "--limit", "-1"], 2, "is not in the range x>=0"),
        (["results", "--limit", "-1"], 2, "is not in the range x>=0"),
        (["daemon", "start", "--workers", "0"], 2, "is not in the range"),
        # options another option would silently override
        (["quantize", "tiny", "--mode", "mxfp4", "--bits", "8"], 2, "--mode mxfp4 is 4-bit"),
        (["quantize", "tiny", "--mode", "mxfp8", "--group-size", "64"], 2, "groups of 32"),
        (["quantize", "tiny", "--recipe", "mixed_3_6", "--bits", "3"], 2, "leave out --bits 3"),
        # what could only fail later, refused now
        (["quantize", "tiny-q4", "--bits", "8"], 2, "already quantized (4bit-g64); quantize"),
        (["convert", "tiny-q4"], 2, "model 'tiny-q4' is already quantized"),
        (["sweep", "tiny-q4", "--bits", "4"], 2, "already quantized"),
        (["quantize", "tiny", "--name", "claimed"], 2, "will make a model named 'claimed'"),
        (["bench", "tiny", "-p", "4000"], 2, "has a context of 2,048"),
        (["bench", "tiny", "-p", "16", "--depth", "3000"], 2, "has a context of 2,048"),
        (["quality", "tiny", "--base", "other-vocab"], 2, "have different tokenizers"),
        (["bench", "tiny", "--draft-model", "other-vocab"], 2, "have different tokenizers"),
        (
            ["generate", "tiny", "--prompt", "x", "--draft-model", "other-vocab"],
            2,
            "have different tokenizers",
        ),
        (["quality", "tiny", "--base", "tiny"], 2, "is the model itself"),
        (["quality", "tiny", "--text", str(tmp / "missing.txt")], 2, "missing.txt"),
        (["quality", "tiny", "--text-tokens", "3"], 2, "--text-tokens must be at least"),
        # models add checks the folder, not only its config
        (["models", "add", str(f["truncated"])], 2, "is truncated"),
        (["models", "add", str(f["no-type"])], 2, "has no model_type"),
        (["models", "add", str(f["gpt9"])], 2, "model_type 'gpt9' is not supported"),
        (["models", "add", str(f["bad-json"])], 2, "is not valid JSON"),
        (["models", "add", str(f["no-weights"])], 2, "has no *.safetensors weights"),
        (["models", "add", str(f["file"])], 2, "is a file"),
        (["models", "import-gguf", str(f["not-gguf"])], 2, "not a GGUF file"),
        # unknown things
        (["quantize", "nosuch"], 2, "model 'nosuch' not found"),
        (["bench", "tiny", "--after", "99999"], 2, "job 99999 not found"),
        (["jobs", "show", "99999"], 2, "job 99999 not found"),
        (["jobs", "cancel", "99999"], 2, "job 99999 not found"),
        (["results", "--model", "nosuch"], 2, "model 'nosuch' not found"),
        (["results", "--since", "yesterday-ish"], 2, "--since takes a date"),
        (["jobs", "list", "--status", "lost"], 2, "'lost' is not one of"),
        (["sweep", "show", "99"], 2, "sweep 99 not found"),
        # malformed grids and choices
        (["bench", "tiny", "-p", "abc"], 2, "-p must be a comma-separated list"),
        (["bench", "tiny", "-g", "1"], 2, "-g must be at least 2"),
        (["bench", "tiny", "-b", "2", "--kv-bits", "4"], 2, "cannot be combined"),
        (["bench", "tiny", "--kv-bits", "7"], 2, "--kv-bits must be one of"),
        (["quantize", "tiny", "--bits", "7"], 2, "'7' is not one of"),
        (["sweep", "tiny", "--bits", "9"], 2, "--bits must be one of"),
        (["convert", "tiny", "--dtype", "float64"], 2, "'float64' is not one of"),
        (["jobs", "list", "--json", "--csv"], 2, "Cannot use --json and --csv together"),
        # a model with things that depend on it
        (["models", "rm", "p2"], 1, "has 1 derived model; 'mlxd models rm p2 --force'"),
    ]


@pytest.mark.daemon
def test_bad_inputs_are_refused_at_the_door(daemon, tiny_model_dir, tmp_path, mlxd_home):
    from mlxd.catalog.models import Model
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    folders = _bad_folders(tmp_path, tiny_model_dir)
    add_tiny(tiny_model_dir)
    run_mlxd("models", "add", str(folders["other-vocab"]), "--name", "other-vocab", check=True)
    store = Store(paths())
    parent = store.resolve_model("tiny")
    store.add_model(
        Model(
            name="tiny-q4",
            path=str(tiny_model_dir),
            format="mlx",
            source="quantize",
            parent_id=parent.id,
            quant_bits=4,
            quant_group_size=64,
            quant_mode="affine",
        )
    )
    p2 = store.add_model(Model(name="p2", path="/nowhere/p2", format="hf", source="local"))
    store.add_model(
        Model(name="c2", path="/nowhere/c2", format="mlx", source="quantize", parent_id=p2.id)
    )
    store.close()
    daemon.start()
    # A long job keeps the worker busy, so the one behind it stays queued, holding its name;
    # it sleeps between its trials, leaving the CPU to the cases.
    busy = run_mlxd("bench", "tiny", "-p", "8", "-g", "2", "-n", "500", "--delay", "1", check=True)
    run_mlxd("quantize", "tiny", "--bits", "8", "--name", "claimed", check=True)
    table = cases(folders, tiny_model_dir, tmp_path)
    assert len(table) >= 40

    def snapshot():
        return (len(run_json("models", "list")), len(run_json("jobs", "list", "--limit", "0")))

    before = snapshot()
    wrong = []
    # Two at a time (each is a fresh process, mostly start-up): refusals write nothing.
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda case: run_mlxd(*case[0]), table))
    for (args, code, message), proc in zip(table, procs, strict=True):
        err = proc.stderr
        if not (
            proc.returncode == code
            and err.startswith("Error: ")
            and message in err
            and err.count("\n") == 1
            and "Traceback" not in err
        ):
            wrong.append(f"mlxd {' '.join(args)} -> {proc.returncode}: {err.strip()[:200]}")
    assert not wrong, "\n".join(wrong)
    assert snapshot() == before, "a refused input changed the catalog"
    assert psutil.pid_exists(daemon.pid) and daemon.proc.poll() is None
    busy_id = busy.stdout.split()[2].rstrip(":")
    run_mlxd("jobs", "cancel", busy_id, check=True)


def test_an_unusable_home_or_catalog_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "catalog.db").write_bytes(b"")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    import sqlite3

    con = sqlite3.connect(foreign / "catalog.db")
    con.execute("create table photos (id integer)")
    con.commit()
    con.close()
    for home, message in (
        (tmp_path / "a-file", "is a file, not a folder"),
        (empty, "is empty (0 bytes)"),
        (foreign, "another program's database (tables: photos)"),
    ):
        for args in (["models", "list"], ["jobs", "list"], ["models", "synth", "x"]):
            proc = run_mlxd(*args, home=home)
            assert proc.returncode == 1, (home, args, proc.stderr)
            assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1
            assert message in proc.stderr
    assert (empty / "catalog.db").stat().st_size == 0  # not recreated
    assert not (empty / "models" / "x").exists()


def test_removing_a_parent_needs_force_and_keeps_the_lineage(tiny_model_dir):
    from mlxd.catalog.models import Model
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    add_tiny(tiny_model_dir)
    store = Store(paths())
    parent = store.resolve_model("tiny")
    store.add_model(
        Model(name="child", path="/x", format="mlx", source="quantize", parent_id=parent.id)
    )
    store.close()
    refused = run_mlxd("models", "rm", "tiny")
    assert refused.returncode == 1 and "has 1 derived model;" in refused.stderr
    run_mlxd("models", "rm", "tiny", "--force", check=True)
    child = run_json("models", "show", "child")
    assert child["parent_id"] is None
    assert child["details"]["parent_removed"]["name"] == "tiny"
    shown = run_mlxd("models", "show", "child", check=True).stdout
    assert "child <- tiny (removed)" in shown
