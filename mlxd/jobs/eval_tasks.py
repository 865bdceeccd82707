"""Evaluation tasks: reading and checking task files, pure Python (the CLI refuses bad ones
before anything is queued; the job's child reads them again).

A task is a JSONL file, one item a line, of one of two kinds:

- multiple choice: ``question``, ``choices`` (a list), ``answer`` (the right choice's 0-based
  index, or its text), optional ``context`` (a passage put before the question) or ``prompt``
  (the whole prompt, already formatted: what an lm-eval export gives). lm-eval-harness's
  layouts are accepted where they fit: ``query`` for ``question``, ``gold`` for ``answer``,
  ARC's ``choices: {"text": [...], "label": [...]}`` with ``answerKey``.
- generation: ``prompt`` and ``answer`` (exact match after normalisation) or ``pattern`` (a
  regular expression searched in the output).

``builtin`` names every task that ships in ``mlxd/data/tasks``; one of them goes by its name.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mlxd.vocab.errors import SpecError

BUILTIN = "builtin"
CHOICE, GENERATE = "choice", "generate"


@dataclass
class Task:
    name: str
    kind: str  # CHOICE | GENERATE
    items: list[dict[str, Any]]  # normalised: see _choice_item / _generate_item
    sha256: str
    source: str  # "builtin" or the file's path
    lines: list[int] = field(default_factory=list)  # each item's line in the file


def builtin_names() -> list[str]:
    folder = resources.files("mlxd").joinpath("data/tasks")
    return sorted(
        p.name.removesuffix(".jsonl") for p in folder.iterdir() if p.name.endswith(".jsonl")
    )


def expand(names: list[str]) -> list[str]:
    """The task references a user gave, with ``builtin`` expanded and each file's path
    resolved (the daemon runs elsewhere: it opens the absolute path); each checked."""
    out: list[str] = []
    for name in names:
        refs = builtin_names() if name == BUILTIN else [name]
        for ref in refs:
            resolved = _resolve(ref)
            if resolved not in out:
                out.append(resolved)
    if not out:
        raise SpecError(
            "give at least one --task (a JSONL file, a builtin task's name, or 'builtin')"
        )
    return out


def _resolve(ref: str) -> str:
    path = Path(ref).expanduser()
    if path.is_file():
        return str(path.resolve())
    if ref in builtin_names():
        return ref
    if "/" in ref or ref.endswith((".jsonl", ".json")):
        raise SpecError(f"task file '{ref}' not found")
    raise SpecError(
        f"unknown builtin task '{ref}' (builtin tasks: {', '.join(builtin_names())}; "
        f"'{BUILTIN}' runs them all; or give a JSONL file)"
    )


def load(ref: str) -> Task:
    """A task by reference (a builtin name or a file path), every line checked: SpecError
    naming the file and line otherwise."""
    if "/" not in ref and ref in builtin_names():
        text = resources.files("mlxd").joinpath(f"data/tasks/{ref}.jsonl").read_text("utf-8")
        name, source, where = ref, BUILTIN, f"builtin task '{ref}'"
    else:
        path = Path(ref)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise SpecError(f"task file '{ref}' not found") from None
        except UnicodeDecodeError:
            raise SpecError(f"task file '{ref}' is not UTF-8 text") from None
        name, source, where = path.name.removesuffix(".jsonl"), str(path), f"task file '{ref}'"
    items, lines, kinds = [], [], set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            raise SpecError(f"{where} line {number} is not JSON") from None
        if not isinstance(raw, dict):
            raise SpecError(f"{where} line {number} is not a JSON object")
        kind, item = _item(raw, f"{where} line {number}")
        kinds.add(kind)
        if len(kinds) > 1:
            raise SpecError(
                f"{where} line {number}: mixes multiple-choice and generation items; "
                "one task holds one kind"
            )
        items.append(item)
        lines.append(number)
    if not items:
        raise SpecError(f"{where} is empty: no items")
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Task(name, kinds.pop(), items, sha, source, lines)


def _item(raw: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    if "choices" in raw:
        return CHOICE, _choice_item(raw, where)
    if "prompt" in raw:
        return GENERATE, _generate_item(raw, where)
    raise SpecError(
        f"{where}: neither 'choices' (a multiple-choice item) nor 'prompt' (a generation item)"
    )


def _choice_item(raw: dict[str, Any], where: str) -> dict[str, Any]:
    choices = raw["choices"]
    labels = None
    if isinstance(choices, dict):  # ARC's layout
        labels, choices = choices.get("label"), choices.get("text")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c for c in choices)
    ):
        raise SpecError(f"{where}: 'choices' must be a list of at least two non-empty texts")
    answer = next((raw[k] for k in ("answer", "gold", "answerKey") if k in raw), None)
    if answer is None:
        raise SpecError(f"{where}: no 'answer' (the right choice's index or text)")
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    if isinstance(answer, bool) or not isinstance(answer, int | str):
        raise SpecError(f"{where}: 'answer' must be a choice's 0-based index or its text")
    if isinstance(answer, str):
        if labels and answer in labels:
            index = labels.index(answer)
        elif answer in choices:
            index = choices.index(answer)
        elif answer.strip().isdigit():
            index = int(answer)
        else:
            raise SpecError(f"{where}: answer '{answer}' is not one of the choices")
    else:
        index = answer
    if not 0 <= index < len(choices):
        raise SpecError(
            f"{where}: answer index {index} is out of range ({len(choices)} choices: 0-"
            f"{len(choices) - 1})"
        )
    question = raw.get("question", raw.get("query"))
    prompt = raw.get("prompt")
    if prompt is None and not isinstance(question, str):
        raise SpecError(f"{where}: no 'question' (or a formatted 'prompt')")
    if prompt is None:
        context = raw.get("context")
        prompt = (f"{context}\n" if context else "") + f"Question: {question}\nAnswer:"
    if not isinstance(prompt, str):
        raise SpecError(f"{where}: 'prompt' must be text")
    return {"prompt": prompt, "choices": choices, "answer": index}


def _generate_item(raw: dict[str, Any], where: str) -> dict[str, Any]:
    prompt, answer, pattern = raw["prompt"], raw.get("answer"), raw.get("pattern")
    if not isinstance(prompt, str) or not prompt:
        raise SpecError(f"{where}: 'prompt' must be a non-empty text")
    if answer is None and pattern is None:
        raise SpecError(f"{where}: no 'answer' (or 'pattern', a regular expression)")
    if answer is not None and not isinstance(answer, str | int | float):
        raise SpecError(f"{where}: 'answer' must be a text")
    if pattern is not None:
        try:
            re.compile(str(pattern))
        except re.error as e:
            raise SpecError(f"{where}: 'pattern' is not a regular expression ({e})") from None
    return {
        "prompt": prompt,
        "answer": None if answer is None else str(answer),
        "pattern": None if pattern is None else str(pattern),
    }


# -- which items, with which shots ----------------------------------------------------------


def select(task: Task, *, limit: int | None, shots: int, seed: int) -> list[tuple[int, list[int]]]:
    """(item index, shot indices) of the items to score: all of them, or ``limit`` drawn
    with ``seed``; each item's few-shot examples drawn (with the same seed) from the other
    items, those not scored first."""
    rng = random.Random(seed)
    order = list(range(len(task.items)))
    if limit is not None and limit < len(order):
        rng.shuffle(order)
        chosen, rest = sorted(order[:limit]), order[limit:]
    else:
        chosen, rest = order, []
    out = []
    for i in chosen:
        pool = rest if len(rest) >= shots else [j for j in range(len(task.items)) if j != i]
        shot = random.Random(f"{seed}:{i}").sample(pool, min(shots, len(pool))) if shots else []
        out.append((i, shot))
    return out


def shot_prefix(task: Task, shots: list[int]) -> str:
    """The few-shot prefix of a multiple-choice prompt: each example with its right answer."""
    parts = []
    for j in shots:
        item = task.items[j]
        parts.append(f"{item['prompt']} {item['choices'][item['answer']]}\n\n")
    return "".join(parts)


# -- judging a generation -------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower case, no punctuation or articles, single spaces (SQuAD's normalisation)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def judge(item: dict[str, Any], output: str) -> bool:
    """A generation's verdict: the pattern found in the output, or the output's first
    non-empty line equal to the answer after normalisation."""
    if item.get("pattern"):
        return re.search(item["pattern"], output) is not None
    first = next((line for line in output.splitlines() if line.strip()), "")
    return normalize(first) == normalize(item["answer"] or "")
