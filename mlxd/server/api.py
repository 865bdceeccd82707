"""The JSON API under ``/api/v1/``: every read the CLI has, every submit, cancel and retry.

Each endpoint is a CLI command run for the request's principal (``app.state.commands``, the
CLI's bridge, handed over by ``mlxd serve``): ``GET /api/v1/jobs?status=queued`` answers
what ``mlxd jobs list --status queued --json`` prints, ``POST /api/v1/jobs/quantize`` with
``{"model": "tiny", "bits": 4}`` queues what ``mlxd quantize tiny --bits 4`` queues,
through the scheduling room, submitted by the principal. So the field names, the
validation and the one-line messages are the CLI's, by construction. Errors are
``{"error": "<the CLI's one line>", "exit_code": N}`` with the status :func:`status_for`
gives (the one place a refusal becomes an HTTP status).

``POST /api/v1/cli`` (and ``GET`` for reads) runs a whole command line and streams its
output as JSON lines: the remote CLI (``MLXD_URL``) prints them, so its tables, formats,
exit statuses and ``--wait`` progress are the local ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from mlxd.server.auth import Principal, can_read, can_submit, is_admin, may_cancel

router = APIRouter(prefix="/api/v1", tags=["api"])

Viewer = Annotated[Principal, Depends(can_read)]
Submitter = Annotated[Principal, Depends(can_submit)]
Admin = Annotated[Principal, Depends(is_admin)]

ROLE_OF_ACCESS = {"read": "viewer", "submit": "submitter", "cancel": "submitter", "admin": "admin"}


class Failed(HTTPException):
    """A command that did not run, or ended with an error: its line and exit status."""

    def __init__(self, status: int, message: str, exit_code: int = 1):
        super().__init__(status, message)
        self.exit_code = exit_code

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.detail, "exit_code": self.exit_code}, self.status_code)


def status_for(error: BaseException | None, exit_code: int) -> int:
    """The HTTP status of a command's failure: the scheduling room's refusals by class (a
    full queue 429, no room or no place 409, a bad argument 400), a reference not found
    404, else the CLI's exit status (2, the command line: 400; 1, the state of things:
    409; 124, a wait that ran out: 504)."""
    from mlxd.catalog.errors import NotFound
    from mlxd.scheduling.errors import (
        BadArgument,
        BadPrerequisite,
        DoesNotFit,
        NoPlace,
        QueueFull,
    )

    seen = 0
    cause = error
    while cause is not None and seen < 8:
        if isinstance(cause, QueueFull):
            return 429
        if isinstance(cause, DoesNotFit | NoPlace):
            return 409
        if isinstance(cause, BadArgument | BadPrerequisite):
            return 400
        if isinstance(cause, NotFound):
            return 404
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return {0: 200, 2: 400, 124: 504}.get(exit_code, 409)


def _commands(request: Request):
    commands = getattr(request.app.state, "commands", None)
    if commands is None:
        raise Failed(503, "this server was built without the CLI's commands (start 'mlxd serve')")
    return commands


def _home(request: Request) -> Path:
    return request.app.state.paths.home


def _check(request: Request, argv: list[str]):
    commands = _commands(request)
    try:
        return commands.check(argv, _home(request))
    except commands.Refused as e:
        raise Failed(e.status, str(e), e.exit_code) from None


def _allowed(request: Request, principal: Principal, argv: list[str]) -> list[str]:
    """``argv`` checked for ``principal``: the command's role, and for a cancel or retry
    that they may act on each job (an admin's cancel gets --force: the CLI's own check of
    another user's job is theirs to pass)."""
    resolved = _check(request, argv)
    role = ROLE_OF_ACCESS[resolved.access]
    if not principal.at_least(role):
        raise Failed(403, f"this needs the {role} role; {principal.name} is a {principal.role}")
    if resolved.path in (("jobs", "cancel"), ("jobs", "retry")):
        ids = resolved.params.get("job_ids") or [resolved.params.get("job_id")]
        for job_id in ids:
            _may_act(request, principal, job_id)
        if resolved.path == ("jobs", "cancel") and principal.role == "admin":
            argv = [*argv, "--force"]
    if resolved.path == ("jobs", "logs"):
        _log_inside(request, resolved.params["job_id"])
    return argv


def _may_act(request: Request, principal: Principal, job_id: int) -> None:
    from mlxd.catalog.errors import NotFound
    from mlxd.catalog.read import Reader

    with Reader(request.app.state.paths) as reader:
        try:
            job = reader.job(job_id)
        except NotFound as e:
            raise Failed(404, str(e.args[0]), 2) from None
    if not may_cancel(principal, job):
        raise Failed(
            403,
            f"job {job_id} was submitted by {job.submitted_by}; only they or an admin may "
            "cancel or retry it",
        )


def _log_inside(request: Request, job_id: int) -> None:
    """A job's log file must be inside MLXD_HOME (a row naming ``../`` or a link out is
    refused; a log kept only in the catalog has no file to check)."""
    from mlxd.catalog.errors import NotFound
    from mlxd.catalog.read import Reader

    with Reader(request.app.state.paths) as reader:
        try:
            job = reader.job(job_id)
        except NotFound:
            return  # the command says so, in its words
    if job.log_path:
        commands = _commands(request)
        try:
            commands.check_inside(_home(request), job.log_path, f"job {job_id}'s log")
        except commands.Refused as e:
            raise Failed(e.status, str(e), e.exit_code) from None


def _run(request: Request, principal: Principal, argv: list[str]):
    return _commands(request).run(argv, principal.name)


def _finish(run) -> tuple[str, str]:
    out, err = run.collect()
    if run.exit_code != 0:
        raise Failed(
            status_for(run.error, run.exit_code), run.message or err.strip(), run.exit_code
        )
    return out, err


def _build(request: Request, how: str, *args: Any) -> list[str]:
    """A command line from the bridge's ``how`` (``fields_argv``, ``command_argv``)."""
    commands = _commands(request)
    try:
        return getattr(commands, how)(*args)
    except commands.Refused as e:
        raise Failed(e.status, str(e), e.exit_code) from None


def _queue(request: Request, principal: Principal, argv: list[str]) -> JSONResponse:
    run = _run(request, principal, _allowed(request, principal, argv))
    out, err = _finish(run)
    return _submitted(run, out, err)


def _json_read(request: Request, principal: Principal, path: tuple[str, ...], fields: dict):
    argv = _allowed(request, principal, _build(request, "command_argv", path, fields, ["--json"]))
    out, _ = _finish(_run(request, principal, argv))
    return JSONResponse(json.loads(out) if out.strip() else None)


def _query(request: Request, **path_fields: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key in fields:
            old = fields[key]
            fields[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            fields[key] = value
    fields.update({k: v for k, v in path_fields.items() if v is not None})
    return fields


def _handled(fn):
    """Failed as its JSON (with the exit status) instead of the app's plain error."""
    import functools
    import inspect

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except Failed as e:
                return e.response()

        return awrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Failed as e:
            return e.response()

    return wrapper


# -- reads: each the command's --json ---------------------------------------------------------

QUERY_NOTE = (
    "Query parameters are the command's options by name (``model``, ``since``, "
    "``limit``...; a list option repeated or comma-separated; a flag ``true``)."
)


def _reader_endpoint(
    path: str, command: tuple[str, ...], summary: str, argument: str | None = None
) -> None:
    """A GET endpoint answering ``mlxd COMMAND [ARGUMENT] ... --json``."""
    import inspect

    def endpoint(request: Request, principal: Principal, **path_params: Any):
        fields = _query(request, **path_params)
        try:
            return _json_read(request, principal, command, fields)
        except Failed as e:
            return e.response()

    kind = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("request", kind, annotation=Request),
        inspect.Parameter("principal", kind, annotation=Viewer),
    ]
    if argument:
        params.append(inspect.Parameter(argument, kind, annotation=str))
    endpoint.__signature__ = inspect.Signature(params)  # what FastAPI reads (and documents)
    name = "_".join(command).replace("-", "_")
    endpoint.__name__ = f"read_{name}" + ("_one" if argument else "")
    shown = " ".join(command) + (f" {argument.upper()}" if argument else "")
    endpoint.__doc__ = f"`mlxd {shown} --json`. {QUERY_NOTE}"
    router.add_api_route(path, endpoint, methods=["GET"], summary=summary)


_reader_endpoint("/jobs", ("jobs", "list"), "Jobs (status, kind, limit)")
_reader_endpoint("/models", ("models", "list"), "Models")
_reader_endpoint("/models/{ref}", ("models", "show"), "One model", "ref")
_reader_endpoint("/adapters", ("adapters", "list"), "Adapters")
_reader_endpoint("/adapters/{ref}", ("adapters", "show"), "One adapter", "ref")
_reader_endpoint("/sweeps", ("sweep", "list"), "Sweeps")
_reader_endpoint("/sweeps/{sweep_id}", ("sweep", "show"), "One sweep's table", "sweep_id")
_reader_endpoint("/finetunes", ("finetune", "list"), "Fine-tune sweeps")
_reader_endpoint("/finetunes/{sweep_id}", ("finetune", "show"), "One fine-tune sweep", "sweep_id")
_reader_endpoint("/quality", ("quality", "list"), "Quality runs (model, adapter)")
_reader_endpoint("/evals", ("eval", "list"), "Eval runs: task accuracy (model)")
_reader_endpoint("/evals/{run_id}", ("eval", "show"), "One eval run (items)", "run_id")
_reader_endpoint(
    "/results", ("results",), "Bench results (model, machine, adapter, since, mlx_version, limit)"
)
_reader_endpoint(
    "/recommend/{ref}", ("recommend",), "The variant to use (memory, max_kl...)", "ref"
)
_reader_endpoint("/regressions", ("regressions",), "Regressions (since, model, machine, slower)")
_reader_endpoint("/machines", ("machines", "list"), "Machines on the catalog")


@router.get("/jobs/{job_id}", summary="One job")
@_handled
def read_job(job_id: int, request: Request, principal: Viewer):
    """`mlxd jobs show ID --json`: the job's row, with why it waits when queued."""
    return _json_read(request, principal, ("jobs", "show"), {"job_id": job_id})


@router.get("/compare", summary="B against A (results --compare)")
@_handled
def compare(
    request: Request,
    principal: Viewer,
    a: Annotated[str, Query(description="A: a model, machine or mlx version")],
    b: Annotated[str, Query(description="B: compared against A")],
    by: Annotated[
        str | None, Query(description="model, machine or mlx (default: as the CLI)")
    ] = None,
):
    """`mlxd results --compare A B [--compare-by BY] --json`."""
    fields = {k: v for k, v in _query(request).items() if k not in ("a", "b", "by")}
    fields.update(compare=[a, b], compare_by=by)
    return _json_read(request, principal, ("results",), fields)


FIRST_TEXT_S = 2.0  # a followed log that is still empty after this streams anyway


@router.get("/jobs/{job_id}/logs", summary="A job's log; follow=true streams it until the job ends")
@_handled
def job_logs(
    job_id: int,
    request: Request,
    principal: Viewer,
    follow: Annotated[bool, Query(description="keep streaming until the job ends")] = False,
):
    """`mlxd jobs logs ID [--follow]`, as text/plain, streamed (chunked) as it grows."""
    argv = _allowed(
        request, principal, ["jobs", "logs", str(job_id), *(["--follow"] if follow else [])]
    )
    run = _run(request, principal, argv)
    first = ""
    waited = 0.0
    while waited < FIRST_TEXT_S:  # a log that is not there is an error, said at once
        event = run.next_event(0.1)
        waited += 0.1
        if event is None:
            continue
        name, value = event
        if name == "out":
            first = value
            break
        if name == "exit":
            if run.exit_code != 0:
                run.stop()
                raise Failed(status_for(run.error, run.exit_code), run.message or "", run.exit_code)
            return Response(first, media_type="text/plain; charset=utf-8")

    async def text() -> AsyncIterator[str]:
        yield first
        async for name, value in _events(request, run):
            if name == "out":
                yield value

    return StreamingResponse(text(), media_type="text/plain; charset=utf-8")


@router.get("/me", summary="Who the token is")
def me(principal: Viewer):
    """The principal the request's credentials name: ``name`` and ``role``."""
    return {"name": principal.name, "role": principal.role}


# -- reports: files under MLXD_HOME/reports ---------------------------------------------------


def _reports(request: Request) -> Path:
    return _home(request) / "reports"


@router.get("/reports", summary="The reports and nightly digests on the server")
@_handled
def reports(request: Request, principal: Viewer):
    """Every file under MLXD_HOME/reports: ``name`` (the path to open), ``size``,
    ``modified`` (ISO time), newest first."""
    from datetime import UTC, datetime

    root = _reports(request)
    rows = []
    if root.is_dir():
        for dirpath, _dirs, files in os.walk(root):  # os.walk follows no links
            for name in files:
                p = Path(dirpath) / name
                if p.is_symlink():
                    continue
                st = p.stat()
                rows.append(
                    {
                        "name": p.relative_to(root).as_posix(),
                        "size": st.st_size,
                        "modified": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(),
                    }
                )
    rows.sort(key=lambda r: r["modified"], reverse=True)
    return rows


REPORT_TYPES = {".md": "text/markdown; charset=utf-8", ".html": "text/html; charset=utf-8"}


@router.get("/reports/{name:path}", summary="One report (Markdown or HTML)")
@_handled
def report_file(name: str, request: Request, principal: Viewer):
    """A report file by its ``name`` from ``/reports``; a path out of MLXD_HOME/reports
    (``../``, absolute, a link out) is refused (403)."""
    commands = _commands(request)
    root = _reports(request)
    try:
        target = commands.check_inside(root, str(root / name), "report", name)
    except commands.Refused as e:
        raise Failed(e.status, str(e), e.exit_code) from None
    if not target.is_file():
        raise Failed(404, f"no report named '{name}'", 2)
    kind = REPORT_TYPES.get(target.suffix, "text/plain; charset=utf-8")
    # A report is self-contained: nothing it holds may run scripts or reach out.
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
    return FileResponse(target, media_type=kind, headers={"Content-Security-Policy": csp})


# -- writes -------------------------------------------------------------------------------------


def _submitted(run, out: str, err: str, status: int = 201) -> JSONResponse:
    ids = list(run.job_ids)
    return JSONResponse(
        {
            "job_ids": ids,
            "job_id": ids[-1] if ids else None,
            "output": out.splitlines(),
            "notes": [line.removeprefix("Note: ") for line in err.splitlines() if line.strip()],
        },
        status,
    )


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued job or stop a running one")
@_handled
def cancel(job_id: int, request: Request, principal: Submitter, wait: bool = True):
    """`mlxd jobs cancel ID`: submitters their own jobs, admins any (403 otherwise). A running
    job is waited for until it stopped (up to 30 s), unless `wait=false` (`--no-wait`)."""
    argv = ["jobs", "cancel", str(job_id)] + ([] if wait else ["--no-wait"])
    argv = _allowed(request, principal, argv)
    run = _run(request, principal, argv)
    out, err = _finish(run)
    return _submitted(run, out, err, 200)


@router.post("/jobs/{job_id}/retry", summary="Queue a failed or cancelled job again")
@_handled
def retry(
    job_id: int,
    request: Request,
    principal: Submitter,
    fields: Annotated[dict[str, Any] | None, Body(examples=[{"after": 3}])] = None,
):
    """`mlxd jobs retry ID [--after ID]`: a new job, the same parameters and pool."""
    fields = {**(fields or {}), "job_id": job_id}
    return _queue(request, principal, _build(request, "command_argv", ("jobs", "retry"), fields))


@router.post("/jobs/{kind}", summary="Queue a job: quantize, bench, sweep, pull, convert, ...")
@_handled
def submit(
    kind: str,
    request: Request,
    principal: Submitter,
    fields: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {"model": "tiny", "bits": 4},
                {"model": ["tiny"], "prompt_tokens": [128, 512]},
            ]
        ),
    ],
):
    """The command of ``kind`` (``quantize``: `mlxd quantize`, ``sweep``: `mlxd sweep run`,
    ``quality``: `mlxd quality run`, ``eval``: `mlxd eval run`, ``finetune``: `mlxd finetune run`, ``import-gguf``:
    `mlxd models import-gguf`, and ``convert``, ``bench``, ``pull``, ``push``, ``fuse``,
    ``batch``, ``cache-prompt``) with its options as fields, REF as ``model``. Answers 201
    with ``job_ids`` (every job queued, in order), ``job_id`` (the last: the one to
    follow), the command's ``output`` lines and its ``notes``."""
    return _queue(request, principal, _build(request, "fields_argv", kind, fields))


