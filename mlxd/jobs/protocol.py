"""The protocol between a job's child process and the supervisor (``daemon/runner.py``).

The child (``daemon/child.py``) writes one JSON object a line on its protocol pipe:
``{"event": NAME, **fields}``. Every name is an ``Event`` here; the supervisor handles the
runner's own events itself and hands a kind's events to that kind's ``on_event``. It lives
with the job kinds because they emit events too (``RunContext.emit``) and may not import the
daemon.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any


class Event(StrEnum):
    # The runner's own events.
    BEAT = "beat"  # no fields: the child is alive (its lease)
    PROGRESS = "progress"  # fraction, message
    RESULT = "result"  # result: the kind's result dict
    ERROR = "error"  # message: the job's own one-line error
    TIMING = "timing"  # imports_s, idle_s, work_s, spare: where the child's time went
    # A fine-tune's events, recorded by jobs/finetune.py's on_event.
    FINETUNE_STARTED = "finetune_started"  # adapter_id, base_weights_sha256, data_*
    FINETUNE_REPORT = "finetune_report"  # adapter_id, kind (train|valid|test), iteration, ...
    FINETUNE_CHECKPOINT = "finetune_checkpoint"  # adapter_id, iteration, file


# What the supervisor decides on itself; every other event goes to the kind's on_event.
RUNNER_EVENTS = frozenset({Event.BEAT, Event.PROGRESS, Event.RESULT, Event.ERROR, Event.TIMING})
KIND_EVENTS = frozenset(Event) - RUNNER_EVENTS


def encode(event: Event, **fields: Any) -> str:
    """One protocol line (with its newline)."""
    return json.dumps({"event": Event(event).value, **fields}, default=str) + "\n"
