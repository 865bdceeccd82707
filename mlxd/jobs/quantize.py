"""quantize: affine (2-8 bits), microscaling (mxfp4, nvfp4, mxfp8) or mixed-precision recipes,
by round-to-nearest (rtn, mlx-lm's convert) or a learned method from ``mlx_lm/quant/`` (awq,
gptq, dwq, dynamic) fed with offline calibration text (``jobs/calibration.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxd.jobs.base import (
    FinishContext,
    ModelRefSpec,
    RunContext,
    base_name,
    check_name,
    resolve_input_model,
)
from mlxd.jobs.convert import _parent_synthetic
from mlxd.vocab.choices import (
    BITS,
    DEFAULT_BITS,
    DEFAULT_GROUP_SIZE,
    DEFAULT_QUANT_METHOD,
    DTYPES,
    GROUP_SIZES,
    METHOD_BITS,
    QUANT_METHODS,
    QUANT_MODES,
    QUANT_RECIPES,
    quant_label,
)
from mlxd.vocab.errors import SpecError

# Learned methods' defaults (mlx-lm's scripts use 128-512 samples of 512 tokens: sized for a
# GPU; these keep a CPU run to minutes).
DEFAULT_CALIBRATION_SAMPLES = 32
DEFAULT_CALIBRATION_LENGTH = 256
DEFAULT_BATCH_SIZE = {"gptq": 8, "dwq": 4, "dynamic": 4}
DEFAULT_LEARNING_RATE = 1e-6  # DWQ, mlx-lm's default
DEFAULT_N_GRID = 20  # AWQ's scale and clip grid, mlx-lm's default
LEARNED_OPTIONS = (
    "calibration",
    "calibration_samples",
    "calibration_length",
    "seed",
    "target_bpw",
    "high_bits",
    "steps",
    "learning_rate",
    "batch_size",
    "n_grid",
)
# Which options each method reads (the others are refused, not silently ignored).
METHOD_OPTIONS = {
    "awq": {"n_grid"},
    "gptq": {"batch_size"},
    "dwq": {"steps", "learning_rate", "batch_size"},
    "dynamic": {"target_bpw", "high_bits", "batch_size"},
}
OPTION_FLAGS = {k: "--" + k.replace("_", "-") for k in LEARNED_OPTIONS}

PRODUCES_MODEL = True
QUIET = False
TIME_LIMIT_S = 6 * 3600  # the default of --timeout


def check_explicit_choices(
    mode: str, recipe: str | None, bits: int | None, group_size: int | None
) -> None:
    """Refuse options the mode or recipe would silently override (given ones are not None)."""
    fixed = QUANT_MODES.get(mode)
    if fixed and bits is not None and bits != fixed[0]:
        raise SpecError(f"--mode {mode} is {fixed[0]}-bit; leave out --bits {bits}")
    if fixed and group_size is not None and group_size != fixed[1]:
        raise SpecError(
            f"--mode {mode} uses groups of {fixed[1]}; leave out --group-size {group_size}"
        )
    if recipe and bits is not None:
        raise SpecError(f"--recipe {recipe} sets the bits of each layer; leave out --bits {bits}")


def scale_bits(dtype: str | None) -> int:
    """Bits of one scale (and one bias): float32 off macOS, where the backend default is
    float32 (engine/convert.py default_dtype), else the half-precision width."""
    import sys

    if dtype is None:
        return 16 if sys.platform == "darwin" else 32
    return 32 if dtype == "float32" else 16


def dynamic_bpw_range(bits: int, high_bits: int, group_size: int, dtype: str | None):
    """(least, most) bits per weight dynamic allocation reaches: every layer at ``bits``, or
    every one at ``high_bits`` (each group stores a scale and a bias)."""
    extra = 2 * scale_bits(dtype) / group_size
    return bits + extra, high_bits + extra


def next_bits(bits: int) -> int | None:
    """The next width mx.quantize packs above ``bits`` (dynamic's default high bits)."""
    wider = [b for b in BITS if b > bits]
    return wider[0] if wider else None


@dataclass
class Spec(ModelRefSpec):
    bits: int = DEFAULT_BITS
    group_size: int = DEFAULT_GROUP_SIZE
    mode: str = "affine"
    recipe: str | None = None
    dtype: str | None = None  # of scales and unquantized layers; None: backend default
    name: str | None = None
    method: str = DEFAULT_QUANT_METHOD
    # Learned methods only (None: the method's default, filled in here):
    calibration: str | None = None  # path; None: the text that ships with mlxd
    calibration_sha256: str | None = None  # filled in at submit: the lineage and sweep reuse
    calibration_samples: int | None = None
    calibration_length: int | None = None
    seed: int | None = None
    target_bpw: float | None = None  # dynamic
    high_bits: int | None = None  # dynamic: the sensitive layers' width
    steps: int | None = None  # dwq
    learning_rate: float | None = None  # dwq
    batch_size: int | None = None  # gptq, dwq, dynamic
    n_grid: int | None = None  # awq

    def __post_init__(self):
        if self.method not in QUANT_METHODS:
            raise SpecError(
                f"unknown method '{self.method}'; choose from {', '.join(QUANT_METHODS)}"
            )
        if self.mode not in QUANT_MODES:
            raise SpecError(f"unknown mode '{self.mode}'; choose from {', '.join(QUANT_MODES)}")
        if self.recipe is not None and self.recipe not in QUANT_RECIPES:
            raise SpecError(
                f"unknown recipe '{self.recipe}'; choose from {', '.join(QUANT_RECIPES)}"
            )
        if self.recipe is not None and self.mode != "affine":
            raise SpecError("--recipe works with the affine mode only")
        fixed = QUANT_MODES[self.mode]
        if fixed:
            self.bits, self.group_size = fixed
        else:
            if self.bits not in BITS:
                raise SpecError(f"--bits must be one of {', '.join(map(str, BITS))}")
            if self.group_size not in GROUP_SIZES:
                raise SpecError(f"--group-size must be one of {', '.join(map(str, GROUP_SIZES))}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise SpecError(f"unknown dtype '{self.dtype}'; choose from {', '.join(DTYPES)}")
        self._check_method()
        if self.name is None:
            self.name = f"{base_name(self.model)}-{self.variant}"
        check_name(self.name)

    def _check_method(self) -> None:
        given = [k for k in LEARNED_OPTIONS if getattr(self, k) is not None]
        if self.method == DEFAULT_QUANT_METHOD:
            if "target_bpw" in given:
                raise SpecError("--target-bpw is for --method dynamic (rtn sets --bits)")
            if given:
                raise SpecError(
                    f"{OPTION_FLAGS[given[0]]} is for the learned methods "
                    "(--method awq, gptq, dwq, dynamic); rtn reads no calibration data"
                )
            return
        method = self.method
        if self.mode != "affine" or self.recipe is not None:
            raise SpecError(f"--method {method} makes affine weights; leave out --mode/--recipe")
        own = METHOD_OPTIONS[method]
        others = set().union(*METHOD_OPTIONS.values())
        for key in given:
            if key in others and key not in own:
                if key == "target_bpw":
                    raise SpecError(
                        f"--target-bpw is for --method dynamic; {method} quantizes every "
                        "layer to --bits"
                    )
                raise SpecError(f"{OPTION_FLAGS[key]} is not an option of --method {method}")
        allowed = METHOD_BITS[method]
        if self.bits not in allowed:
            why = {
                "gptq": "mlx-lm's GPTQ packs only 2, 4 and 8 bits",
                "dwq": "DWQ learns the scales of layers below 8 bits",
                "dynamic": "dynamic gives sensitive layers a wider width than --bits",
            }.get(method, "")
            raise SpecError(
                f"--method {method} cannot quantize to {self.bits} bits ({why}); "
                f"choose --bits {', '.join(map(str, allowed))}"
            )
        self.calibration_samples = _positive(
            self.calibration_samples, DEFAULT_CALIBRATION_SAMPLES, "--calibration-samples"
        )
        self.calibration_length = _positive(
            self.calibration_length, DEFAULT_CALIBRATION_LENGTH, "--calibration-length"
        )
        if self.calibration_length < 2:
            raise SpecError("--calibration-length must be at least 2 tokens")
        if self.seed is None:
            self.seed = 0
        if self.calibration is not None:
            from pathlib import Path

            self.calibration = str(Path(self.calibration).expanduser().resolve())
        if self.calibration_sha256 is None:
            from mlxd.jobs.calibration import read_calibration

            self.calibration_sha256 = read_calibration(self.calibration).sha256
        if method in DEFAULT_BATCH_SIZE:
            self.batch_size = _positive(self.batch_size, DEFAULT_BATCH_SIZE[method], "--batch-size")
        if method == "awq":
            self.n_grid = _positive(self.n_grid, DEFAULT_N_GRID, "--n-grid")
        if method == "dwq":
            if self.learning_rate is None:
                self.learning_rate = DEFAULT_LEARNING_RATE
            if not self.learning_rate > 0:
                raise SpecError("--learning-rate must be above 0")
            if self.steps is not None:
                _positive(self.steps, 1, "--steps")
            if self.calibration_samples < 2 * self.batch_size:
                raise SpecError(
                    f"DWQ needs at least {2 * self.batch_size} --calibration-samples (one "
                    f"batch of {self.batch_size} validates, the rest train); got "
                    f"{self.calibration_samples}"
                )
        if method == "dynamic":
            self._check_dynamic()

    def _check_dynamic(self) -> None:
        if self.high_bits is None:
            self.high_bits = next_bits(self.bits)
        if self.high_bits not in BITS or self.high_bits <= self.bits:
            raise SpecError(
                f"--high-bits must be wider than --bits {self.bits}: one of "
                f"{', '.join(str(b) for b in BITS if b > self.bits)}"
            )
        low, high = dynamic_bpw_range(self.bits, self.high_bits, self.group_size, self.dtype)
        if self.target_bpw is None:
            self.target_bpw = round((low + high) / 2, 2)
        if not low - 1e-9 <= self.target_bpw <= high + 1e-9:
            raise SpecError(
                f"--method dynamic cannot reach {self.target_bpw:g} bits per weight with "
                f"--bits {self.bits}, --high-bits {self.high_bits} and groups of "
                f"{self.group_size} ({scale_bits(self.dtype)}-bit scales): it spans "
                f"{low:.2f} to {high:.2f}"
            )

    @property
    def variant(self) -> str:
        """The recipe as a short name: '4bit-g64', 'mxfp4', 'mixed_3_6-g64', 'gptq-4bit-g64',
        'dynamic-5.5bpw'."""
        return quant_label(
            recipe=self.recipe,
            mode=self.mode,
            bits=self.bits,
            group_size=self.group_size,
            method=self.method,
            bits_per_weight=self.target_bpw,
        )

    def options(self) -> dict[str, Any]:
        """The method's own options (what a sweep matches, what lineage keeps)."""
        own = METHOD_OPTIONS.get(self.method, set())
        return {k: getattr(self, k) for k in sorted(own)}


def _positive(value: int | None, default: int, flag: str) -> int:
    value = default if value is None else value
    if not isinstance(value, int) or value < 1:
        raise SpecError(f"{flag} must be a whole number of at least 1")
    return value


def describe(spec: Spec) -> str:
    return f"quantize {spec.model} -> {spec.name}"


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    inputs = resolve_input_model(spec, store)
    if spec.method == "dwq":
        inputs["checkpoint_dir"] = str(dwq_checkpoint_dir(spec))
    return inputs


def dwq_checkpoint_dir(spec: Spec):
    """Where a DWQ job keeps its checkpoint (outside models/.partial, which a failed job
    loses): a retry under the same name goes on from it; success removes it."""
    from mlxd.config import paths

    return paths().home / "checkpoints" / "quantize" / spec.name


def retry_params(store, job) -> tuple[dict[str, Any], str | None]:
    """``jobs retry`` of a DWQ job goes on from its checkpoint (say so); others start over."""
    import json

    params = dict(job.params)
    if params.get("method") != "dwq" or not params.get("name"):
        return params, None
    state = dwq_checkpoint_dir(Spec.from_params(params)) / "dwq-state.json"
    try:
        step = json.loads(state.read_text())["step"]
    except (OSError, ValueError, KeyError):
        return params, "DWQ has no checkpoint: the retry starts it over"
    return params, f"the retry continues DWQ from its checkpoint at step {step}"


# Each method's phases (mlx-lm's progress bars) as parts of the job's progress.
PHASES = {
    "awq": {"blocks": (0.05, 0.95)},
    "gptq": {"hessian batches": (0.05, 0.4), "layers": (0.4, 0.95)},
    "dynamic": {"sensitivity batches": (0.05, 0.6), "threshold search": (0.6, 0.9)},
    "dwq": {"steps": (0.1, 0.95)},
}


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from pathlib import Path

    if spec.method != DEFAULT_QUANT_METHOD:
        return _run_learned(spec, inputs, ctx)
    from mlxd.engine.convert import quantize_model

    ctx.progress(0.1, f"quantizing {inputs['model_name']} to {spec.variant}")
    info = quantize_model(
        Path(inputs["model_path"]),
        ctx.output_dir,
        bits=spec.bits,
        group_size=spec.group_size,
        mode=spec.mode,
        recipe=spec.recipe,
        dtype=spec.dtype,
    )
    ctx.progress(1.0, "done")
    return dict(info)


def _run_learned(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import shutil
    from pathlib import Path

    from mlxd.engine.learned_quant import learned_quantize
    from mlxd.jobs.base import JobFailed
    from mlxd.jobs.calibration import read_calibration

    cal = read_calibration(spec.calibration)
    if cal.sha256 != spec.calibration_sha256:
        raise JobFailed(
            f"calibration data {cal.source} changed since the job was queued (sha256 "
            f"{cal.sha256[:12]}, queued with {spec.calibration_sha256[:12]}); queue it again"
        )
    method = spec.method
    phases = PHASES[method]

    def progress(phase: str, done: int, total: int | None) -> None:
        lo, hi = phases.get(phase, (0.05, 0.95))
        part = done / total if total else 0.0
        of = f"/{total}" if total else ""
        ctx.progress(lo + (hi - lo) * min(part, 1.0), f"{method}: {phase} {done}{of}")

    def on_step(step: int, steps: int, loss: float) -> None:
        lo, hi = phases["steps"]
        ctx.progress(
            lo + (hi - lo) * min(step / steps, 1.0), f"dwq: step {step}/{steps}, loss {loss:.4g}"
        )

    ctx.progress(
        0.02,
        f"{method} on {inputs['model_name']}: {spec.calibration_samples} samples of "
        f"{spec.calibration_length} tokens from {cal.source}",
    )
    checkpoint = inputs.get("checkpoint_dir")
    options = {
        "n_grid": spec.n_grid,
        "batch_size": spec.batch_size,
        "steps": spec.steps,
        "learning_rate": spec.learning_rate,
        "target_bpw": spec.target_bpw,
        "high_bits": spec.high_bits,
    }
    try:
        info = learned_quantize(
            Path(inputs["model_path"]),
            ctx.output_dir,
            method=method,
            bits=spec.bits,
            group_size=spec.group_size,
            texts=cal.texts,
            samples=spec.calibration_samples,
            length=spec.calibration_length,
            seed=spec.seed,
            dtype=spec.dtype,
            options={k: v for k, v in options.items() if v is not None},
            progress=progress,
            on_step=on_step,
            checkpoint_dir=Path(checkpoint) if checkpoint else None,
        )
    except ValueError as e:  # the engine's refusals are one line for the user
        raise JobFailed(str(e)) from None
    if checkpoint:
        shutil.rmtree(checkpoint, ignore_errors=True)
    info["calibration"] = {
        "source": cal.source,
        "sha256": cal.sha256,
        "tokens": info.pop("calibration_tokens"),
        "samples": spec.calibration_samples,
        "length": spec.calibration_length,
        "seed": spec.seed,
    }
    ctx.progress(1.0, f"done: {info['bits_per_weight']:.3f} bits per weight")
    return info


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    learned = spec.method != DEFAULT_QUANT_METHOD
    quant_options = None
    if learned:
        quant_options = {
            "options": spec.options(),
            "calibration": result.get("calibration"),
            **({"dwq": result["dwq"]} if result.get("dwq") else {}),
        }
    mixed = spec.recipe or spec.method == "dynamic"
    fin.register_model(
        name=spec.name,
        source="quantize",
        parent_id=inputs["model_id"],
        synthetic=_parent_synthetic(fin, inputs),
        quant_bits=None if mixed else result.get("bits", spec.bits),
        quant_group_size=result.get("group_size", spec.group_size),
        quant_mode=spec.mode,
        quant_recipe=spec.recipe,
        quant_method=spec.method if learned else None,
        quant_options=quant_options,
        bits_per_weight=result.get("bits_per_weight"),
        num_parameters=result.get("num_parameters"),
        details={
            "recipe": {
                "quantize": {
                    "bits": spec.bits,
                    "group_size": spec.group_size,
                    "mode": spec.mode,
                    "recipe": spec.recipe,
                    "dtype": spec.dtype,
                    **({"method": spec.method, **spec.options()} if learned else {}),
                }
            }
        },
    )
    fin.summary["bits_per_weight"] = result.get("bits_per_weight")
    if learned:
        fin.summary["method"] = spec.method
        fin.summary["calibration_tokens"] = (result.get("calibration") or {}).get("tokens")
        if result.get("method_s") is not None:
            fin.summary["method_seconds"] = round(result["method_s"], 3)
