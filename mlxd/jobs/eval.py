"""eval: task accuracy of a model (multiple choice by log-likelihood, generation by exact match
or pattern), every item's answer kept; with a base, the accuracy it lost against it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mlxd.jobs import eval_tasks
from mlxd.jobs.base import (
    FinishContext,
    JobFailed,
    ModelRefSpec,
    RunContext,
    add_model_input,
    resolve_input_model,
)
from mlxd.vocab.errors import SpecError

PRODUCES_MODEL = False
QUIET = False
TIME_LIMIT_S = 6 * 3600  # the default of --timeout
MAX_SHOTS = 16
SYNTHETIC_NOTE = "synthetic model (random weights): its accuracy is meaningless"
PROTOCOL_VERSION = 1  # bump when prompts or scoring change: old runs then match nothing


@dataclass
class Spec(ModelRefSpec):
    tasks: list[str] = field(default_factory=lambda: [eval_tasks.BUILTIN])
    base: str | None = None  # REF of the model to compare with
    base_id: int | None = None
    limit: int | None = None  # items per task (drawn with the seed); None: all
    shots: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise SpecError("--limit must be at least 1")
        if not 0 <= self.shots <= MAX_SHOTS:
            raise SpecError(f"--shots must be between 0 and {MAX_SHOTS}")
        self.tasks = eval_tasks.expand(list(self.tasks))
        for ref in self.tasks:
            task = eval_tasks.load(ref)  # every line checked before anything is queued
            if self.shots and len(task.items) < 2:
                raise SpecError(f"task '{task.name}' has one item: no other to use as a shot")


def describe(spec: Spec) -> str:
    names = ", ".join(_task_name(t) for t in spec.tasks)
    against = f" vs {spec.base}" if spec.base else ""
    extra = "".join(
        [
            f", {spec.limit} per task" if spec.limit else "",
            f", {spec.shots}-shot" if spec.shots else "",
        ]
    )
    return f"eval {spec.model}{against} on {names}{extra}"


def _task_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1].removesuffix(".jsonl")


def protocol(task_shas: list[str], spec: Spec) -> str:
    """What makes two runs comparable item for item: the tasks' bytes and how they were
    asked."""
    key = {
        "v": PROTOCOL_VERSION,
        "tasks": task_shas,
        "limit": spec.limit,
        "shots": spec.shots,
        "seed": spec.seed,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    inputs = resolve_input_model(spec, store)
    model = store.resolve_model(inputs["model_id"])
    tasks = [eval_tasks.load(ref) for ref in spec.tasks]
    inputs["protocol"] = protocol([t.sha256 for t in tasks], spec)
    inputs["synthetic"] = bool(model.synthetic)
    inputs.update(base_id=None, base_name=None, base_path=None, base_run_id=None)
    if spec.base is None and spec.base_id is None:
        return inputs
    base = store.resolve_model(spec.base_id if spec.base_id is not None else spec.base)
    if base.id == inputs["model_id"]:
        raise JobFailed(f"'{base.name}' is the model itself; compare it with another base")
    inputs.update(base_id=base.id, base_name=base.name, base_synthetic=bool(base.synthetic))
    from mlxd.catalog.read import Reader

    with Reader(store.paths) as reader:  # the base scored these items already: reuse it
        done = reader.eval_run_with_protocol(base.id, inputs["protocol"])
    if done is not None:
        inputs["base_run_id"] = done.id
        inputs["base_accuracy"] = done.accuracy
    else:
        add_model_input(inputs, store, base, "base_path")
    return inputs


# -- in the child ---------------------------------------------------------------------------


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import time
    from pathlib import Path

    from mlxd.engine.backend import system_facts

    tasks = [eval_tasks.load(ref) for ref in spec.tasks]
    tic = time.perf_counter()
    sides = [("model", inputs["model_path"], inputs["model_name"])]
    if inputs.get("base_path"):
        sides.append(("base", inputs["base_path"], inputs["base_name"]))
    out: dict[str, Any] = {"runs": {}}
    for n, (role, path, name) in enumerate(sides):

        def progress(fraction: float, message: str, n=n, name=name) -> None:
            ctx.progress((n + fraction) / len(sides), f"{name}: {message}")

        out["runs"][role] = score_model(Path(path), tasks, spec, progress)
    out.update(
        tasks={t.name: t.sha256 for t in tasks},
        elapsed_s=time.perf_counter() - tic,
        system=system_facts(),
    )
    return out


def score_model(path, tasks: list[eval_tasks.Task], spec: Spec, progress) -> dict[str, Any]:
    """Every task's items through one model: their records and each task's figures."""
    from mlxd.engine import evaluate

    progress(0.0, f"loading {path.name}")
    model, tokenizer = evaluate.load(path)
    chat = evaluate.has_chat_template(tokenizer)
    items: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}
    for t, task in enumerate(tasks):
        chosen = eval_tasks.select(task, limit=spec.limit, shots=spec.shots, seed=spec.seed)

        def step(fraction: float, message: str, t=t, task=task) -> None:
            progress((t + fraction) / len(tasks), f"{task.name} {message}")

        if task.kind == eval_tasks.CHOICE:
            records = _choice_records(model, tokenizer, task, chosen, step)
        else:
            records = _generate_records(model, tokenizer, task, chosen, chat, step)
        figures[task.name] = task_figures(task, records, spec.seed)
        items += records
    del model
    evaluate.release()
    return {"items": items, "tasks": figures, "chat_template": chat}


def _choice_records(model, tokenizer, task, chosen, progress) -> list[dict[str, Any]]:
    from mlxd.engine import evaluate

    requests = [
        (
            eval_tasks.shot_prefix(task, shots) + task.items[i]["prompt"],
            [" " + c for c in task.items[i]["choices"]],
        )
        for i, shots in chosen
    ]
    scores = evaluate.score_choices(model, tokenizer, requests, progress)
    records = []
    for (i, _), lls in zip(chosen, scores, strict=True):
        item = task.items[i]
        ll = [s for s, _ in lls]
        # acc_norm as lm-eval-harness: log-likelihood per character of the continuation
        norm = [s / len(" " + c) for s, c in zip(ll, item["choices"], strict=True)]
        pick, pick_norm = _argmax(ll), _argmax(norm)
        records.append(
            {
                "task": task.name,
                "item": i,
                "line": task.lines[i],
                "correct": pick == item["answer"],
                "correct_norm": pick_norm == item["answer"],
                "output": item["choices"][pick],
                "expected": item["choices"][item["answer"]],
                "details": {"loglikelihoods": [round(x, 4) for x in ll], "pick_norm": pick_norm},
            }
        )
    return records


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda k: values[k])


def _generate_records(model, tokenizer, task, chosen, chat: bool, progress) -> list[dict]:
    from mlxd.engine import evaluate

    prompts, limits = [], []
    for i, shots in chosen:
        item = task.items[i]
        if chat:
            messages = []
            for j in shots:
                messages += [
                    {"role": "user", "content": task.items[j]["prompt"]},
                    {"role": "assistant", "content": _shown_answer(task.items[j])},
                ]
            prompts.append([*messages, {"role": "user", "content": item["prompt"]}])
        else:
            prefix = "".join(
                f"{task.items[j]['prompt']}\n{_shown_answer(task.items[j])}\n\n" for j in shots
            )
            prompts.append(f"{prefix}{item['prompt']}\n")
        answer = item.get("answer")
        # Room for the answer and a few tokens of wrapping; a pattern gets a sentence.
        limits.append(evaluate.token_count(tokenizer, answer) + 6 if answer else 32)
    outputs = evaluate.generate(model, tokenizer, prompts, limits, progress=progress)
    records = []
    for (i, _), output in zip(chosen, outputs, strict=True):
        item = task.items[i]
        records.append(
            {
                "task": task.name,
                "item": i,
                "line": task.lines[i],
                "correct": eval_tasks.judge(item, output),
                "correct_norm": None,
                "output": output,
                "expected": item["answer"] if item.get("answer") is not None else item["pattern"],
                "details": {"match": "pattern" if item.get("pattern") else "exact"},
            }
        )
    return records


def _shown_answer(item: dict[str, Any]) -> str:
    return item["answer"] if item.get("answer") is not None else ""


def task_figures(task, records: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """A task's accuracy (and, multiple choice, length-normalised accuracy) with bootstrap
    95% intervals over its items."""
    from mlxd.vocab.stats import bootstrap_ci

    right = [1.0 if r["correct"] else 0.0 for r in records]
    low, high = bootstrap_ci(right, seed=seed)
    out = {
        "kind": task.kind,
        "items": len(records),
        "correct": int(sum(right)),
        "acc": sum(right) / len(right),
        "acc_low": low,
        "acc_high": high,
        "sha256": task.sha256,
        "source": task.source,
        "chance": _chance(task, records),
    }
    if task.kind == eval_tasks.CHOICE:
        norm = [1.0 if r["correct_norm"] else 0.0 for r in records]
        nlow, nhigh = bootstrap_ci(norm, seed=seed)
        out.update(acc_norm=sum(norm) / len(norm), acc_norm_low=nlow, acc_norm_high=nhigh)
    return out


def _chance(task, records) -> float | None:
    """What guessing scores: the mean of 1/choices (multiple choice); None for generation."""
    if task.kind != eval_tasks.CHOICE:
        return None
    return sum(1 / len(task.items[r["item"]]["choices"]) for r in records) / len(records)


# -- back in the daemon ---------------------------------------------------------------------


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    from mlxd.catalog.models import EvalRun

    system = fin.store.system_for(result["system"], session=fin.session)

    def row(side: dict[str, Any], model_id: int, synthetic: bool, **extra: Any) -> EvalRun:
        from mlxd.vocab.stats import bootstrap_ci

        right = [1.0 if i["correct"] else 0.0 for i in side["items"]]
        low, high = bootstrap_ci(right, seed=spec.seed)
        run = EvalRun(
            job_id=fin.job.id,
            model_id=model_id,
            system_id=system.id,
            protocol=inputs["protocol"],
            tasks=list(side["tasks"]),
            items=len(right),
            correct=int(sum(right)),
            accuracy=sum(right) / len(right),
            accuracy_low=low,
            accuracy_high=high,
            shots=spec.shots,
            seed=spec.seed,
            item_limit=spec.limit,
            synthetic=synthetic,
            details={
                "tasks": side["tasks"],
                "chat_template": side.get("chat_template"),
                "elapsed_s": result.get("elapsed_s"),
                "task_refs": spec.tasks,
            },
            **extra,
        )
        return fin.store.add_eval_run(run, side["items"], session=fin.session)

    runs = result["runs"]
    base_run_id, base_accuracy = inputs.get("base_run_id"), inputs.get("base_accuracy")
    if "base" in runs:
        base = row(runs["base"], inputs["base_id"], bool(inputs.get("base_synthetic")))
        base_run_id, base_accuracy = base.id, base.accuracy
    mine = row(
        runs["model"],
        inputs["model_id"],
        bool(inputs.get("synthetic")),
        base_model_id=inputs.get("base_id"),
        base_run_id=base_run_id,
    )
    if base_accuracy is not None:
        mine.base_accuracy = base_accuracy
        mine.accuracy_drop = base_accuracy - mine.accuracy
        fin.session.add(mine)
        fin.session.flush()
    fin.summary.update(
        eval_run_id=mine.id,
        items=mine.items,
        accuracy=round(mine.accuracy, 4),
        accuracy_ci95=[round(mine.accuracy_low, 4), round(mine.accuracy_high, 4)],
        tasks={k: round(v["acc"], 4) for k, v in runs["model"]["tasks"].items()},
    )
    if base_accuracy is not None:
        fin.summary.update(
            base=inputs.get("base_name"),
            base_accuracy=round(base_accuracy, 4),
            accuracy_drop=round(mine.accuracy_drop, 4),
            base_reused="base" not in runs,
        )
    if mine.synthetic:
        fin.summary["note"] = SYNTHETIC_NOTE
