"""mlxd eval on the tiny synth model: both task kinds through one daemon, the items kept,
the drop against a base, a sweep with --eval, and the task files refused before queueing.

The synth model's answers are random: these tests check the plumbing and the bookkeeping
(and that the output says the accuracy means nothing), never a score.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlxd.jobs import eval_tasks
from mlxd.vocab.errors import SpecError
from tests.conftest import Daemon, run_json, run_mlxd

MC = [
    {"question": "Two plus two?", "choices": ["three", "four"], "answer": 1},
    {
        "context": "Ann has a red hat.",
        "question": "Hat colour?",
        "choices": ["red", "blue"],
        "answer": "red",
    },
    {"question": "Which is a fruit?", "choices": ["apple", "stone", "chair"], "answer": 0},
]
GEN = [
    {"prompt": "Say yes.", "answer": "yes"},
    {"prompt": "Give a digit.", "pattern": "[0-9]"},
    {"prompt": "Say no.", "answer": "no"},
]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One home and one daemon for the module: tiny (synth) and its 8-bit variant."""
    root = tmp_path_factory.mktemp("eval")
    home = root / "home"
    home.mkdir()
    run_mlxd("models", "synth", "tiny", "--seed", "0", home=home, check=True)
    daemon = Daemon(home).start()
    try:
        run_mlxd("quantize", "tiny", "--bits", "8", "--wait", home=home, check=True)
        yield {
            "home": home,
            "mc": _jsonl(root / "mc.jsonl", MC),
            "gen": _jsonl(root / "gen.jsonl", GEN),
        }
    finally:
        daemon.stop()


