"""Fine-tuning (LoRA, DoRA, full; QLoRA on a quantized base) with mlx-lm's trainer.

`mlx_lm.lora.run` ignores a callback passed to it, so `finetune` builds the model and the
optimizer the way `mlx_lm.lora.train_model` does and calls `mlx_lm.tuner.train` directly
with its own `TrainingCallback`: every loss report reaches `on_report`. Batches pass through
a thin wrapper around mlx-lm's `iterate_batches`, which is where checkpoints are written
(numbered by the global iteration, so a resumed run continues the count) and where a stop
request ends training at the next step, after saving what was learnt so far.

The adapter folder is what `mlx_lm.load(model, adapter_path=...)` and `mlx_lm.fuse` read:
`adapters.safetensors`, `adapter_config.json` (mlx-lm's own keys) and
`NNNNNNN_adapters.safetensors` checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

LORA_SCALE = 20.0  # mlx-lm's default for lora_parameters["scale"]
FINE_TUNE_TYPES = ("lora", "dora", "full")
OPTIMIZERS = ("adam", "adamw", "muon", "sgd", "adafactor")


@dataclass
class FinetuneSettings:
    """Hyper-parameters, named and defaulted as in mlx-lm's LoRA config (CONFIG_DEFAULTS)."""

    fine_tune_type: str = "lora"
    num_layers: int = 16  # -1: all
    rank: int = 8
    scale: float = LORA_SCALE
    dropout: float = 0.0
    lora_keys: list[str] | None = None  # which linear layers; None: all of them
    batch_size: int = 4
    iters: int = 1000  # the total, counted from the first iteration of a resumed adapter
    learning_rate: float = 1e-5
    lr_schedule: dict[str, Any] | None = None  # {"name", "arguments", "warmup", "warmup_init"}
    optimizer: str = "adam"
    optimizer_config: dict[str, Any] = field(default_factory=dict)
    steps_per_report: int = 10
    steps_per_eval: int = 200
    val_batches: int = 25  # -1: the whole validation set
    test_batches: int = 500  # -1: the whole test set
    save_every: int = 100
    max_seq_length: int = 2048
    grad_checkpoint: bool = False
    grad_accumulation_steps: int = 1
    clear_cache_threshold: int = 0
    mask_prompt: bool = False
    seed: int = 0
    features: dict[str, str] = field(default_factory=dict)  # mlx-lm's *_feature keys

    def lora_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"rank": self.rank, "dropout": self.dropout, "scale": self.scale}
        if self.lora_keys:
            params["keys"] = list(self.lora_keys)
        return params

    def adapter_config(self, model_path: Path) -> dict[str, Any]:
        """adapter_config.json as mlx-lm writes it (its loaders read these keys)."""
        return {
            "model": str(model_path),
            "fine_tune_type": self.fine_tune_type,
            "num_layers": self.num_layers,
            "lora_parameters": None if self.fine_tune_type == "full" else self.lora_parameters(),
            "batch_size": self.batch_size,
            "iters": self.iters,
            "learning_rate": self.learning_rate,
            "lr_schedule": self.lr_schedule,
            "optimizer": self.optimizer,
            "optimizer_config": {self.optimizer: self.optimizer_config},
            "steps_per_report": self.steps_per_report,
            "steps_per_eval": self.steps_per_eval,
            "val_batches": self.val_batches,
            "test_batches": self.test_batches,
            "save_every": self.save_every,
            "max_seq_length": self.max_seq_length,
            "grad_checkpoint": self.grad_checkpoint,
            "grad_accumulation_steps": self.grad_accumulation_steps,
            "mask_prompt": self.mask_prompt,
            "seed": self.seed,
            **{f"{k}_feature": v for k, v in self.features.items()},
        }


class TrainingStopped(Exception):
    """Training ended early on request; a checkpoint of `iteration` was saved first."""

    def __init__(self, iteration: int):
        super().__init__(f"training stopped at iteration {iteration}")
        self.iteration = iteration


def checkpoint_name(iteration: int) -> str:
    return f"{iteration:07d}_adapters.safetensors"


