"""The per-job child process: ``python -m mlxd.daemon.child`` with a JSON request on stdin.

It is the only kind of process that imports mlx. It reports progress, then a result or an
error, as JSON lines on its original stdout; anything libraries print goes to stderr, which
the daemon sends to the job's log.

With ``--preload`` it is a spare: it imports mlx, mlx_lm and the job modules first, then
blocks on stdin until the daemon hands it a job (whose request names the log to write to).
A spare serves exactly one job, like any child, so per-process figures stay per job.
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

from mlxd.jobs.protocol import Event, encode


def _watch_parent(parent_pid: int) -> None:
    # The job must not outlive the daemon (kill -9 included): the next daemon re-runs it.
    # An idle spare watches too: it must not linger after its daemon is gone.
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


def _heartbeat(send) -> None:
    from mlxd.daemon.settings import child_heartbeat_s

    interval = child_heartbeat_s()
    while True:
        send(Event.BEAT)
        time.sleep(interval)


def _limit_address_space() -> None:
    # MLXD_JOB_MEMORY_LIMIT_BYTES: a job that asks for more fails instead of taking the machine.
    from mlxd.daemon.settings import memory_limit_bytes

    limit = memory_limit_bytes()
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _preload() -> None:
    """Import everything a job needs before it starts (mlx_lm alone is ~1 s)."""
    from mlxd.engine.preload import warm_imports
    from mlxd.jobs import KINDS, load_kind

    failed = warm_imports()
    for name in KINDS:
        try:
            load_kind(name)
        except Exception as e:  # noqa: BLE001  the job of that kind reports it
            failed[KINDS[name]] = f"{type(e).__name__}: {e}"
    for name, error in failed.items():
        print(f"mlxd child: could not preload {name}: {error}", file=sys.stderr)


def _log_to(path: str) -> None:
    # A spare was started before its job existed: send its stderr (and stray prints) to the
    # job's log from now on.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 2)
    os.dup2(fd, 1)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spare = "--preload" in argv
    began = time.monotonic()
    # Keep the protocol channel private: re-point fd 1 at stderr so stray prints land in the log.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    lock = threading.Lock()

    def send(event: Event, **data) -> None:
        with lock:
            proto.write(encode(event, **data))

    if spare:
        _preload()
    ready = time.monotonic()
    text = sys.stdin.read()
    if not text.strip():
        return 0  # the daemon closed stdin without a job: it is stopping
    request = json.loads(text)
    received = time.monotonic()
    # The job's lease: this process says it is alive; a stopped one (SIGSTOP) falls silent.
    threading.Thread(target=_heartbeat, args=(send,), daemon=True).start()
    if spare and request.get("log_path"):
        _log_to(request["log_path"])
    if not spare:
        _preload()
    _limit_address_space()  # after the imports: the limit is on the job's own allocations
    # The job's own work starts when both the imports and the request are there.
    work_start = time.monotonic()
    from mlxd.jobs import load_kind
    from mlxd.jobs.base import RunContext, fetch_input_models

    def timing() -> None:
        send(
            Event.TIMING,
            imports_s=(ready - began) if spare else (work_start - received),
            idle_s=(received - ready) if spare else 0.0,
            work_s=time.monotonic() - work_start,
            spare=spare,
        )

    try:
        kind = load_kind(request["kind"])
        spec = kind.Spec.from_params(request["params"])
        output_dir = Path(request["output_dir"]) if request.get("output_dir") else None
        ctx = RunContext(
            job_id=request["job_id"],
            output_dir=output_dir,
            progress=lambda fraction, message: send(
                Event.PROGRESS, fraction=float(fraction), message=str(message)
            ),
            emit=lambda event, data: send(event, **data),
        )
        # A model pulled on another host: this host's copy first (a no-op once it is here).
        fetch_input_models(request["inputs"], ctx.progress)
        result = kind.run(spec, request["inputs"], ctx)
    except BaseException as e:  # noqa: BLE001  everything must reach the daemon as one line
        traceback.print_exc()
        timing()
        send(Event.ERROR, message=one_line(e))
        proto.flush()
        return 1
    timing()
    send(Event.RESULT, result=result)
    proto.flush()
    return 0


if __name__ == "__main__":
    code = main()
    # Skip interpreter teardown (~0.3 s with mlx_lm loaded): the result is already sent and
    # the job's files are closed; flush what the log still holds and go.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
