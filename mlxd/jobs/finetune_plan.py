"""Planning fine-tuning jobs in plain Python: mlx-lm YAML configs, grids, names, sweep tables.

``mlxd finetune`` reads mlx-lm's own LoRA YAML (``mlx_lm.lora --config``): its keys become
Spec fields, explicit options override them. Comma lists on the grid options make one job per
combination: a finetune sweep, whose table orders the runs by validation loss.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.vocab.errors import SpecError

GRID_FIELDS = ("fine_tune_type", "learning_rate", "rank", "num_layers", "iters")
GRID_LABELS = {
    "fine_tune_type": "type",
    "learning_rate": "lr",
    "rank": "r",
    "num_layers": "l",
    "iters": "it",
}
# mlx-lm config keys that map one to one onto Spec fields.
DIRECT_KEYS = (
    "fine_tune_type",
    "optimizer",
    "seed",
    "num_layers",
    "batch_size",
    "iters",
    "val_batches",
    "learning_rate",
    "steps_per_report",
    "steps_per_eval",
    "save_every",
    "test_batches",
    "max_seq_length",
    "grad_checkpoint",
    "grad_accumulation_steps",
    "clear_cache_threshold",
    "lr_schedule",
    "mask_prompt",
)
FEATURE_KEYS = ("text_feature", "chat_feature", "prompt_feature", "completion_feature")
# Keys mlxd decides itself (where adapters go, what runs) or that need the network.
IGNORED_KEYS = ("train", "test", "adapter_path", "report_to", "project_name", "config", "wandb")


def _yaml_loader():
    import yaml

    # mlx-lm's own loader: YAML 1.1 reads 1e-5 as a string; this reads it as a float.
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:
         [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return Loader


@dataclass
class ConfigFile:
    """An mlx-lm LoRA YAML turned into Spec fields, plus what it said about model and data."""

    fields: dict[str, Any]
    model: str | None
    data: str | None
    notes: list[str]


def read_config(path: str | Path) -> ConfigFile:
    """Read an ``mlx_lm.lora --config`` YAML file."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise SpecError(f"config file '{path}' not found")
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), _yaml_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError(f"{p.name}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{p.name} must be a mapping of mlx-lm LoRA options")
    fields: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in raw.items():
        if value is None:
            continue
        if key in DIRECT_KEYS:
            fields[key] = value
        elif key in FEATURE_KEYS:
            fields.setdefault("features", {})[key.removesuffix("_feature")] = value
        elif key == "lora_parameters":
            if not isinstance(value, dict):
                raise SpecError(f"{p.name}: lora_parameters must be a mapping")
            if "alpha" in value and "scale" not in value:
                raise SpecError(
                    f"{p.name}: lora_parameters has 'alpha'; mlx-lm's LoRA config uses 'scale'"
                )
            for k, field in (
                ("rank", "rank"),
                ("scale", "scale"),
                ("dropout", "dropout"),
                ("keys", "lora_keys"),
            ):
                if k in value:
                    fields[field] = value[k]
        elif key == "optimizer_config":
            if not isinstance(value, dict):
                raise SpecError(f"{p.name}: optimizer_config must be a mapping")
            fields["_optimizer_configs"] = value
        elif key == "resume_adapter_file":
            w = Path(str(value)).expanduser()
            if not w.is_absolute() and not w.exists() and (p.parent / w).exists():
                w = p.parent / w
            fields["init_weights"] = str(w)
        elif key == "hf_dataset":
            raise SpecError(
                f"{p.name}: hf_dataset needs the Hugging Face hub; give local data with 'data'"
            )
        elif key == "trust_remote_code":
            if value:
                raise SpecError(f"{p.name}: trust_remote_code is not supported by mlxd")
        elif key in ("model", "data"):
            continue
        elif key in IGNORED_KEYS:
            notes.append(f"'{key}' in {p.name} is decided by mlxd and was ignored")
        else:
            notes.append(f"unknown key '{key}' in {p.name} was ignored")
    data = raw.get("data")
    if data is not None:
        d = Path(str(data)).expanduser()
        # mlx-lm reads it relative to the working directory; a config's neighbour also works.
        if not d.is_absolute() and not d.exists() and (p.parent / d).exists():
            d = p.parent / d
        data = str(d)
    model = raw.get("model")
    return ConfigFile(fields=fields, model=str(model) if model else None, data=data, notes=notes)