def optimizer_name(iteration: int) -> str:
    """The optimizer's state saved beside checkpoint `iteration` (mlx-lm saves none), so a
    resumed run continues Adam's moments and the step count instead of starting them over."""
    return f"{iteration:07d}_optimizer.safetensors"


def _restore_optimizer(optimizer, parameters, path: Path) -> bool:
    """Load a saved optimizer state into `optimizer` for `parameters`; False (state left
    fresh) when there is none or it does not fit these parameters."""
    import mlx.core as mx

    if not path.exists():
        return False
    optimizer.init(parameters)
    saved = mx.load(str(path))
    fresh = optimizer.state
    try:
        for key in saved:  # check every path first: all or nothing
            _leaf_parent(fresh, key)
    except (KeyError, IndexError, TypeError, ValueError):
        print(
            f"the optimizer state in {path.name} does not fit; starting it fresh", file=sys.stderr
        )
        return False
    for key, value in saved.items():
        parent, last = _leaf_parent(fresh, key)
        parent[last] = value
    return True


def _leaf_parent(tree, key: str):
    """(the container, its key) of a tree_flatten path such as ``layers.3.q_proj.lora_a.m``."""
    *parts, last = key.split(".")
    node = tree
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        last = int(last)
        node[last]  # noqa: B018 (IndexError when missing)
    elif last not in node:
        raise KeyError(key)
    return node, last


