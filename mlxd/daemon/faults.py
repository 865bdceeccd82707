"""Named points where the fault-injection tests kill the daemon (tests/faults/).

``MLXD_FAULT_POINT=after-rename`` makes the daemon SIGKILL itself at that point: the window
between moving a job's folder into models/ and committing its catalog row, which no outside
signal can hit reliably. Unset (always, outside those tests) this costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

from mlxd.vocab.settings import FAULT_POINT


def reach(point: str) -> None:
    if FAULT_POINT.get() == point:
        os.kill(os.getpid(), signal.SIGKILL)