def resolve_optimizer_config(fields: dict[str, Any]) -> None:
    """mlx-lm keys optimizer_config by optimizer name; keep the chosen one's."""
    configs = fields.pop("_optimizer_configs", None)
    if configs is None:
        return
    chosen = fields.get("optimizer", "adam")
    config = configs.get(chosen) or {}
    if not isinstance(config, dict):
        raise SpecError(f"optimizer_config.{chosen} must be a mapping")
    fields["optimizer_config"] = config


def parse_grid(text: str | None, what: str, convert) -> list[Any] | None:
    """'1e-4,3e-4' -> [0.0001, 0.0003]; None stays None; each value once, in order."""
    if text is None:
        return None
    values = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(convert(part))
        except ValueError:
            raise SpecError(f"{what} must be a comma-separated list, not '{text}'") from None
    if not values:
        raise SpecError(f"{what} needs at least one value")
    return list(dict.fromkeys(values))


def combinations(grid: dict[str, list[Any] | None]) -> list[dict[str, Any]]:
    """Every combination of the grid's given lists (fields with None are left out)."""
    keys = [k for k in GRID_FIELDS if grid.get(k)]
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def varying(combos: list[dict[str, Any]]) -> list[str]:
    """The grid fields that take more than one value."""
    return [k for k in GRID_FIELDS if len({c.get(k) for c in combos}) > 1]


def grid_suffix(combo: dict[str, Any], keys: list[str]) -> str:
    """'lr0.0001-r8' for the fields that vary: adapter names a person can tell apart."""
    parts = []
    for k in keys:
        v = combo[k]
        parts.append(
            v
            if k == "fine_tune_type"
            else f"{GRID_LABELS[k]}{v:g}"
            if isinstance(v, float)
            else f"{GRID_LABELS[k]}{v}"
        )
    return "-".join(str(p) for p in parts)


def free_name(wanted: str, taken: set[str]) -> str:
    """`wanted`, or wanted-2, wanted-3... whichever is not taken yet."""
    if wanted not in taken:
        return wanted
    n = 2
    while f"{wanted}-{n}" in taken:
        n += 1
    return f"{wanted}-{n}"


def taken_adapter_names(reader) -> set[str]:
    """Names of adapters in the catalog and of finetune jobs still to make theirs (read
    through a ``Reader``)."""
    names = {a.name for a in reader.adapters()}
    for job in reader.jobs(statuses=("queued", "running"), kind="finetune"):
        if job.params.get("name"):
            names.add(job.params["name"])
    return names


@dataclass
class SweepRow:
    """One run of a finetune sweep, for its table."""

    adapter: str
    job_id: int
    job_status: str
    grid: dict[str, Any]
    fine_tune_type: str | None
    learning_rate: float | None
    rank: int | None
    num_layers: int | None
    iters: int | None
    iterations: int | None
    train_loss: float | None
    val_loss: float | None
    test_perplexity: float | None
    tokens_per_s: float | None
    peak_memory_gb: float | None
    wall_time_s: float | None
    fused_model: str | None


def sweep_rows(reader, sweep) -> list[SweepRow]:
    """The sweep's runs, best validation loss first (runs without one last, by job), read
    through a ``Reader``."""
    rows = []
    for run in sweep.runs:
        job = reader.job(run["job"])
        adapter = reader.find_adapter(run["adapter"])
        params = job.params
        wall = None
        if job.started_at and job.finished_at:
            wall = (job.finished_at - job.started_at).total_seconds()
        fused = None
        if run.get("fuse_job"):
            fuse_job = reader.job(run["fuse_job"])
            fused = (
                fuse_job.params.get("name") if fuse_job.status == "succeeded" else fuse_job.status
            )
        rows.append(
            SweepRow(
                adapter=run["adapter"],
                job_id=job.id,
                job_status=job.status,
                grid=run.get("grid", {}),
                fine_tune_type=params.get("fine_tune_type"),
                learning_rate=params.get("learning_rate"),
                rank=params.get("rank") if params.get("fine_tune_type") != "full" else None,
                num_layers=(adapter.params.get("num_layers_used") if adapter else None)
                or params.get("num_layers"),
                iters=params.get("iters"),
                iterations=adapter.iterations if adapter else None,
                train_loss=adapter.final_train_loss if adapter else None,
                val_loss=adapter.final_val_loss if adapter else None,
                test_perplexity=adapter.test_perplexity if adapter else None,
                tokens_per_s=adapter.tokens_per_s if adapter else None,
                peak_memory_gb=adapter.peak_memory_bytes / 1e9
                if adapter and adapter.peak_memory_bytes
                else None,
                wall_time_s=wall,
                fused_model=fused,
            )
        )
    rows.sort(
        key=lambda r: (r.val_loss is None, r.val_loss if r.val_loss is not None else 0, r.job_id)
    )
    return rows