def finetune(
    model_path: Path,
    adapter_dir: Path,
    splits: dict[str, list[dict[str, Any]]],
    settings: FinetuneSettings,
    *,
    start_iteration: int = 0,
    start_tokens: int = 0,
    init_weights: Path | None = None,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Fine-tune the model at `model_path` on `splits` ("train", optional "valid", "test").

    Continues from `init_weights` (an adapters file) at `start_iteration` when given, up to
    `settings.iters` in all; `trained_tokens` counts on from `start_tokens` (the tokens the
    adapter had seen by then). `on_report` gets each training report (`kind` "train":
    iteration, train_loss, learning_rate, iterations_per_s, tokens_per_s, trained_tokens,
    peak_memory_bytes), each validation (`kind` "valid": iteration, loss, eval_time_s) and
    the test evaluation (`kind` "test"); raising inside it aborts training. `should_stop`
    is polled before every step: when it returns true a checkpoint is saved and
    TrainingStopped is raised. Raises ValueError for settings the model cannot take.
    """
    s = settings
    remaining = _check_request(s, splits, start_iteration)

    import mlx.core as mx
    from mlx_lm.tuner.datasets import create_dataset

    adapter_dir = Path(adapter_dir)
    model, tokenizer, num_layers = _load(model_path, s, start_iteration)
    data_config = SimpleNamespace(
        mask_prompt=s.mask_prompt, **{f"{k}_feature": v for k, v in s.features.items()}
    )
    datasets = {
        name: create_dataset(records, tokenizer, data_config)
        for name, records in splits.items()
        if records
    }
    trainable = _make_trainable(model, s, num_layers, init_weights)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    config = s.adapter_config(model_path)
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    run = _Training(
        settings=s,
        model=model,
        optimizer=_optimizer(s, model, start_iteration, init_weights),
        adapter_dir=adapter_dir,
        start_iteration=start_iteration,
        start_tokens=start_tokens,
        on_report=on_report,
        on_checkpoint=on_checkpoint,
        should_stop=should_stop,
    )
    mx.reset_peak_memory()
    started = time.perf_counter()
    run.train(datasets, remaining)
    train_time_s = time.perf_counter() - started
    if s.save_every and s.iters % s.save_every == 0 and s.iters not in run.saved:
        run.save_checkpoint(s.iters)
    test = _test(model, datasets, s) if "test" in datasets else None
    if test is not None and on_report is not None:
        on_report(test)
    return {
        **run.summary(remaining, test),
        "trainable_parameters": int(trainable),
        "peak_memory_bytes": int(mx.get_peak_memory()),
        "train_time_s": train_time_s,
        "settings": asdict(s),
    }


def _check_request(
    s: FinetuneSettings, splits: dict[str, list[dict[str, Any]]], start_iteration: int
) -> int:
    """The iterations left to train; ValueError for a request that cannot start."""
    if s.fine_tune_type not in FINE_TUNE_TYPES:
        raise ValueError(f"unknown fine-tune type '{s.fine_tune_type}'")
    if s.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{s.optimizer}'")
    if not splits.get("train"):
        raise ValueError("there are no training examples")
    if len(splits["train"]) < s.batch_size:
        raise ValueError(
            f"batch_size {s.batch_size} is larger than the {len(splits['train'])} training "
            "examples."
        )
    remaining = s.iters - start_iteration
    if remaining < 1:
        raise ValueError(f"the adapter already has {start_iteration} of {s.iters} iterations")
    return remaining


def _load(model_path: Path, s: FinetuneSettings, start_iteration: int):
    """The model and its tokenizer, the random state seeded: (model, tokenizer, the number
    of layers to train)."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load

    mx.random.seed(s.seed)  # the LoRA A matrices start random
    np.random.seed(s.seed + start_iteration)  # the batch order (mlx_lm.lora seeds it too)
    model, tokenizer = load(str(model_path))
    layers = len(model.layers)
    num_layers = layers if s.num_layers == -1 else s.num_layers
    if num_layers > layers:
        raise ValueError(f"num_layers {num_layers} is more than the model's {layers} layers.")
    return model, tokenizer, num_layers


def _make_trainable(model, s: FinetuneSettings, num_layers: int, init_weights: Path | None) -> int:
    """Freeze the model but its trainable layers (LoRA/DoRA adapters, or the last layers
    unfrozen), load resumed weights; the trainable parameter count."""
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    if s.fine_tune_type == "full":
        for layer in model.layers[-num_layers:]:
            layer.unfreeze()
    else:
        linear_to_lora_layers(
            model, num_layers, s.lora_parameters(), use_dora=s.fine_tune_type == "dora"
        )
    if init_weights is not None:
        model.load_weights(str(init_weights), strict=False)
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    if trainable == 0:
        raise ValueError("nothing to train: no layer of the model can be fine-tuned this way")
    return trainable


def _optimizer(s: FinetuneSettings, model, start_iteration: int, init_weights: Path | None):
    """The optimizer; a resumed run continues the schedule where the checkpoint left it:
    through the restored step count, or (no optimizer state saved) an offset of the
    iterations."""
    import mlx.optimizers as optim
    from mlx_lm.tuner.utils import build_schedule

    opt_class = {
        "adam": optim.Adam,
        "adamw": optim.AdamW,
        "muon": optim.Muon,
        "sgd": optim.SGD,
        "adafactor": optim.Adafactor,
    }[s.optimizer]

    def make_optimizer(offset: int):
        learning_rate = s.learning_rate
        if s.lr_schedule:
            schedule = build_schedule(s.lr_schedule)
            learning_rate = (lambda step: schedule(step + offset)) if offset else schedule
        return opt_class(learning_rate=learning_rate, **s.optimizer_config)

    optimizer = make_optimizer(0)
    saved_state = init_weights and Path(init_weights).with_name(optimizer_name(start_iteration))
    if start_iteration and not (
        saved_state and _restore_optimizer(optimizer, model.trainable_parameters(), saved_state)
    ):
        optimizer = make_optimizer(start_iteration)
    return optimizer


@dataclass
class _Training:
    """One training run: mlx-lm's trainer with our reports, checkpoints and stop."""

    settings: FinetuneSettings
    model: Any
    optimizer: Any
    adapter_dir: Path
    start_iteration: int
    start_tokens: int
    on_report: Callable[[dict[str, Any]], None] | None
    on_checkpoint: Callable[[int, Path], None] | None
    should_stop: Callable[[], bool] | None
    train_reports: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    saved: set[int] = field(default_factory=set)
    handed_out: int = 0  # training batches given to the trainer: the iteration it works on

    @property
    def adapter_file(self) -> Path:
        return self.adapter_dir / "adapters.safetensors"

    def save_checkpoint(self, iteration: int) -> None:
        import mlx.core as mx
        from mlx.utils import tree_flatten

        weights = dict(tree_flatten(self.model.trainable_parameters()))
        mx.save_safetensors(str(self.adapter_file), weights)
        checkpoint = self.adapter_dir / checkpoint_name(iteration)
        mx.save_safetensors(str(checkpoint), weights)
        state = {k: v for k, v in tree_flatten(self.optimizer.state) if k != "learning_rate"}
        mx.save_safetensors(str(self.adapter_dir / optimizer_name(iteration)), state)
        if self.on_checkpoint is not None:
            self.on_checkpoint(iteration, checkpoint)

    def report(self, report: dict[str, Any]) -> None:
        (self.train_reports if report["kind"] == "train" else self.evals).append(report)
        if self.on_report is not None:
            self.on_report(report)

    def callback(self):
        """mlx-lm's TrainingCallback, reporting each training and validation loss."""
        from mlx_lm.tuner.callbacks import TrainingCallback

        run = self

        class Reporter(TrainingCallback):
            def on_train_loss_report(self, info: dict[str, Any]) -> None:
                run.report(
                    {
                        "kind": "train",
                        "iteration": run.start_iteration + int(info["iteration"]),
                        "train_loss": float(info["train_loss"]),
                        "learning_rate": float(info["learning_rate"]),
                        "iterations_per_s": float(info["iterations_per_second"]),
                        "tokens_per_s": float(info["tokens_per_second"]),
                        "trained_tokens": run.start_tokens + int(info["trained_tokens"]),
                        "peak_memory_bytes": int(info["peak_memory"] * 1e9),
                    }
                )

            def on_val_loss_report(self, info: dict[str, Any]) -> None:
                # mlx-lm evaluates before step `it`, prints "Iter it: Val loss" and passes
                # `it - 1` to the callback: keep the log's number (the batches handed out).
                run.report(
                    {
                        "kind": "valid",
                        "iteration": run.start_iteration + run.handed_out,
                        "loss": float(info["val_loss"]),
                        "perplexity": _perplexity(float(info["val_loss"])),
                        "eval_time_s": float(info["val_time"]),
                    }
                )

        return Reporter()

    def batches(self, dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        """mlx-lm's iterate_batches; between training steps, checkpoints and the stop."""
        from mlx_lm.tuner.trainer import iterate_batches

        inner = iterate_batches(
            dataset, batch_size, max_seq_length, loop=loop, seed=seed, comm_group=comm_group
        )
        if not loop:  # an evaluation
            yield from inner
            return
        s = self.settings
        done = 0  # steps finished (and evaluated by the trainer) when the next batch is asked
        self.handed_out = 0
        for batch in inner:
            if done:
                iteration = self.start_iteration + done
                stop = self.should_stop is not None and self.should_stop()
                if stop or (s.save_every and iteration % s.save_every == 0):
                    self.save_checkpoint(iteration)
                    self.saved.add(iteration)
                if stop:
                    raise TrainingStopped(iteration)
            self.handed_out = done + 1
            yield batch
            done += 1

    def train(self, datasets: dict[str, Any], remaining: int) -> None:
        from mlx_lm.tuner.datasets import CacheDataset
        from mlx_lm.tuner.trainer import TrainingArgs, train

        s = self.settings
        args = TrainingArgs(
            batch_size=s.batch_size,
            iters=remaining,
            val_batches=s.val_batches,
            steps_per_report=s.steps_per_report,
            steps_per_eval=s.steps_per_eval,
            steps_per_save=remaining + 1,  # checkpoints are ours (numbered by global iteration)
            max_seq_length=s.max_seq_length,
            adapter_file=str(self.adapter_file),
            grad_checkpoint=s.grad_checkpoint,
            grad_accumulation_steps=s.grad_accumulation_steps,
            clear_cache_threshold=s.clear_cache_threshold,
        )
        # mlx-lm's progress UI prints on stdout, which a job's child keeps for its protocol.
        with contextlib.redirect_stdout(sys.stderr):
            train(
                model=self.model,
                optimizer=self.optimizer,
                train_dataset=CacheDataset(datasets["train"]),
                val_dataset=CacheDataset(datasets["valid"]) if "valid" in datasets else None,
                args=args,
                iterate_batches=self.batches,
                training_callback=self.callback(),
            )

    def summary(self, remaining: int, test: dict[str, Any] | None) -> dict[str, Any]:
        """The losses and the training speed over the reports: tokens / time spent in
        training steps (not evaluation)."""
        reports = self.train_reports
        step_time = sum(
            (r["iteration"] - prev) / r["iterations_per_s"]
            for r, prev in zip(
                reports,
                [self.start_iteration] + [r["iteration"] for r in reports[:-1]],
                strict=True,
            )
            if r["iterations_per_s"] > 0
        )
        trained_tokens = reports[-1]["trained_tokens"] if reports else self.start_tokens
        valid = [e for e in self.evals if e["kind"] == "valid"]
        return {
            "adapter_path": str(self.adapter_dir),
            "start_iteration": self.start_iteration,
            "iterations": self.settings.iters,
            "train_losses": [[r["iteration"], r["train_loss"]] for r in reports],
            "val_losses": [[e["iteration"], e["loss"]] for e in valid],
            "first_train_loss": reports[0]["train_loss"] if reports else None,
            "final_train_loss": reports[-1]["train_loss"] if reports else None,
            "final_val_loss": valid[-1]["loss"] if valid else None,
            "test_loss": test["loss"] if test else None,
            "test_perplexity": test["perplexity"] if test else None,
            "trained_tokens": trained_tokens,
            "tokens_per_s": (
                (trained_tokens - self.start_tokens) / step_time if step_time > 0 else None
            ),
            "iterations_per_s": remaining / step_time if step_time > 0 else None,
        }


def _test(model, datasets: dict[str, Any], s: FinetuneSettings) -> dict[str, Any]:
    """The test split's evaluation, after training."""
    from mlx_lm.tuner.datasets import CacheDataset
    from mlx_lm.tuner.trainer import evaluate

    tic = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        loss = evaluate(
            model=model,
            dataset=CacheDataset(datasets["test"]),
            batch_size=s.batch_size,
            num_batches=s.test_batches,
            max_seq_length=s.max_seq_length,
        )
    return {
        "kind": "test",
        "iteration": s.iters,
        "loss": float(loss),
        "perplexity": _perplexity(float(loss)),
        "eval_time_s": time.perf_counter() - tic,
    }


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def lora_finetune(
    model_path: Path,
    data_dir: Path,
    adapter_dir: Path,
    *,
    iters: int = 10,
    batch_size: int = 1,
    learning_rate: float = 1e-4,
    num_layers: int = 4,
    rank: int = 8,
    max_seq_length: int = 128,
    steps_per_report: int | None = None,
    seed: int = 0,
    on_report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """LoRA on the last `num_layers` blocks from a folder with train.jsonl (and valid.jsonl).

    A short form of `finetune` for scripts and tests: validation on the whole validation
    set at the start and the end, no checkpoints. `steps_per_report` None reports every step
    up to 10 steps, then about ten times in all. Raises ValueError for a missing or empty
    train.jsonl, a batch larger than the training set, or more layers than the model has.
    """
    if iters < 1 or batch_size < 1 or rank < 1 or num_layers < 1 or max_seq_length < 2:
        raise ValueError(
            "iters, batch_size, rank and num_layers must be at least 1, max_seq_length 2."
        )
    data_dir = Path(data_dir)
    if not (data_dir / "train.jsonl").is_file():
        raise ValueError(f"{data_dir} has no train.jsonl.")
    splits = {"train": read_jsonl(data_dir / "train.jsonl")}
    if not splits["train"]:
        raise ValueError(f"{data_dir / 'train.jsonl'} is empty.")
    if (data_dir / "valid.jsonl").is_file():
        splits["valid"] = read_jsonl(data_dir / "valid.jsonl")
    settings = FinetuneSettings(
        num_layers=num_layers,
        rank=rank,
        batch_size=batch_size,
        iters=iters,
        learning_rate=learning_rate,
        steps_per_report=steps_per_report or (1 if iters <= 10 else max(1, iters // 10)),
        steps_per_eval=iters,
        val_batches=-1,
        save_every=0,
        max_seq_length=max_seq_length,
        seed=seed,
    )
    return finetune(Path(model_path), Path(adapter_dir), splits, settings, on_report=on_report)
