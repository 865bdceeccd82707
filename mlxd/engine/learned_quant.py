"""Learned quantization through mlx-lm's library functions (``mlx_lm/quant/``), offline.

AWQ (``awq_quantize``), GPTQ (``gptq_quantize``), DWQ (``dwq_quantize``) and dynamic bit
allocation (``estimate_sensitivities`` + ``estimate_threshold``) each get calibration tokens
made here from local text with the model's own tokenizer: nothing touches the hub. Their
tqdm bars are replaced, while they run, by a stand-in that reports each step (blocks,
layers, DWQ's loss) to the caller. DWQ checkpoints its learned scales and biases so a
retried job goes on from the last checkpoint.

Equal bits per weight: every method quantizes the layers rtn quantizes (the embedding too)
at the same bits and group size; GPTQ's ``fallback_bits`` and AWQ's ``embed_bits`` are set to
them rather than mlx-lm's defaults (6 and 4 bits), and each model records the bits per
weight it really has.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlxd.vocab.choices import AWQ_ARCHITECTURES, METHOD_BITS

from .convert import _check_dtype, _check_paths, _stdout_to_stderr, check_source, model_info

Progress = Callable[[str, int, int | None], None]  # (phase, done, total)
StepReport = Callable[[int, int, float], None]  # (step, steps, loss)

DWQ_CHECKPOINT = "dwq-params.safetensors"
DWQ_OPTIMIZER = "dwq-optimizer.safetensors"
DWQ_STATE = "dwq-state.json"


class _Bar:
    """tqdm's stand-in inside mlx_lm.quant's modules: each step goes to ``report``."""

    report: Progress = staticmethod(lambda phase, done, total: None)
    described: Callable[[str], None] = staticmethod(lambda desc: None)

    def __init__(self, iterable=None, total=None, desc=None, **_: Any):
        self.iterable = iterable
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.desc = desc or ""

    def __iter__(self):
        for i, item in enumerate(self.iterable):
            yield item
            type(self).report(self.desc, i + 1, self.total)

    def set_description(self, desc=None, refresh=True):
        type(self).described(desc or "")

    @staticmethod
    def write(s, *args: Any, **kwargs: Any):
        print(s, file=sys.stderr)


@contextlib.contextmanager
def _reporting(progress: Progress, described: Callable[[str], None] = lambda d: None):
    """mlx_lm.quant's modules use this module's bar (and print to stderr) while inside."""
    from mlx_lm.quant import awq, dwq, dynamic_quant, gptq

    bar = type("Bar", (_Bar,), {"report": staticmethod(progress)})
    bar.described = staticmethod(described)
    modules = (awq, gptq, dwq, dynamic_quant)
    saved = [m.tqdm for m in modules]
    for m in modules:
        m.tqdm = bar
    try:
        with _stdout_to_stderr():
            yield
    finally:
        for m, t in zip(modules, saved, strict=True):
            m.tqdm = t


def calibration_tokens(tokenizer, texts: list[str], samples: int, length: int, seed: int):
    """``samples`` non-overlapping runs of ``length`` tokens, chosen by a seeded shuffle, as an
    mx.array [samples, length]; plus the text's token count. ValueError when too short."""
    import mlx.core as mx
    import numpy as np

    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.encode(text))
    runs = len(ids) // length
    if runs < samples:
        raise ValueError(
            f"the calibration text has {len(ids):,} tokens; {samples} samples of {length} "
            f"tokens need {samples * length:,}"
        )
    chunks = np.asarray(ids[: runs * length], dtype=np.int32).reshape(runs, length)
    pick = np.random.default_rng(seed).permutation(runs)[:samples]
    return mx.array(chunks[np.sort(pick)]), len(ids)


