"""The scheduling room: the one way a job gets into the queue, and the rules on the way.

A plain library API (no Click): :func:`submit`, :func:`submit_graph`, :func:`check_graph`,
:func:`foreground_job` (``api.py``); one exception class per refusal (``errors.py``);
admission, the memory and disk estimates (``admission.py``); placement, which pool a job
goes to and why nobody may run it (``placement.py``); the prerequisite gate and failing
dependents (``gate.py``); the enqueue (``queue.py``). Below the CLI and the daemon, above the
catalog and the job kinds.

The names below are loaded on first use: every command maps this room's errors, and a read
command must not pay for the rest of it.
"""

from __future__ import annotations

from typing import Any

_API = ("Node", "Queued", "check_graph", "foreground_job", "submit", "submit_graph")
_ERRORS = ("BadArgument", "BadPrerequisite", "DoesNotFit", "NoPlace", "QueueFull")
__all__ = [*_API, *_ERRORS, "SchedulingError"]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _API:
        return getattr(importlib.import_module("mlxd.scheduling.api"), name)
    if name in (*_ERRORS, "SchedulingError"):
        return getattr(importlib.import_module("mlxd.scheduling.errors"), name)
    raise AttributeError(f"module 'mlxd.scheduling' has no attribute '{name}'")
