"""finetune: LoRA, DoRA or full fine-tuning (QLoRA on a quantized base) into a catalog adapter.

The adapter's catalog row is made when the job starts (``prepare``), so a stopped job leaves
an adapter with its last checkpoint that ``--resume`` continues. While the child trains, every
loss report travels as an event to ``on_event`` in the daemon, which writes a step row (or a
validation/test row) at once: ``jobs show`` and ``--wait`` see the live loss.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxd.jobs.base import (
    FinishContext,
    JobFailed,
    ModelRefSpec,
    RunContext,
    SpecError,
    base_name,
    resolve_input_model,
)
from mlxd.jobs.protocol import Event
from mlxd.jobs.synth import check_name

PRODUCES_MODEL = False
QUIET = True  # measures training speed: nothing else may use the CPU meanwhile
TIME_LIMIT_S = 48 * 3600  # the default of --timeout
FINE_TUNE_TYPES = ("lora", "dora", "full")
OPTIMIZERS = ("adam", "adamw", "muon", "sgd", "adafactor")
DEFAULT_NUM_LAYERS = 16  # mlx-lm's default; fewer when the model has fewer
# Fields that shape the adapter's tensors: a resumed run takes them from the adapter.
STRUCTURE = ("fine_tune_type", "num_layers", "rank", "scale", "dropout", "lora_keys")
OOM_HINT = (
    "try a smaller --batch-size or --max-seq-length, --grad-checkpoint, fewer --num-layers, "
    "or a quantized base (QLoRA)"
)


@dataclass
class Spec(ModelRefSpec):
    data: str = ""
    fine_tune_type: str = "lora"
    iters: int = 1000
    batch_size: int = 4
    learning_rate: float = 1e-5
    num_layers: int | None = None  # None: 16, or all layers of a smaller model; -1: all
    rank: int = 8
    scale: float = 20.0
    dropout: float = 0.0
    lora_keys: list[str] | None = None
    max_seq_length: int = 2048
    mask_prompt: bool = False
    grad_checkpoint: bool = False
    grad_accumulation_steps: int = 1
    optimizer: str = "adam"
    optimizer_config: dict[str, Any] = field(default_factory=dict)
    lr_schedule: dict[str, Any] | None = None
    steps_per_report: int = 10
    steps_per_eval: int = 200
    val_batches: int = 25
    test_batches: int = 500
    save_every: int = 100
    clear_cache_threshold: int = 0
    seed: int = 0
    valid_fraction: float = 0.1  # held out of a single-file data set
    features: dict[str, str] = field(default_factory=dict)  # mlx-lm's *_feature keys
    init_weights: str | None = None  # an adapters file to start from (resume_adapter_file)
    resume: str | None = None  # an adapter REF to continue
    resume_adapter_id: int | None = None
    name: str | None = None  # of the adapter
    retry_of: int | None = None  # 'jobs retry': the job whose adapter this one continues
    sweep_id: int | None = None
    config_file: str | None = None  # the mlx-lm YAML the settings came from
    data_split: str | None = None  # how a single data file was split (stated at submit)

    def __post_init__(self):
        if self.fine_tune_type not in FINE_TUNE_TYPES:
            raise SpecError(
                f"unknown fine-tune type '{self.fine_tune_type}'; choose from "
                f"{', '.join(FINE_TUNE_TYPES)}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise SpecError(
                f"unknown optimizer '{self.optimizer}'; choose from {', '.join(OPTIMIZERS)}"
            )
        for flag, value, low in (
            ("--iters", self.iters, 1),
            ("--batch-size", self.batch_size, 1),
            ("--rank", self.rank, 1),
            ("--max-seq-length", self.max_seq_length, 2),
            ("--grad-accumulation-steps", self.grad_accumulation_steps, 1),
            ("--steps-per-report", self.steps_per_report, 1),
            ("--steps-per-eval", self.steps_per_eval, 1),
            ("--save-every", self.save_every, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SpecError(f"{flag} must be a whole number of at least {low}, not {value!r}")
        if self.num_layers is not None and (self.num_layers == 0 or self.num_layers < -1):
            raise SpecError("--num-layers must be at least 1 (or -1 for all layers)")
        for flag, value in (
            ("--val-batches", self.val_batches),
            ("--test-batches", self.test_batches),
        ):
            if value == 0 or value < -1:
                raise SpecError(f"{flag} must be at least 1 (or -1 for the whole set)")
        if not (isinstance(self.learning_rate, int | float) and 0 < self.learning_rate < 1):
            raise SpecError(f"--learning-rate must be between 0 and 1, not {self.learning_rate!r}")
        if not 0 <= self.dropout < 1:
            raise SpecError("--dropout must be at least 0 and below 1")
        if not (isinstance(self.scale, int | float) and math.isfinite(self.scale)):
            raise SpecError("--scale must be a number")
        if not 0 < self.valid_fraction < 1:
            raise SpecError("the validation fraction must be between 0 and 1")
        if not self.data:
            raise SpecError("--data is needed (a folder with train.jsonl, or a .jsonl/.json file)")
        data = Path(self.data).expanduser()
        if not data.exists():
            raise SpecError(f"data '{self.data}' not found")
        # The daemon runs elsewhere: keep paths it can open whatever its cwd.
        self.data = str(data.resolve())
        if self.init_weights is not None:
            w = Path(self.init_weights).expanduser()
            if not w.is_file():
                raise SpecError(f"adapter weights '{self.init_weights}' not found")
            self.init_weights = str(w.resolve())
        if self.lr_schedule is not None:
            if not isinstance(self.lr_schedule, dict) or "name" not in self.lr_schedule:
                raise SpecError("lr_schedule needs a 'name' (e.g. cosine_decay) and 'arguments'")
        if self.name is None:
            self.name = f"{base_name(self.model)}-{self.fine_tune_type}"
        check_name(self.name)

    def settings(self, num_layers: int):
        from mlxd.engine.finetune import FinetuneSettings

        return FinetuneSettings(
            fine_tune_type=self.fine_tune_type,
            num_layers=num_layers,
            rank=self.rank,
            scale=self.scale,
            dropout=self.dropout,
            lora_keys=self.lora_keys,
            batch_size=self.batch_size,
            iters=self.iters,
            learning_rate=self.learning_rate,
            lr_schedule=self.lr_schedule,
            optimizer=self.optimizer,
            optimizer_config=self.optimizer_config,
            steps_per_report=self.steps_per_report,
            steps_per_eval=self.steps_per_eval,
            val_batches=self.val_batches,
            test_batches=self.test_batches,
            save_every=self.save_every,
            max_seq_length=self.max_seq_length,
            grad_checkpoint=self.grad_checkpoint,
            grad_accumulation_steps=self.grad_accumulation_steps,
            clear_cache_threshold=self.clear_cache_threshold,
            mask_prompt=self.mask_prompt,
            seed=self.seed,
            features=self.features,
        )

    def hyper_parameters(self) -> dict[str, Any]:
        """What the adapter row keeps: every setting that shaped the training."""
        skip = {
            "model",
            "model_id",
            "data",
            "resume",
            "resume_adapter_id",
            "name",
            "retry_of",
            "sweep_id",
            "data_split",
        }
        return {k: v for k, v in self.to_params().items() if k not in skip}


def describe(spec: Spec) -> str:
    from mlxd.reports.fmt import sig

    lr = "schedule" if spec.lr_schedule else sig(spec.learning_rate, 6)
    how = f"resume {spec.resume}" if spec.resume else spec.fine_tune_type
    return f"finetune {spec.model} ({how}, {spec.iters} iters, lr {lr}) -> adapter {spec.name}"


def adapters_dir(store) -> Path:
    return Path(store.paths.home) / "adapters"


def model_layers(model_path: Path) -> int | None:
    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    n = config.get("num_hidden_layers") or config.get("n_layers") or config.get("num_layers")
    return int(n) if isinstance(n, int) else None


def is_quantized(model) -> bool:
    if model.quant_bits is not None or model.quant_mode is not None or model.quant_recipe:
        return True
    try:
        config = json.loads((Path(model.path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(config.get("quantization") or config.get("quantization_config"))


def effective_num_layers(spec: Spec, layers: int | None) -> int:
    if spec.num_layers is None:
        return min(DEFAULT_NUM_LAYERS, layers) if layers else DEFAULT_NUM_LAYERS
    if spec.num_layers == -1 and layers:
        return layers
    return spec.num_layers


def check_against_model(spec: Spec, model) -> None:
    """What the base model decides: layer count, and no full fine-tuning of quantized weights."""
    layers = model_layers(Path(model.path))
    n = effective_num_layers(spec, layers)
    if layers is not None and n > layers:
        raise SpecError(f"--num-layers {n} is more than the {layers} layers of '{model.name}'")
    if spec.fine_tune_type == "full" and is_quantized(model):
        raise SpecError(
            f"'{model.name}' is quantized: full fine-tuning needs unquantized weights; "
            "use --type lora or dora (QLoRA) or fine-tune its unquantized base"
        )


def prepare(spec: Spec, store, job=None) -> dict[str, Any]:
    from mlxd.catalog.models import Model

    job_id = job.id if job is not None else None
    # The attempt as claimed: its writes hold only while it still holds the job (one woken
    # after another host took it back changes no adapter and forgets no step row).
    fence = job if job is not None and job.status == "running" else None

    inputs = resolve_input_model(spec, store)
    with store.read() as s:
        model = s.get(Model, inputs["model_id"])
    try:
        check_against_model(spec, model)
    except SpecError as e:
        raise JobFailed(str(e)) from None
    inputs["quantized"] = is_quantized(model)
    inputs["num_layers"] = effective_num_layers(spec, model_layers(Path(model.path)))
    notes: list[str] = []
    if spec.resume is not None or spec.resume_adapter_id is not None:
        adapter, start, init = _resume(store, spec, model, inputs, notes, job_id, fence)
    else:
        adapter = _adapter_of_job(store, spec, job_id)
        if adapter is not None:
            start, init = _again(store, spec, adapter, inputs, notes, job_id, fence)
        else:
            adapter = _new_adapter(store, spec, model, inputs, job_id, fence)
            start, init = 0, spec.init_weights
    # Steps past the checkpoint are trained again: their old rows go, the counters go on.
    start_tokens = store.forget_finetune_rows_after(adapter.id, start, fence=fence)
    inputs.update(
        adapter_id=adapter.id,
        adapter_name=adapter.name,
        adapter_path=str(adapters_dir(store) / adapter.name),
        start_iteration=start,
        start_tokens=start_tokens,
        init_weights=init,
        notes=notes,
    )
    return inputs


def _resume(store, spec: Spec, model, inputs: dict[str, Any], notes: list[str], job_id, fence):
    """--resume ADAPTER: train it on from its checkpoint; (adapter, start, init weights)."""
    ref = spec.resume_adapter_id if spec.resume_adapter_id is not None else spec.resume
    adapter = store.resolve_adapter(ref)
    check_adapter_base(adapter, model)
    claim(store, adapter, job_id, fence)
    start, init = bring_home(store, adapter, notes, fence, start_over=False)
    if spec.iters <= start:
        raise JobFailed(
            f"adapter '{adapter.name}' already has {start} iterations; pass --iters above "
            f"{start} to continue it"
        )
    # The adapter's tensors fix its shape: take it from the adapter, not from the flags.
    inputs["structure"] = {k: adapter.params.get(k) for k in STRUCTURE if k in adapter.params}
    inputs["num_layers"] = adapter.params.get("num_layers_used", inputs["num_layers"])
    store.update_adapter(
        adapter.id,
        fence=fence,
        job_id=job_id,
        status="training",
        target_iterations=spec.iters,
        details=_with_resume(adapter, spec, job_id, start),
    )
    return adapter, start, init


def _again(store, spec: Spec, adapter, inputs: dict[str, Any], notes: list[str], job_id, fence):
    """The same job again (the daemon restarted mid-run, another host took it back, or
    'jobs retry'): go on from its checkpoint, if this host can read one; (start, init)."""
    claim(store, adapter, job_id, fence)
    start, init = 0, spec.init_weights
    if adapter.iterations > 0:
        start, init = bring_home(store, adapter, notes, fence, start_over=True)
        inputs["structure"] = {k: adapter.params.get(k) for k in STRUCTURE if k in adapter.params}
    else:
        bring_home(store, adapter, notes, fence, start_over=True)
    store.update_adapter(adapter.id, fence=fence, job_id=job_id, status="training")
    return start, init


def _new_adapter(store, spec: Spec, model, inputs: dict[str, Any], job_id, fence):
    """A new adapter's row (its folder cleared of anything an adapter whose row is gone
    left)."""
    from mlxd.catalog.models import Adapter

    if store.find_adapter(spec.name) is not None:
        raise JobFailed(
            f"an adapter named '{spec.name}' already exists; pass --name or remove it "
            f"with 'mlxd adapters rm {spec.name}'"
        )
    path = adapters_dir(store) / spec.name
    if path.exists():
        import shutil

        shutil.rmtree(path)  # left by an adapter whose row is gone
    params = spec.hyper_parameters()
    params["num_layers_used"] = inputs["num_layers"]
    with store.running_write(fence) as s:
        adapter = Adapter(
            name=spec.name,
            path=str(path),
            fine_tune_type=spec.fine_tune_type,
            base_model_id=model.id,
            base_model_name=model.name,
            base_quantized=inputs["quantized"],
            data_path=spec.data,
            job_id=job_id,
            sweep_id=spec.sweep_id,
            target_iterations=spec.iters,
            params=params,
        )
        s.add(adapter)
        s.flush()
    return adapter


def retry_params(store, job) -> tuple[dict[str, Any], str | None]:
    """``jobs retry`` of a fine-tune: the new job continues the adapter the old one made
    from its last checkpoint (or starts it over when it has none), instead of failing on
    the name it took. (The parameters, and a note saying which.)"""
    params = dict(job.params)
    name = params.get("name")
    adapter_id = params.get("resume_adapter_id")
    adapter = store.find_adapter(adapter_id if adapter_id is not None else name) if name else None
    if adapter is None:
        return params, None  # nothing made yet: it starts afresh
    busy = trainers(store, adapter)
    if busy:
        raise SpecError(
            f"adapter '{adapter.name}' is being trained by job {busy[-1]}; retry after it ends"
        )
    if adapter_id is None:
        owners = {job.id, params.get("retry_of")} - {None}
        if adapter.job_id not in owners:
            raise SpecError(
                f"adapter '{adapter.name}' was made by job {adapter.job_id}, not by job "
                f"{job.id}; continue it with 'mlxd finetune --resume {adapter.name}' or "
                "retry under another name"
            )
        params["retry_of"] = adapter.job_id
    if adapter.iterations > 0:
        return params, (
            f"the retry continues adapter '{adapter.name}' from its checkpoint at iteration "
            f"{adapter.iterations}"
        )
    return params, f"adapter '{adapter.name}' has no checkpoint: the retry starts it over"


def writes_to(inputs: dict[str, Any]) -> Path:
    """Where the job writes (checkpoints): the daemon watches the free space there."""
    return Path(inputs["adapter_path"])


def _adapter_of_job(store, spec: Spec, job_id: int | None):
    if job_id is None:
        return None
    found = store.find_adapter(spec.name)
    owners = {job_id, spec.retry_of} - {None}
    return found if found is not None and found.job_id in owners else None


def claim(store, adapter, job_id: int | None, fence=None) -> None:
    """One job trains an adapter at a time: refuse when another queued or running job does."""
    if job_id is None:
        return
    owner = store.claim_adapter(adapter.id, job_id, fence=fence)
    if owner is not None:
        raise JobFailed(
            f"adapter '{adapter.name}' is being trained by job {owner}; one job trains an "
            f"adapter at a time (queue this one with --after {owner})"
        )


def trainers(store, adapter) -> list[int]:
    """The queued or running jobs that train ``adapter`` (its owner, queued resumes and
    retries of it)."""
    out = []
    for j in store.list_jobs(["queued", "running"]):
        if j.kind != "finetune":
            continue
        p = j.params or {}
        retried = p.get("retry_of") is not None and p.get("name") == adapter.name
        if j.id == adapter.job_id or p.get("resume_adapter_id") == adapter.id or retried:
            out.append(j.id)
    return sorted(out)


def bring_home(
    store, adapter, notes: list[str], fence=None, *, start_over: bool
) -> tuple[int, str | None]:
    """(iteration, weights file) to go on from, in this host's adapters folder.

    An adapter trained under another MLXD_HOME (another host took the job back, or the
    resume runs elsewhere) is never written there: its latest checkpoint is copied here when
    this host can read it; otherwise a job taken back starts over (``start_over``, said in
    ``notes``) and a resume is refused, naming where the files are (resume_point).
    Folders of the same path on two machines look the same: what counts is whether the
    checkpoint is there."""
    import shutil

    here = adapters_dir(store) / adapter.name
    there = Path(adapter.path)
    if not start_over and adapter.iterations <= 0:
        resume_point(adapter)  # refuses: nothing to resume
    found = None
    if adapter.iterations > 0:
        try:
            found = resume_point(adapter)
        except JobFailed:
            if start_over:
                pass
            elif _same_folder(here, there):
                raise
            else:
                raise JobFailed(
                    f"adapter '{adapter.name}' has its checkpoints in {there}"
                    f"{_host_of(store, adapter)}, which this host cannot read; run the resume "
                    "there"
                ) from None
    same = _same_folder(here, there)
    if same and found is not None:
        return found
    host = "" if same else _host_of(store, adapter)
    if not same:
        if here.exists():
            shutil.rmtree(here)  # an older copy: the catalog row decides what is current
        here.mkdir(parents=True)
    if found is not None:
        iteration, weights = found
        for f in (
            Path(weights),
            there / f"{iteration:07d}_optimizer.safetensors",
            there / "adapter_config.json",
        ):
            if f.is_file():
                shutil.copy2(f, here / f.name)
        notes.append(
            f"copied the checkpoint at iteration {iteration} of adapter '{adapter.name}' from "
            f"{there}{host} to {here}"
        )
        store.update_adapter(adapter.id, fence=fence, path=str(here))
        return iteration, str(here / Path(weights).name)
    if adapter.iterations > 0:
        notes.append(
            f"the checkpoint of adapter '{adapter.name}' (iteration {adapter.iterations}) is "
            f"not in {there}{host} as this host sees it: training starts over from "
            f"iteration 0 in {here}"
        )
    store.update_adapter(adapter.id, fence=fence, path=str(here), iterations=0)
    return 0, None


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _host_of(store, adapter) -> str:
    from mlxd.catalog.store import NotFound

    if adapter.job_id is None:
        return ""
    try:
        host = store.get_job(adapter.job_id).host
    except NotFound:
        return ""
    return f" on host {host}" if host else ""


# What adapters show lists per run, the first run's from ``params`` and each resume's here.
RUN_SETTINGS = (
    "iters",
    "batch_size",
    "learning_rate",
    "lr_schedule",
    "optimizer",
    "max_seq_length",
    "grad_accumulation_steps",
    "seed",
)


def _with_resume(adapter, spec: Spec, job_id: int | None, start: int) -> dict[str, Any]:
    """The adapter's details with this resume's own settings recorded (once per job)."""
    details = dict(adapter.details or {})
    resumes = [r for r in details.get("resumes") or [] if r.get("job_id") != job_id]
    params = spec.to_params()
    resumes.append(
        {
            "job_id": job_id,
            "from_iteration": start,
            **{k: params.get(k) for k in RUN_SETTINGS},
        }
    )
    details["resumes"] = resumes
    return details


def checkpoint_file(folder: Path, iteration: int) -> Path:
    """mlx-lm's checkpoint naming (mlxd.engine.finetune writes them)."""
    return Path(folder) / f"{iteration:07d}_adapters.safetensors"