def learned_quantize(
    src: Path,
    out_dir: Path,
    *,
    method: str,
    bits: int,
    group_size: int,
    texts: list[str],
    samples: int,
    length: int,
    seed: int = 0,
    dtype: str | None = None,
    options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    on_step: StepReport | None = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Quantize the unquantized model at ``src`` into ``out_dir`` (which must not exist) by
    ``method`` (awq, gptq, dwq, dynamic) on calibration ``texts``.

    ``options``: awq ``n_grid``; gptq ``batch_size``; dwq ``steps``, ``learning_rate``,
    ``batch_size``; dynamic ``target_bpw``, ``high_bits``, ``batch_size``.
    Returns the fields of QuantizeResult plus ``path``, ``calibration_tokens`` and
    ``method_s`` (the seconds of mlx-lm's function alone).
    """
    import mlx.core as mx
    from mlx_lm.utils import load, save

    if bits not in METHOD_BITS[method]:
        raise ValueError(
            f"{method} quantizes to {'/'.join(map(str, METHOD_BITS[method]))} bits, not {bits}."
        )
    options = dict(options or {})
    progress = progress or (lambda phase, done, total: None)
    dtype = _check_dtype(dtype)
    _check_paths(src, out_dir)
    config = check_source(src, group_size)
    if method == "awq" and config.get("model_type") not in AWQ_ARCHITECTURES:
        raise ValueError(
            f"mlx-lm's AWQ has no configuration for {config.get('model_type')!r} models "
            f"(it knows {', '.join(AWQ_ARCHITECTURES)})."
        )
    mx.random.seed(seed)
    with _stdout_to_stderr():
        model, tokenizer, config = load(str(src), return_config=True)
    if dtype is not None:
        model.set_dtype(getattr(mx, dtype))
        config["torch_dtype"] = dtype
    data, n_tokens = calibration_tokens(tokenizer, texts, samples, length, seed)

    tic = time.perf_counter()
    run = {"awq": _awq, "gptq": _gptq, "dwq": _dwq, "dynamic": _dynamic}[method]
    model, config = run(
        model,
        config,
        data,
        bits=bits,
        group_size=group_size,
        options=options,
        progress=progress,
        on_step=on_step,
        checkpoint_dir=checkpoint_dir,
        seed=seed,
    )
    method_s = time.perf_counter() - tic
    config["quantization_config"] = config["quantization"]
    with _stdout_to_stderr():
        save(str(out_dir), str(src), model, tokenizer, config)
    info = model_info(out_dir)
    target = options.get("target_bpw")
    if method == "dynamic" and target is not None and info["bits_per_weight"] > target + 0.01:
        raise ValueError(
            f"dynamic quantization cannot reach {target} bits per weight with "
            f"{bits}-bit groups of {group_size}: the least it makes here is "
            f"{info['bits_per_weight']:.2f}"
        )
    return {
        "bits_per_weight": info["bits_per_weight"],
        "num_parameters": info["num_parameters"],
        "bits": bits,
        "group_size": group_size,
        "mode": "affine",
        "recipe": None,
        "dtype": dtype,
        "method": method,
        "calibration_tokens": n_tokens,
        "method_s": method_s,
        "path": str(out_dir),
        **({"dwq": options["dwq_result"]} if "dwq_result" in options else {}),
    }


def quantization_config(model, bits: int, group_size: int) -> dict[str, Any]:
    """config.json's "quantization" of a quantized model: the common bits and group size,
    and an entry for each layer that differs (dynamic's high-bit layers)."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    out: dict[str, Any] = {"group_size": group_size, "bits": bits, "mode": "affine"}
    for path, module in tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module):
        b, g = getattr(module, "bits", None), getattr(module, "group_size", None)
        if b is not None and (b, g) != (bits, group_size):
            out[path] = {"group_size": g, "bits": b, "mode": "affine"}
    return out


def _phases(progress: Progress, names: dict[str, str]) -> Progress:
    """Rename mlx-lm's bar descriptions into the job's words."""
    return lambda desc, done, total: progress(names.get(desc, desc or "blocks"), done, total)


def _awq(model, config, data, *, bits, group_size, options, progress, **_):
    from mlx_lm.quant.awq import AWQ_MODEL_CONFIGS, awq_quantize

    with _reporting(_phases(progress, {"": "blocks"})):
        awq_quantize(
            model,
            data,
            AWQ_MODEL_CONFIGS[config["model_type"]],
            group_size=group_size,
            bits=bits,
            embed_group_size=group_size,
            embed_bits=bits,
            n_grid=int(options.get("n_grid", 20)),
        )
    config["quantization"] = quantization_config(model, bits, group_size)
    return model, config


def _gptq(model, config, data, *, bits, group_size, options, progress, **_):
    from mlx_lm.quant.gptq import gptq_quantize

    names = {"Computing Hessians": "hessian batches", "Quantizing": "layers"}
    with _reporting(_phases(progress, names)):
        model, _ = gptq_quantize(
            model,
            data,
            bits,
            group_size,
            fallback_bits=bits,
            fallback_group_size=group_size,
            batch_size=int(options.get("batch_size", 8)),
        )
    config["quantization"] = quantization_config(model, bits, group_size)
    return model, config


def _dynamic(model, config, data, *, bits, group_size, options, progress, **_):
    from mlx_lm.quant.dynamic_quant import estimate_sensitivities, estimate_threshold
    from mlx_lm.utils import quantize_model

    high = int(options["high_bits"])
    target = float(options["target_bpw"])
    with _reporting(_phases(progress, {"Estimating sensitivities": "sensitivity batches"})):
        sens = dict(
            estimate_sensitivities(
                model,
                data,
                bits,
                group_size,
                high,
                group_size,
                batch_size=int(options.get("batch_size", 4)),
            )
        )
        progress("threshold search", 0, 1)
        threshold = estimate_threshold(model, sens, target, bits, group_size, high, group_size)
        threshold = _within_target(model, sens, threshold, target, bits, high, group_size)

        def predicate(path, module):
            if not hasattr(module, "to_quantized"):
                return False
            if sens.get(path, float("-inf")) > threshold:
                return {"bits": high, "group_size": group_size}
            return True

        model, qconfig = quantize_model(
            model, config, group_size=group_size, bits=bits, quant_predicate=predicate
        )
    options["high_layers"] = sum(1 for v in qconfig["quantization"].values() if isinstance(v, dict))
    return model, qconfig


def _within_target(model, sens, threshold, target, bits, high, group_size) -> float:
    """estimate_threshold's bisection ends on a midpoint it never checks, which can leave a
    few layers too many at ``high`` bits (5.55 for a 5.5 target): raise the threshold past the
    least sensitive of them until the predicted bits per weight are within the target."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.utils import get_total_parameters

    total_bits = sum(v.nbytes * 8 for _, v in tree_flatten(model.parameters()))
    per_layer = {}
    for path, m in tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module):
        w = getattr(m, "weight", None)
        if not hasattr(m, "to_quantized") or w is None or w.shape[-1] % group_size:
            continue
        scale = w.dtype.size * 8 * 2 * (w.size // group_size)  # a scale and a bias per group
        per_layer[path] = (w.size, w.nbytes * 8, scale)
        total_bits += w.size * bits + scale - w.nbytes * 8
    params = get_total_parameters(model)
    raised = sorted((v, p) for p, v in sens.items() if v > threshold and p in per_layer)
    bpw = (total_bits + sum(per_layer[p][0] * (high - bits) for _, p in raised)) / params
    while raised and bpw > target + 1e-9:
        value, path = raised.pop(0)
        bpw -= per_layer[path][0] * (high - bits) / params
        threshold = value
    return threshold


# -- DWQ ---------------------------------------------------------------------------------


def _dwq(
    model, config, data, *, bits, group_size, options, progress, on_step, checkpoint_dir, seed
):
    """Distil the rtn-quantized model towards the float one (its scales and biases learn).

    The first batch of samples validates; the rest train, cycled to ``steps`` batches. Every
    ``checkpoint_every`` steps the learned parameters and the samples already trained on go
    to ``checkpoint_dir`` with the optimizer's state (Adam's moments and step, as a
    fine-tune's checkpoint keeps them); a run that finds a matching checkpoint there goes on
    from it, moments included."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.quant.dwq import dwq_quantize
    from mlx_lm.utils import quantize_model

    batch = int(options.get("batch_size", 4))
    rows = np.asarray(data).tolist()
    if len(rows) < 2 * batch:
        raise ValueError(
            f"DWQ needs at least {2 * batch} calibration samples (one batch of {batch} to "
            f"validate, one to train); got {len(rows)}"
        )
    valid = [(r, 0) for r in rows[:batch]]
    pool = rows[batch:]
    steps = int(options.get("steps") or len(pool) // batch)
    train_ids = [i % len(pool) for i in range(steps * batch)]
    length = len(rows[0])
    fingerprint = hashlib.sha256(
        json.dumps([bits, group_size, batch, steps, seed, options.get("learning_rate")]).encode()
        + np.asarray(data).tobytes()
    ).hexdigest()

    teacher = model
    student = copy.deepcopy(teacher)
    with _stdout_to_stderr():
        _, qconfig = quantize_model(student, config, group_size=group_size, bits=bits)

    opt = _CheckpointingAdam(learning_rate=float(options.get("learning_rate", 1e-6)))
    done: list[int] = []  # positions in train_ids already trained on
    state_file = checkpoint_dir / DWQ_STATE if checkpoint_dir else None
    if state_file is not None and state_file.is_file():
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") == fingerprint:
            params = mx.load(str(checkpoint_dir / DWQ_CHECKPOINT))
            student.update(tree_unflatten(list(params.items())))
            done = list(state["done"])
            moments = _restore_moments(opt, student, checkpoint_dir / DWQ_OPTIMIZER)
            print(
                f"mlxd: DWQ resumes from its checkpoint after {len(done) // batch} steps"
                + ("" if moments else " (its optimizer state starts afresh)"),
                file=sys.stderr,
            )
    trained_before = set(done)
    remaining = [p for p in range(len(train_ids)) if p not in trained_before]
    start = len(done) // batch
    every = max(1, int(options.get("checkpoint_every") or 10))
    # iterate_batches sorts samples by length (all equal: order kept), groups them and visits
    # the groups in np.random.permutation order under the seed: the same order here.
    np.random.seed(seed)
    order = np.random.permutation(len(remaining) // batch).tolist() if remaining else []
    losses: list[float] = []
    last_loss = {"value": float("nan")}

    def described(desc: str) -> None:
        if desc.startswith("loss="):
            with contextlib.suppress(ValueError):
                last_loss["value"] = float(desc.split("=", 1)[1])

    def after_step(k: int, new, optimizer) -> None:
        if checkpoint_dir is not None and (k % every == 0 or k == len(order)):
            trained = done + [remaining[j * batch + i] for j in order[:k] for i in range(batch)]
            _save_checkpoint(checkpoint_dir, new, optimizer, trained, fingerprint, start + k)

    def report(desc, n, total):
        if desc == "":  # the training bar (its description is the loss, see described)
            losses.append(last_loss["value"])
            if on_step is not None:
                on_step(start + n, steps, last_loss["value"])

    opt.after_step = after_step
    train = [(rows[batch + train_ids[p]], 0) for p in remaining]
    if len(train) >= batch:
        dtype = next(v.dtype for _, v in tree_flatten(teacher.parameters()))
        with _reporting(report, described):
            dwq_quantize(
                student,
                lambda x, i, split: teacher(x),
                opt,
                train,
                valid,
                batch_size=batch,
                max_seq_length=length,
                seed=seed,
                dtype=dtype,
            )
    options["dwq_result"] = {
        "steps": steps,
        "resumed_at": start,
        "final_loss": losses[-1] if losses else None,
    }
    qconfig["quantization"] = quantization_config(student, bits, group_size)
    return student, qconfig


def _CheckpointingAdam(**kwargs):
    """Adam that calls ``after_step(k, new_parameters, self)`` after its k-th update (DWQ's
    checkpoints: mlx-lm's loop has no hook of its own)."""
    import mlx.optimizers as optim

    class CheckpointingAdam(optim.Adam):
        after_step: Callable[[int, Any, Any], None] | None = None
        count = 0

        def apply_gradients(self, gradients, parameters):
            new = super().apply_gradients(gradients, parameters)
            self.count += 1
            if self.after_step is not None:
                self.after_step(self.count, new, self)
            return new

    return CheckpointingAdam(**kwargs)


def _unfreeze_learned(student) -> None:
    """The parameters DWQ trains, made trainable as mlx-lm's ``dwq_quantize`` makes them
    (affine layers under 8 bits: their scales and biases)."""

    def unfreeze(_, m):
        if hasattr(m, "bits") and hasattr(m, "group_size") and m.mode == "affine" and m.bits < 8:
            m.unfreeze(keys=["scales", "biases"], recurse=False)

    student.apply_to_modules(unfreeze)


def _restore_moments(opt, student, path: Path) -> bool:
    """The optimizer state a checkpoint saved (a fine-tune's restore, on the parameters DWQ
    trains, in the float32 it trains them in); False when there is none or it does not fit."""
    import mlx.core as mx
    from mlx.utils import tree_map

    from .finetune import _restore_optimizer

    _unfreeze_learned(student)
    params = tree_map(lambda x: x.astype(mx.float32), student.trainable_parameters())
    return _restore_optimizer(opt, params, path)


def _save_checkpoint(folder: Path, params, optimizer, done: list[int], fingerprint: str, step: int):
    """The learned parameters and the optimizer's state, then the state file that names
    them (written last: a checkpoint without it is not one)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ("tmp-" + DWQ_CHECKPOINT)
    mx.save_safetensors(str(tmp), dict(tree_flatten(params)))
    tmp.replace(folder / DWQ_CHECKPOINT)
    moments = {k: v for k, v in tree_flatten(optimizer.state) if k != "learning_rate"}
    tmp = folder / ("tmp-" + DWQ_OPTIMIZER)
    mx.save_safetensors(str(tmp), moments)
    tmp.replace(folder / DWQ_OPTIMIZER)
    state = {"fingerprint": fingerprint, "done": done, "step": step}
    tmp_state = folder / ("tmp-" + DWQ_STATE)
    tmp_state.write_text(json.dumps(state))
    tmp_state.replace(folder / DWQ_STATE)
