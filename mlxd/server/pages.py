"""The dashboard: server-rendered pages (Jinja2, autoescaped), their live parts polled from
small endpoints under /ui/, scripts and styles from /static (no CDN, no build step).

Reads go through ``Reader`` and the report functions (``views.py``), submits through
``mlxd.scheduling`` (``forms.py``); who may do what is ``auth.py``'s (roles, the session
cookie, the CSRF token every form carries: ``auth.CanRead``/``CanSubmit`` check it on every
cookie-authenticated POST). Pages are plain ``def`` routes (FastAPI runs them in its thread
pool: a catalog read never holds up the event loop); a POST reads its form, then does its
work in the pool too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from mlxd.server import auth, forms, views

router = APIRouter(include_in_schema=False)  # pages, not the API: not in its OpenAPI
TEMPLATES = Path(__file__).parent / "templates"
# Every page loads only what this server serves: its own scripts, styles and images.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'"
)
NAV = (
    ("/", "Queue"),
    ("/models", "Models"),
    ("/machines", "Machines"),
    ("/submit", "Submit"),
    ("/reports", "Reports"),
)


def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # a model or job name holding <script> is text, everywhere
        trim_blocks=True,
        lstrip_blocks=True,
    )
    from mlxd.vocab import fmt

    env.globals["NAV"] = NAV
    env.filters["size"] = fmt.size
    env.filters["point"] = fmt.point_label
    return env


_ENV = None


def render(
    request: Request, name: str, status: int = 200, *, csp: str = CSP, **context: Any
) -> HTMLResponse:
    global _ENV
    if _ENV is None:
        _ENV = _env()
    principal = context.pop("principal", None)
    html = _ENV.get_template(name).render(
        request=request,
        principal=principal,
        csrf=auth.csrf_token(request),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": csp})


def _paths(request: Request):
    return request.app.state.paths


def _reader(request: Request):
    """This request thread's Reader (the server keeps one per thread)."""
    from mlxd.server.users import thread_reader

    return thread_reader(_paths(request))


# -- login -----------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/"):
    return render(request, "login.html", next=_local(next), error=None)


def _local(target: str) -> str:
    """Only a path on this server (no open redirect)."""
    ok = target.startswith("/") and not target.startswith(("//", "/\\"))
    return target if ok else "/"


@router.post("/login")
async def login(request: Request):
    """The login form: the token becomes the signed session cookie (``auth.start_session``);
    a wrong one shows the page again with the reason."""
    form = await request.form()
    token = form.get("token")
    target = _local(str(form.get("next") or "/"))
    response = RedirectResponse(target, status_code=303)
    try:
        await auth.start_session(request, response, token if isinstance(token, str) else "")
    except HTTPException as e:
        return render(request, "login.html", e.status_code, next=target, error=str(e.detail))
    return response


# -- queue -----------------------------------------------------------------------------------


def _queue_context(request: Request, principal) -> dict[str, Any]:
    q = views.queue(_paths(request), _reader(request))
    may_cancel = {i for i, row in q.rows.items() if auth.may_cancel(principal, row)}
    return {"q": q, "may_cancel": may_cancel, "principal": principal}


@router.get("/", response_class=HTMLResponse)
def queue_page(request: Request, who: auth.CanRead):
    return render(request, "queue.html", **_queue_context(request, who))


@router.get("/ui/queue", response_class=HTMLResponse)
def queue_fragment(request: Request, who: auth.CanRead):
    """The queue's tables alone: what the page swaps in every second."""
    return render(request, "queue_tables.html", **_queue_context(request, who))


# -- jobs ------------------------------------------------------------------------------------


def _job_or_404(reader, job_id: int):
    job = reader.find_job(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: int, who: auth.CanRead):
    reader = _reader(request)
    job = _job_or_404(reader, job_id)
    return render(
        request,
        "job.html",
        principal=who,
        job=job,
        facts=views.job_facts(job),
        params=job.params,
        state=views.job_state(_paths(request), reader, job_id),
        may_cancel=auth.may_cancel(who, job),
    )


@router.get("/ui/jobs/{job_id}")
def job_state(request: Request, job_id: int, _who: auth.CanRead):
    """The job page's live part: status, progress, message, log tail, loss points."""
    reader = _reader(request)
    _job_or_404(reader, job_id)
    return JSONResponse(views.job_state(_paths(request), reader, job_id))


def _acted(answer, fallback: str) -> str:
    """Where to go after the API's cancel or retry answered; its refusal as the error page
    (the CLI's line, the API's status)."""
    import json

    body = json.loads(answer.body)
    if answer.status_code >= 300:
        raise HTTPException(answer.status_code, body.get("error") or "refused")
    return fallback


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: int, who: auth.CanSubmit):
    """The cancel button: the API's cancel (``jobs cancel --no-wait``; a submitter their own
    jobs, an admin any), then back to where it was pressed at once: the page shows the job
    stopping and stopped live, rather than the request waiting for it."""
    from mlxd.server import api

    back = request.query_params.get("next")
    target = _local(back) if back else f"/jobs/{job_id}"
    answer = api.cancel(job_id, request, who, wait=False)
    return RedirectResponse(_acted(answer, target), status_code=303)


@router.post("/jobs/{job_id}/retry")
def retry(request: Request, job_id: int, who: auth.CanSubmit):
    """The retry button: the API's retry (``jobs retry``); on to the new job's page."""
    import json

    from mlxd.server import api

    answer = api.retry(job_id, request, who, None)
    _acted(answer, "/")
    return RedirectResponse(f"/jobs/{json.loads(answer.body)['job_id']}", status_code=303)


