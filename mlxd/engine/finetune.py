"""LoRA fine-tuning with mlx-lm's trainer, reporting through our own callback.

`mlx_lm.lora.run` ignores a callback passed to it, so this calls `mlx_lm.tuner.train`
directly with a `TrainingCallback` subclass: every loss report reaches `on_report`, and an
exception raised there stops training cleanly (the hook a job's cancel uses).

Data: a folder with `train.jsonl` (and optionally `valid.jsonl`) in any format mlx-lm
reads: `{"text": ...}`, chat `{"messages": [...]}` or `{"prompt": ..., "completion": ...}`
lines. A quantized model is trained as QLoRA (the base stays quantized and frozen).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

LORA_SCALE = 20.0  # mlx-lm's default for lora_parameters["scale"]


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
    """Train LoRA adapters on the last `num_layers` blocks; write them to `adapter_dir`.

    `on_report` gets each training report (`iteration`, `train_loss`, `learning_rate`,
    `tokens_per_second`, `trained_tokens`, `peak_memory_bytes`) and each validation report
    (`iteration`, `val_loss`); raising inside it aborts training. `steps_per_report` None
    reports every step up to 10 steps, then about ten times in all.

    Writes `adapters.safetensors` and an `adapter_config.json` that
    `mlx_lm.load(model, adapter_path=adapter_dir)` accepts. Returns `train_losses` and
    `val_losses` (lists of [iteration, loss]), `first_train_loss`, `final_train_loss`,
    `final_val_loss` (None without valid.jsonl), `iterations`, `trained_tokens`,
    `trainable_parameters`, `peak_memory_bytes`, `train_time_s`, `adapter_path`.

    Raises ValueError for a missing or empty train.jsonl, a batch larger than the
    training set, or more layers than the model has.
    """
    if iters < 1 or batch_size < 1 or rank < 1 or num_layers < 1 or max_seq_length < 2:
        raise ValueError(
            "iters, batch_size, rank and num_layers must be at least 1, max_seq_length 2."
        )
    data_dir, adapter_dir = Path(data_dir), Path(adapter_dir)
    if not (data_dir / "train.jsonl").is_file():
        raise ValueError(f"{data_dir} has no train.jsonl.")
    steps = steps_per_report or (1 if iters <= 10 else max(1, iters // 10))

    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import CacheDataset, load_local_dataset
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.tuner.utils import linear_to_lora_layers

    train_losses: list[list[float]] = []
    val_losses: list[list[float]] = []
    totals = {"trained_tokens": 0}

    class Reporter(TrainingCallback):
        def on_train_loss_report(self, info: dict[str, Any]) -> None:
            train_losses.append([int(info["iteration"]), float(info["train_loss"])])
            totals["trained_tokens"] = int(info["trained_tokens"])
            if on_report is not None:
                on_report(
                    {
                        "iteration": int(info["iteration"]),
                        "train_loss": float(info["train_loss"]),
                        "learning_rate": float(info["learning_rate"]),
                        "tokens_per_second": float(info["tokens_per_second"]),
                        "trained_tokens": int(info["trained_tokens"]),
                        "peak_memory_bytes": int(info["peak_memory"] * 1e9),
                    }
                )

        def on_val_loss_report(self, info: dict[str, Any]) -> None:
            val_losses.append([int(info["iteration"]), float(info["val_loss"])])
            if on_report is not None:
                on_report({"iteration": int(info["iteration"]), "val_loss": info["val_loss"]})

    mx.random.seed(seed)  # the LoRA A matrices start random
    model, tokenizer = load(str(model_path))
    if num_layers > len(model.layers):
        raise ValueError(
            f"num_layers {num_layers} is more than the model's {len(model.layers)} layers."
        )
    # The attributes mlx-lm's create_dataset reads (mask_prompt, *_feature) keep defaults.
    train_set, valid_set, _ = load_local_dataset(data_dir, tokenizer, SimpleNamespace())
    if len(train_set) == 0:
        raise ValueError(f"{data_dir / 'train.jsonl'} is empty.")
    if len(train_set) < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {len(train_set)} training examples."
        )

    model.freeze()
    lora_parameters = {"rank": rank, "dropout": 0.0, "scale": LORA_SCALE}
    linear_to_lora_layers(model, num_layers, lora_parameters)
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))

    adapter_dir.mkdir(parents=True, exist_ok=True)
    adapter_file = adapter_dir / "adapters.safetensors"
    # What mlx_lm.load(..., adapter_path=...) needs to rebuild the LoRA layers.
    adapter_config = {
        "model": str(model_path),
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": lora_parameters,
        "iters": iters,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_seq_length": max_seq_length,
        "seed": seed,
    }
    (adapter_dir / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")

    args = TrainingArgs(
        batch_size=batch_size,
        iters=iters,
        val_batches=-1,  # tiny validation sets: all of it, at the start and the end
        steps_per_report=steps,
        steps_per_eval=iters,
        steps_per_save=iters,
        max_seq_length=max_seq_length,
        adapter_file=str(adapter_file),
    )
    mx.reset_peak_memory()
    started = time.perf_counter()
    # mlx-lm's progress UI prints on stdout, which a job's child keeps for its protocol.
    with contextlib.redirect_stdout(sys.stderr):
        train(
            model=model,
            optimizer=optim.Adam(learning_rate=learning_rate),
            train_dataset=CacheDataset(train_set),
            val_dataset=CacheDataset(valid_set) if len(valid_set) else None,
            args=args,
            training_callback=Reporter(),
        )
    train_time_s = time.perf_counter() - started
    return {
        "adapter_path": str(adapter_dir),
        "iterations": iters,
        "train_losses": train_losses,
        "val_losses": val_losses,
        "first_train_loss": train_losses[0][1] if train_losses else None,
        "final_train_loss": train_losses[-1][1] if train_losses else None,
        "final_val_loss": val_losses[-1][1] if val_losses else None,
        "trained_tokens": totals["trained_tokens"],
        "trainable_parameters": int(trainable),
        "peak_memory_bytes": int(mx.get_peak_memory()),
        "train_time_s": train_time_s,
    }
