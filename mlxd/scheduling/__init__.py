"""The scheduling room: the one way a job gets into the queue, and the rules on the way.

A plain library API (no Click): :func:`submit`, :func:`submit_graph`, :func:`foreground_job`
(``api.py``); one exception class per refusal (``errors.py``); admission, the memory and
disk estimates (``admission.py``); placement, which pool a job goes to and why nobody may
run it (``placement.py``); the prerequisite gate and failing dependents (``gate.py``); the
enqueue (``queue.py``). Below the CLI and the daemon, above the catalog and the job kinds.
"""

from __future__ import annotations

from mlxd.scheduling.api import (
    Node,
    Queued,
    check_graph,
    foreground_job,
    submit,
    submit_graph,
)
from mlxd.scheduling.errors import (
    BadArgument,
    BadPrerequisite,
    DoesNotFit,
    NoPlace,
    QueueFull,
    SchedulingError,
)

__all__ = [
    "BadArgument",
    "BadPrerequisite",
    "DoesNotFit",
    "NoPlace",
    "Node",
    "QueueFull",
    "Queued",
    "SchedulingError",
    "check_graph",
    "foreground_job",
    "submit",
    "submit_graph",
]
