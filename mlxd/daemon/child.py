"""The per-job child process: ``python -m mlxd.daemon.child`` with a JSON request on stdin.

It is the only kind of process that imports mlx. It reports progress, then a result or an
error, as JSON lines on its original stdout; anything libraries print goes to stderr, which
the daemon sends to the job's log.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path


def _watch_parent(parent_pid: int) -> None:
    # The job must not outlive the daemon (kill -9 included): the next daemon re-runs it.
    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(0.5)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[-1] if text else ""
    if isinstance(exc, ValueError | FileNotFoundError | PermissionError) and message:
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def main() -> int:
    # Keep the protocol channel private: re-point fd 1 at stderr so stray prints land in the log.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    lock = threading.Lock()

    def send(event: str, **data) -> None:
        with lock:
            proto.write(json.dumps({"event": event, **data}, default=str) + "\n")

    request = json.load(sys.stdin)
    from mlxd.jobs import load_kind
    from mlxd.jobs.base import RunContext

    try:
        kind = load_kind(request["kind"])
        spec = kind.Spec.from_params(request["params"])
        output_dir = Path(request["output_dir"]) if request.get("output_dir") else None
        ctx = RunContext(
            job_id=request["job_id"],
            output_dir=output_dir,
            progress=lambda fraction, message: send(
                "progress", fraction=float(fraction), message=str(message)
            ),
            emit=lambda event, data: send(event, **data),
        )
        result = kind.run(spec, request["inputs"], ctx)
    except BaseException as e:  # noqa: BLE001  everything must reach the daemon as one line
        traceback.print_exc()
        send("error", message=one_line(e))
        proto.flush()
        return 1
    send("result", result=result)
    proto.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