@router.delete("/models/{ref}", summary="Remove a model (admins)")
@_handled
def remove_model(
    ref: str,
    request: Request,
    principal: Admin,
    files: Annotated[bool, Query(description="also delete its folder")] = False,
    force: Annotated[bool, Query(description="even when other models derive from it")] = False,
):
    """`mlxd models rm REF [--files] [--force]`."""
    argv = ["models", "rm", ref, *(["--files"] if files else []), *(["--force"] if force else [])]
    run = _run(request, principal, _allowed(request, principal, argv))
    out, err = _finish(run)
    return {"output": out.splitlines()}


# -- the remote CLI -----------------------------------------------------------------------------


async def _events(request: Request, run) -> AsyncIterator[tuple[str, Any]]:
    """``run``'s events until its end; a client that went away stops the command (a
    follow ends as Ctrl-C ends it; the job goes on)."""
    from starlette.concurrency import run_in_threadpool

    try:
        while True:
            event = await run_in_threadpool(run.next_event, 1.0)
            if await request.is_disconnected():
                return
            if event is None:
                continue
            yield event
            if event[0] == "exit":
                return
    finally:
        run.stop()


async def _stream(request: Request, run) -> AsyncIterator[bytes]:
    async for name, value in _events(request, run):
        yield (json.dumps({name: value}) + "\n").encode()