# -- models ----------------------------------------------------------------------------------


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, who: auth.CanRead):
    tree = views.model_tree(_reader(request))
    return render(request, "models.html", principal=who, tree=tree)


@router.get("/models/{ref:path}", response_class=HTMLResponse)
def model_page(request: Request, ref: str, who: auth.CanRead, compare: str | None = None):
    from mlxd.catalog.errors import NotFound, QueryError

    reader = _reader(request)
    try:
        page = views.model_page(reader, ref)
    except NotFound as e:
        raise HTTPException(404, str(e)) from None
    cmp, cmp_rows, cmp_error = None, [], None
    if compare:
        try:
            cmp, cmp_rows = views.comparison(reader, page.model.name, compare)
        except (NotFound, QueryError) as e:
            cmp_error = str(e)
    rows = [views.variant_cells(v) for v in page.family.rows] if page.family else []
    return render(
        request,
        "model.html",
        principal=who,
        page=page,
        rows=rows,
        compare=compare,
        cmp=cmp,
        cmp_rows=cmp_rows,
        cmp_error=cmp_error,
    )


# -- machines --------------------------------------------------------------------------------


@router.get("/machines", response_class=HTMLResponse)
def machines_page(request: Request, who: auth.CanRead):
    rows = views.machines(_paths(request), _reader(request))
    return render(request, "machines.html", principal=who, machines=rows)


# -- submit ----------------------------------------------------------------------------------


# Each form field: its label and the hint in the empty box.
LABELS = {
    "model": ("Model", "a catalog name, id or path"),
    "repo": ("Hub repo", "org/name[@revision]"),
    "bits": ("Bits", "e.g. 4"),
    "group_size": ("Group size", "e.g. 64"),
    "mode": ("Mode", ""),
    "recipe": ("Recipe", ""),
    "dtype": ("dtype", ""),
    "name": ("New name", "default: from the model and the recipe"),
    "prompt_tokens": ("Prompt tokens", "e.g. 128,512"),
    "gen_tokens": ("Tokens to generate", "e.g. 64,128"),
    "trials": ("Trials", "default 3"),
    "warmup": ("Warm-up runs", "default 1"),
}


def _submit_context(kind: str) -> dict[str, Any]:
    from mlxd.vocab.choices import BITS, DTYPES, GROUP_SIZES, QUANT_MODES, QUANT_RECIPES

    labels = dict(LABELS)
    labels["bits"] = ("Bits", "one of " + ",".join(map(str, BITS)))
    labels["group_size"] = ("Group size", "one of " + ",".join(map(str, GROUP_SIZES)))

    return {
        "labels": labels,
        "kinds": forms.KINDS,
        "kind": kind,
        "fields": forms.FIELDS[kind],
        "choices": {
            "mode": list(QUANT_MODES),
            "recipe": ["", *QUANT_RECIPES],
            "dtype": ["", *DTYPES],
        },
    }


@router.get("/submit", response_class=HTMLResponse)
def submit_page(request: Request, who: auth.CanRead, kind: str = "quantize", model: str = ""):
    if kind not in forms.KINDS:
        kind = "quantize"
    return render(
        request,
        "submit.html",
        principal=who,
        values={"model": model},
        errors={},
        queued=None,
        **_submit_context(kind),
    )


@router.post("/submit/{kind}", response_class=HTMLResponse)
async def submit(request: Request, kind: str, who: auth.CanSubmit):
    """Queue what a form asks for; a refusal shows the form again, the CLI's one line beside
    the field it is about."""
    if kind not in forms.KINDS:
        raise HTTPException(404, f"no form for '{kind}'")
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    form.pop("csrf_token", None)

    def work():
        try:
            done = forms.submit_form(request, who, kind, form)
        except forms.FieldError as e:
            return render(
                request,
                "submit.html",
                400,
                principal=who,
                values=form,
                errors={e.field or "_form": e.message},
                queued=None,
                **_submit_context(kind),
            )
        return render(
            request,
            "submit.html",
            principal=who,
            values={},
            errors={},
            queued=done,
            **_submit_context(kind),
        )

    return await run_in_threadpool(work)


# -- reports ---------------------------------------------------------------------------------


def _report_files(request: Request, who) -> list[dict]:
    """The API's list of reports (``GET /api/v1/reports``): every file under
    MLXD_HOME/reports, newest first."""
    from mlxd.server import api

    return api.reports(request, who)


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request, who: auth.CanRead):
    files = _report_files(request, who)
    return render(request, "reports.html", principal=who, files=files, shown=None)


# The page that shows an HTML report: the report's own inline styles may apply (in its
# sandboxed frame, which inherits this policy); scripts still only from this server.
REPORT_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


@router.get("/reports/{name:path}", response_class=HTMLResponse)
def report_page(request: Request, name: str, who: auth.CanRead):
    """One report in the page: Markdown as text; HTML in a sandboxed frame of its own text
    (``srcdoc``: the server lets no page of its own be framed). The file is the one the
    API's ``/api/v1/reports/NAME`` serves, which refuses a path out of the folder."""
    import json

    from mlxd.server import api

    answer = api.report_file(name, request, who)
    path = getattr(answer, "path", None)
    if path is None:
        raise HTTPException(answer.status_code, json.loads(answer.body).get("error"))
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    html = str(path).endswith(".html")
    return render(
        request,
        "reports.html",
        csp=REPORT_CSP if html else CSP,
        principal=who,
        files=_report_files(request, who),
        shown=name,
        text=None if html else text,
        html=text if html else None,
    )
