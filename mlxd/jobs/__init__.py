"""Job kinds: one module each, found through the KINDS registry.

Every kind module implements :class:`mlxd.jobs.base.JobKind` (its docstrings say what each
part does and where it runs). To add a kind: write ``mlxd/jobs/<kind>.py``, list it here,
and give it a command in ``mlxd/cli/``; ``tests/test_jobs_interface.py`` checks the module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from mlxd.jobs.base import JobKind

KINDS: dict[str, str] = {
    "synth": "mlxd.jobs.synth",
    "convert": "mlxd.jobs.convert",
    "quantize": "mlxd.jobs.quantize",
    "bench": "mlxd.jobs.bench",
    "bench_sharded": "mlxd.jobs.bench_sharded",
    "quality": "mlxd.jobs.quality",
    "eval": "mlxd.jobs.eval",
    "probe": "mlxd.jobs.probe",
    "import_gguf": "mlxd.jobs.import_gguf",
    "batch": "mlxd.jobs.batch",
    "cache_prompt": "mlxd.jobs.cache_prompt",
    "serve_bench": "mlxd.jobs.serve_bench",
    "bench_pair": "mlxd.jobs.bench_pair",
    "download": "mlxd.jobs.download",
    "push": "mlxd.jobs.push",
    "finetune": "mlxd.jobs.finetune",
    "fuse": "mlxd.jobs.fuse",
}


class UnknownJobKind(KeyError):
    pass


def load_kind(name: str) -> JobKind:
    """The module of job kind ``name`` (imported on first use)."""
    try:
        return cast("JobKind", importlib.import_module(KINDS[name]))
    except KeyError:
        raise UnknownJobKind(f"unknown job kind '{name}'") from None