def _cli(request: Request, principal: Principal, argv: list[str]) -> Response:
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise Failed(400, "argv must be a list of strings", 2)
    run = _run(request, principal, _allowed(request, principal, argv))
    return StreamingResponse(_stream(request, run), media_type="application/x-ndjson")


@router.post("/cli", summary="Run an mlxd command line (what the remote CLI sends)")
@_handled
def cli(
    request: Request,
    principal: Submitter,
    body: Annotated[
        dict[str, Any], Body(examples=[{"argv": ["quantize", "tiny", "--bits", "4", "--wait"]}])
    ],
):
    """Runs ``argv`` as `mlxd` would on the server, for the principal (submits and cancels
    need a submitter, removals an admin; reads go to ``GET /cli``; commands that need the
    machine they run on are refused). The answer streams JSON lines: ``{"out": TEXT}``,
    ``{"err": TEXT}``, ``{"progress": {"desc", "progress", "message"}}`` while a ``--wait``
    follows a job, and last ``{"exit": {"exit_code", "error"}}``."""
    return _cli(request, principal, body.get("argv"))


@router.get("/cli", summary="Run a read-only mlxd command line (GET: reads only)")
@_handled
def cli_read(
    request: Request,
    principal: Viewer,
    argv: Annotated[list[str], Query(description="the command line, one item per argument")],
):
    """As ``POST /cli``, for reads (so ``--public-read`` serves them without a token)."""
    resolved = _check(request, argv)
    if resolved.access != "read":
        raise Failed(405, "this command changes things: POST it", 2)
    return _cli(request, principal, argv)