def resume_point(adapter) -> tuple[int, str | None]:
    """(iteration, weights file) an adapter continues from."""
    if adapter.iterations <= 0:
        raise JobFailed(f"adapter '{adapter.name}' has no checkpoint yet; nothing to resume")
    folder = Path(adapter.path)
    f = checkpoint_file(folder, adapter.iterations)
    if not f.is_file():
        f = folder / "adapters.safetensors"
    if not f.is_file():
        raise JobFailed(f"adapter '{adapter.name}' has no weights in {folder}")
    return adapter.iterations, str(f)


def check_adapter_base(adapter, model) -> None:
    """Refuse an adapter on a model other than its base, naming both."""
    if adapter.base_model_id == model.id:
        return
    if adapter.base_weights_sha256 and adapter.base_weights_sha256 == weights_sha256(
        Path(model.path)
    ):
        return  # the same weights registered under another name
    raise JobFailed(
        f"adapter '{adapter.name}' was trained on '{adapter.base_model_name}', not on "
        f"'{model.name}'; apply it to '{adapter.base_model_name}'"
    )


def weights_sha256(model_path: Path) -> str:
    """A content hash of a model's weights (its safetensors files, in name order)."""
    digest = hashlib.sha256()
    for f in sorted(Path(model_path).glob("*.safetensors")):
        digest.update(f.name.encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def run(spec: Spec, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    import signal
    import sys
    import threading

    from mlxd.engine.finetune import TrainingStopped, finetune
    from mlxd.jobs.finetune_data import Features, check_batches, load_training_data

    for note in inputs.get("notes") or []:
        print(f"Note: {note}", file=sys.stderr, flush=True)
    features = Features(**spec.features)
    data = load_training_data(
        spec.data, features=features, seed=spec.seed, valid_fraction=spec.valid_fraction
    )
    check_batches(data, spec.batch_size)
    model_path = Path(inputs["model_path"])
    adapter_id = inputs["adapter_id"]
    ctx.progress(0.0, f"hashing {inputs['model_name']}'s weights")
    _announce(ctx, adapter_id, model_path, data)
    for key, value in (inputs.get("structure") or {}).items():
        setattr(spec, key, value)
    settings = spec.settings(inputs["num_layers"])

    # Cancel (SIGTERM from the daemon) ends training at the next step, after a checkpoint.
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    latest: dict[str, Any] = {}

    def on_report(report: dict[str, Any]) -> None:
        ctx.emit(Event.FINETUNE_REPORT, {"adapter_id": adapter_id, **report})
        it = report["iteration"]
        ctx.progress(min(it / spec.iters, 1.0), _progress_line(latest, report, spec.iters))

    def on_checkpoint(iteration: int, path: Path) -> None:
        ctx.emit(
            Event.FINETUNE_CHECKPOINT,
            {"adapter_id": adapter_id, "iteration": iteration, "file": path.name},
        )

    start = inputs["start_iteration"]
    how = f"training {settings.fine_tune_type} from iteration {start}"
    if inputs.get("notes"):
        how += f" ({'; '.join(inputs['notes'])})"
    ctx.progress(start / spec.iters, how)
    try:
        result = finetune(
            model_path,
            Path(inputs["adapter_path"]),
            data.splits,
            settings,
            start_iteration=start,
            start_tokens=inputs.get("start_tokens") or 0,
            init_weights=Path(inputs["init_weights"]) if inputs.get("init_weights") else None,
            on_report=on_report,
            on_checkpoint=on_checkpoint,
            should_stop=stop.is_set,
        )
    except TrainingStopped as e:
        raise JobFailed(f"stopped at iteration {e.iteration}; its checkpoint is kept") from None
    except (RuntimeError, MemoryError) as e:
        if is_out_of_memory(e):
            raise JobFailed(f"out of memory while training ({one_line(e)}); {OOM_HINT}") from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    result["data_split"] = data.split_note
    result["data_counts"] = data.counts()
    return result


def _announce(ctx: RunContext, adapter_id: int, model_path: Path, data) -> None:
    """The adapter's provenance, for on_event: the base's weights and the data."""
    ctx.emit(
        Event.FINETUNE_STARTED,
        {
            "adapter_id": adapter_id,
            "base_weights_sha256": weights_sha256(model_path),
            "data_sha256": data.sha256,
            "data_format": data.format,
            "data_counts": data.counts(),
            "data_split": data.split_note,
        },
    )


def _progress_line(latest: dict[str, Any], report: dict[str, Any], iters: int) -> str:
    """ "iter 3/10, train loss 2.345, val loss 2.400, 812 tok/s": the newest of each figure
    (``latest``, updated with ``report``)."""
    if report["kind"] == "train":
        latest["train"] = report["train_loss"]
        latest["tps"] = report["tokens_per_s"]
    else:
        latest[report["kind"]] = report["loss"]
    parts = [f"iter {report['iteration']}/{iters}"]
    if "train" in latest:
        parts.append(f"train loss {latest['train']:.3f}")
    if "valid" in latest:
        parts.append(f"val loss {latest['valid']:.3f}")
    if "test" in latest:
        parts.append(f"test loss {latest['test']:.3f}")
    if "tps" in latest:
        parts.append(f"{latest['tps']:.0f} tok/s")
    return ", ".join(parts)


def is_out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, MemoryError) or any(
        s in text for s in ("out of memory", "insufficient memory", "unable to allocate", "malloc")
    )


def one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[-1][:200] if lines else type(e).__name__


def on_event(store, job, event: dict[str, Any]) -> None:
    """In the daemon, as the child reports: step and evaluation rows, checkpoints. Each
    write is fenced by ``job`` (the running attempt): a host woken after its fine-tune was
    taken back records nothing (FencedOut, and the runner discards the attempt)."""
    from mlxd.catalog.models import FinetuneEval, FinetuneStep

    name = Event(event["event"])
    adapter_id = event.get("adapter_id")
    if adapter_id is None:
        return
    if name is Event.FINETUNE_REPORT:
        if event["kind"] == "train":
            row = FinetuneStep(
                adapter_id=adapter_id,
                job_id=job.id,
                **{k: event[k] for k in FINETUNE_STEP_FIELDS},
            )
        else:
            row = FinetuneEval(
                adapter_id=adapter_id,
                job_id=job.id,
                split=event["kind"],
                iteration=event["iteration"],
                loss=event["loss"],
                perplexity=_finite(event["perplexity"]),
                eval_time_s=event.get("eval_time_s"),
            )
        store.record_finetune_row(row, fence=job)
    elif name is Event.FINETUNE_CHECKPOINT:
        store.update_adapter(adapter_id, fence=job, iterations=int(event["iteration"]))
    elif name is Event.FINETUNE_STARTED:
        adapter = store.resolve_adapter(adapter_id)
        details = dict(adapter.details or {})
        details.update(
            data_format=event.get("data_format"),
            data_counts=event.get("data_counts"),
            data_split=event.get("data_split"),
        )
        store.update_adapter(
            adapter_id,
            fence=job,
            base_weights_sha256=event.get("base_weights_sha256"),
            data_sha256=event.get("data_sha256"),
            details=details,
        )


FINETUNE_STEP_FIELDS = (
    "iteration",
    "train_loss",
    "learning_rate",
    "iterations_per_s",
    "tokens_per_s",
    "trained_tokens",
    "peak_memory_bytes",
)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 1e308


def finish(spec: Spec, inputs: dict[str, Any], result: dict[str, Any], fin: FinishContext) -> None:
    adapter_id = inputs["adapter_id"]
    adapter = fin.store.resolve_adapter(adapter_id, session=fin.session)
    details = dict(adapter.details or {})
    details.update(
        trained_tokens=result.get("trained_tokens"),
        resumed_from=result.get("start_iteration") or None,
        data_split=result.get("data_split") or details.get("data_split"),
        data_counts=result.get("data_counts") or details.get("data_counts"),
        first_train_loss=result.get("first_train_loss"),
    )
    fin.store.update_adapter(
        adapter_id,
        session=fin.session,
        status="ready",
        job_id=fin.job.id,
        iterations=result["iterations"],
        target_iterations=result["iterations"],
        trainable_parameters=result.get("trainable_parameters"),
        final_train_loss=result.get("final_train_loss"),
        final_val_loss=result.get("final_val_loss"),
        test_loss=result.get("test_loss"),
        test_perplexity=_finite(result["test_perplexity"])
        if result.get("test_perplexity") is not None
        else None,
        tokens_per_s=result.get("tokens_per_s"),
        iterations_per_s=result.get("iterations_per_s"),
        peak_memory_bytes=result.get("peak_memory_bytes"),
        train_time_s=result.get("train_time_s"),
        details=details,
    )
    fin.summary.update(
        adapter=inputs["adapter_name"],
        iterations=result["iterations"],
        train_loss=_short(result.get("final_train_loss")),
        val_loss=_short(result.get("final_val_loss")),
        test_perplexity=_short(result.get("test_perplexity")),
    )


def _short(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")
