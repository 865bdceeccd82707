"""Job kinds: one module each, found through the KINDS registry.

Every kind module defines:

- ``Spec``: a dataclass of the job's parameters, validated in ``__post_init__`` (pure
  Python, cheap: the CLI builds it to reject bad input before anything is queued);
- ``describe(spec) -> str``: one line for job listings;
- ``prepare(spec, store) -> dict``: in the daemon, resolves catalog references into the
  plain inputs the child needs (paths, ids);
- ``run(spec, inputs, ctx) -> dict``: in the job's child process, does the MLX work through
  ``mlxd.engine`` and returns a JSON-able result;
- ``finish(spec, inputs, result, fin)``: back in the daemon, records the result in the
  catalog inside the transaction that marks the job succeeded.

A kind whose ``PRODUCES_MODEL`` is true gets ``ctx.output_dir`` (a partial folder) and its
folder is renamed into ``MLXD_HOME/models/`` only after the child succeeded.
"""

from __future__ import annotations

import importlib
from types import ModuleType

KINDS: dict[str, str] = {
    "synth": "mlxd.jobs.synth",
    "convert": "mlxd.jobs.convert",
    "quantize": "mlxd.jobs.quantize",
    "bench": "mlxd.jobs.bench",
    "quality": "mlxd.jobs.quality",
    "probe": "mlxd.jobs.probe",
    "import_gguf": "mlxd.jobs.import_gguf",
    "finetune": "mlxd.jobs.finetune",
    "fuse": "mlxd.jobs.fuse",
}


class UnknownJobKind(KeyError):
    pass


def load_kind(name: str) -> ModuleType:
    try:
        return importlib.import_module(KINDS[name])
    except KeyError:
        raise UnknownJobKind(f"unknown job kind '{name}'") from None