def test_both_task_kinds_run_and_keep_their_items(lab):
    home = lab["home"]
    proc = run_mlxd(
        *("eval", "tiny-8bit-g64", "--base", "tiny", "--task", f"{lab['mc']},{lab['gen']}"),
        *("--task", "capitals", "--limit", "3", "--wait"),
        home=home,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "meaningless" in proc.stdout  # the catalog knows tiny is synthetic
    runs = run_json("eval", "list", home=home)
    base, mine = runs[-2], runs[-1]
    assert (base["model"], mine["model"], mine["base"]) == ("tiny", "tiny-8bit-g64", "tiny")
    assert mine["items"] == base["items"] == 3 + 3 + 3 and mine["synthetic"]
    assert mine["base_run_id"] == base["id"]
    assert mine["accuracy_drop"] == pytest.approx(base["accuracy"] - mine["accuracy"])
    assert mine["accuracy_low"] <= mine["accuracy"] <= mine["accuracy_high"]
    tasks = mine["details"]["tasks"]
    assert {k: tasks[k]["kind"] for k in tasks} == {
        "mc": "choice",
        "gen": "generate",
        "capitals": "choice",
    }
    assert "acc_norm" in tasks["mc"] and "acc_norm" not in tasks["gen"]
    shown = run_json("eval", "show", str(mine["id"]), "--items", home=home)
    items = shown["items"]
    assert len(items) == 9 and {i["task"] for i in items} == {"mc", "gen", "capitals"}
    by_task = {(i["task"], i["item"]): i for i in items}
    assert by_task[("mc", 1)]["expected"] == "red" and by_task[("mc", 1)]["line"] == 2
    assert by_task[("gen", 1)]["expected"] == "[0-9]"
    for i in items:  # a multiple-choice answer is one of the choices; the verdict matches
        if i["task"] == "mc":
            choices = MC[i["item"]]["choices"]
            assert i["output"] in choices
            assert i["correct"] == (i["output"] == i["expected"])
            assert len(i["details"]["loglikelihoods"]) == len(choices)
    assert sum(i["correct"] for i in items) == mine["correct"]
    text = run_mlxd("eval", "show", str(mine["id"]), "--items", home=home, check=True).stdout
    assert "ANSWERED" in text and "meaningless" in text
    # the same items against the same base again: the base's run is reused, not scored again
    again = run_mlxd(
        *("eval", "tiny-8bit-g64", "--base", "tiny", "--task", f"{lab['mc']},{lab['gen']}"),
        *("--task", "capitals", "--limit", "3", "--wait"),
        home=home,
    )
    assert again.returncode == 0 and "base reused True" in again.stdout, again.stdout


BAD = [
    ([MC[0], {"question": "q", "choices": ["a", "b"]}], "line 2: no 'answer'"),
    ([{"question": "q", "choices": ["a", "b"], "answer": 2}], "answer index 2 is out of range"),
    ([], "is empty"),
    ([GEN[0], {"prompt": "p"}], "line 2: no 'answer'"),
    ([MC[0], GEN[0]], "line 2: mixes"),
    (["not json"], "line 1 is not JSON"),
]


def test_bad_task_input_is_one_line_and_nothing_is_queued(lab, tmp_path):
    before = len(run_json("jobs", "list", home=lab["home"]))
    for n, (rows, says) in enumerate(BAD):
        path = _jsonl(tmp_path / f"bad{n}.jsonl", rows)
        proc = run_mlxd("eval", "tiny", "--task", str(path), home=lab["home"])
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error:")
    proc = run_mlxd("eval", "tiny", "--task", "capitols", home=lab["home"])
    assert proc.returncode == 2
    assert "unknown builtin task 'capitols'" in proc.stderr and "capitals" in proc.stderr
    assert len(run_json("jobs", "list", home=lab["home"])) == before


def test_sweep_with_eval_scores_every_variant(lab):
    home = lab["home"]
    proc = run_mlxd(
        *("sweep", "tiny", "--bits", "4,8", "-p", "8", "-g", "2", "-n", "1", "--warmup", "0"),
        *("--text-tokens", "16", "--eval", str(lab["mc"]), "--wait"),
        home=home,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "eval" in proc.stdout and "meaningless" in proc.stdout
    sweep_id = run_json("sweep", "list", home=home)[-1]["id"]
    rows = run_json("sweep", "show", str(sweep_id), home=home)["rows"]
    assert [r["variant"] for r in rows] == ["base", "8bit-g64", "4bit-g64"]  # by bits/weight
    assert all(isinstance(r["accuracy"], float) and r["eval_job"] for r in rows), rows
    assert [r["method"] for r in rows] == [None, "rtn", "rtn"]
    for r in rows[1:]:
        assert r["accuracy_drop"] == pytest.approx(rows[0]["accuracy"] - r["accuracy"])


def test_task_layouts_and_judging():
    """lm-eval-harness layouts where they fit, item selection, and the generation verdict."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        arc = {
            "question": "Sky?",
            "choices": {"text": ["green", "blue"], "label": ["A", "B"]},
            "answerKey": "B",
        }
        exported = {"prompt": "Q: x\nA:", "choices": ["a", "b", "c"], "gold": 2}
        task = eval_tasks.load(str(_jsonl(Path(d) / "t.jsonl", [arc, exported])))
    assert [i["answer"] for i in task.items] == [1, 2]
    assert task.items[0]["prompt"] == "Question: Sky?\nAnswer:"
    assert task.items[1]["prompt"] == "Q: x\nA:"
    builtin = eval_tasks.load("capitals")
    picked = eval_tasks.select(builtin, limit=5, shots=2, seed=3)
    assert len(picked) == 5 and picked == eval_tasks.select(builtin, limit=5, shots=2, seed=3)
    assert all(i not in shots and len(shots) == 2 for i, shots in picked)
    assert eval_tasks.judge({"answer": "The Paris"}, "paris.\nmore text")
    assert not eval_tasks.judge({"answer": "48"}, "It is 48")
    assert eval_tasks.judge({"pattern": r"\b48\b", "answer": None}, "It is 48")
    assert set(eval_tasks.expand(["builtin"])) == set(eval_tasks.builtin_names())
    with pytest.raises(SpecError, match="not found"):
        eval_tasks.expand(["./missing.jsonl"])
