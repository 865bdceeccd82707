"""Who may do what on the team server: tokens, roles, browser sessions and CSRF.

Credentials are a token in ``Authorization: Bearer TOKEN`` (the remote CLI, scripts) or the
signed session cookie a browser gets once its user typed a token into the login page. The
cookie names the user and a tag of their token's hash, so removing the user (or giving them a
new token) ends their sessions; it is signed with the server's secret (itsdangerous), HttpOnly,
SameSite=Strict, Secure when the server speaks TLS.

Roles go viewer < submitter < admin. The FastAPI dependencies ``can_read``, ``can_submit``
and ``is_admin`` give the request's :class:`Principal`, or answer 401 (no valid credentials)
or 403 (a role too low). A request that changes something (any method but GET/HEAD/OPTIONS)
never runs without credentials, even with --public-read, and one made with the session
cookie must carry the session's CSRF token (form field ``csrf_token`` or header
``X-CSRF-Token``): a token bound to the session (an HMAC of its nonce), which a page from
another site cannot read. Bearer requests need none: a browser never adds that header itself.

Failed logins: an address that sent ``MLXD_SERVER_FAILED_LOGINS`` wrong tokens in a row gets
429 for ``MLXD_SERVER_LOCKOUT_S`` seconds, whatever it sends. Tokens are never logged and never
repeated in an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool

from mlxd.config import Paths
from mlxd.server.users import ANONYMOUS, Principal, authenticate, token_hash, user_named
from mlxd.vocab import settings

__all__ = [
    "ANONYMOUS",
    "CanRead",
    "CanSubmit",
    "IsAdmin",
    "Principal",
    "can_read",
    "can_submit",
    "check_csrf",
    "csrf_token",
    "end_session",
    "is_admin",
    "may_cancel",
    "start_session",
]

SESSION_COOKIE = "mlxd_session"
SESSION_MAX_AGE_S = 14 * 24 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECRET_FILE = "server-secret"
# Paths a browser posts to before it has a session (the login form), exempt from the
# "no write without credentials" rule; they check their own CSRF token.
LOGIN_PATHS = frozenset({"/login", "/session"})


# -- the server's secret ------------------------------------------------------------------------


def load_secret(paths: Paths) -> bytes:
    """The key that signs session cookies: MLXD_HOME/server-secret, made once (0600).

    Kept in the home, not in the catalog: a session is a cookie of one host's server, so
    hosts need not agree on it, and whoever can read the catalog (a PostgreSQL login, a
    backup) cannot forge sessions with it."""
    path = paths.home / SECRET_FILE
    paths.home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(
            f"{path} is readable by others (mode {mode:o}); run 'chmod 600 {path}'"
        )
    text = path.read_text().strip()
    if len(text) < 32:
        raise ValueError(f"{path} is too short to be the server's secret; remove it")
    return text.encode()


# -- failed logins --------------------------------------------------------------------------


class FailedLogins:
    """Wrong tokens in a row per client address; too many refuse the address for a while."""

    def __init__(self, limit: int, lockout_s: float):
        self.limit, self.lockout_s = limit, lockout_s
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}

    def check(self, address: str) -> None:
        with self._lock:
            count, last = self._failures.get(address, (0, 0.0))
            if count < self.limit:
                return
            left = self.lockout_s - (time.monotonic() - last)
            if left <= 0:
                del self._failures[address]
                return
        raise HTTPException(
            429,
            f"too many wrong tokens from {address}; try again in {int(left) + 1} s",
            headers={"Retry-After": str(int(left) + 1)},
        )

    def failed(self, address: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # many addresses: forget the oldest half
                for a, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[:5_000]:
                    del self._failures[a]
            count, _ = self._failures.get(address, (0, 0.0))
            self._failures[address] = (count + 1, time.monotonic())

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


class Auth:
    """The server's authentication state (``app.state.auth``)."""

    def __init__(self, paths: Paths, secret: bytes, *, public_read: bool, secure: bool):
        self.paths = paths
        self.public_read = public_read
        self.secure = secure  # cookies only over TLS
        self.secret = secret
        self.serializer = URLSafeTimedSerializer(secret, salt="mlxd-session")
        self.failed = FailedLogins(
            settings.SERVER_FAILED_LOGINS.get(), settings.SERVER_LOCKOUT_S.get()
        )


def _auth(request: Request) -> Auth:
    return request.app.state.auth


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# -- sessions -------------------------------------------------------------------------------


def _session(request: Request) -> dict[str, Any]:
    """The request's session (signature and age checked): {"n": nonce, "u": user or "", "h":
    tag of the user's token hash}; a new anonymous one when there is none or it is bad."""
    state = request.state
    if getattr(state, "mlxd_session", None) is not None:
        return state.mlxd_session
    auth = _auth(request)
    raw = request.cookies.get(SESSION_COOKIE)
    session = None
    if raw:
        try:
            session = auth.serializer.loads(raw, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            session = None
    if not isinstance(session, dict) or not isinstance(session.get("n"), str):
        session = {"n": secrets.token_urlsafe(16), "u": "", "h": ""}
        _set_cookie_later(request, session)
    state.mlxd_session = session
    return session


def _set_cookie_later(request: Request, session: dict[str, Any] | None) -> None:
    """Ask the app's middleware to set (or, for None, clear) the session cookie on whatever
    response this request gets."""
    request.state.mlxd_set_cookie = _cookie_header(_auth(request), session)


def _cookie_header(auth: Auth, session: dict[str, Any] | None) -> str:
    secure = "; Secure" if auth.secure else ""
    if session is None:
        value, age = "", 0
    else:
        value, age = auth.serializer.dumps(session), SESSION_MAX_AGE_S
    return f"{SESSION_COOKIE}={value}; Max-Age={age}; Path=/; HttpOnly; SameSite=Strict{secure}"


def _tag(digest: str) -> str:
    return digest[:16]


def _session_principal(request: Request) -> Principal | None:
    session = _session(request)
    name = session.get("u")
    if not name:
        return None
    row = user_named(_auth(request).paths, name)
    if row is None or not hmac.compare_digest(_tag(row.token_sha256), session.get("h", "")):
        # The user was removed or given a new token: the session is over.
        _set_cookie_later(request, None)
        return None
    return Principal(row.name, row.role)


def csrf_token(request: Request) -> str:
    """The CSRF token of this request's session (a new session is started for a visitor
    without one): the value for every form's hidden ``csrf_token`` field."""
    nonce = _session(request)["n"]
    return hmac.new(_auth(request).secret, b"csrf:" + nonce.encode(), hashlib.sha256).hexdigest()


async def check_csrf(request: Request) -> None:
    """Dependency: a cookie-authenticated change must carry the session's CSRF token (form
    field or X-CSRF-Token header) and, when the browser says where it comes from, come from
    this server. Bearer requests pass (no browser sends that header on its own)."""
    if request.headers.get("authorization"):
        return
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = origin.split("://", 1)[-1]
        if host != request.headers.get("host"):
            raise HTTPException(403, "a request from another site is refused")
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
    if not given or not hmac.compare_digest(given.encode(), csrf_token(request).encode()):
        raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page")


async def start_session(request: Request, response: Response, token: str) -> Principal:
    """Log a browser in with a token (the login page's POST): the session cookie goes on
    ``response`` (a new nonce: a session fixed before login is not kept). Raises 401 for a
    wrong token, 429 while the address is refused, 403 without the login form's CSRF token."""
    auth = _auth(request)
    address = client_address(request)
    auth.failed.check(address)
    await check_csrf(request)
    principal = await run_in_threadpool(authenticate, auth.paths, token)
    if principal is None:
        auth.failed.failed(address)
        raise HTTPException(401, "that token is not valid")
    auth.failed.succeeded(address)
    session = {"n": secrets.token_urlsafe(16), "u": principal.name, "h": _tag(token_hash(token))}
    request.state.mlxd_session = session
    request.state.mlxd_set_cookie = None
    response.headers.append("set-cookie", _cookie_header(auth, session))
    return principal


def end_session(request: Request, response: Response) -> None:
    """Log out: the cookie is cleared."""
    request.state.mlxd_set_cookie = None
    response.headers.append("set-cookie", _cookie_header(_auth(request), None))


# -- who is asking ----------------------------------------------------------------------------


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise HTTPException(
            401, "the Authorization header must be 'Bearer TOKEN'", {"WWW-Authenticate": "Bearer"}
        )
    return value.strip()


async def _principal(request: Request) -> Principal | None:
    """The request's user from its Bearer token or session cookie; None without either.
    A wrong token is 401 (and counts against the address)."""
    state = request.state
    if getattr(state, "mlxd_checked", False):
        return state.mlxd_principal
    auth = _auth(request)
    token = _bearer(request)
    if token is not None:
        address = client_address(request)
        auth.failed.check(address)
        principal = await run_in_threadpool(authenticate, auth.paths, token)
        if principal is None:
            auth.failed.failed(address)
            raise HTTPException(401, "that token is not valid", {"WWW-Authenticate": "Bearer"})
        auth.failed.succeeded(address)
        state.mlxd_via = "bearer"
    elif SESSION_COOKIE in request.cookies:
        principal = await run_in_threadpool(_session_principal, request)
        state.mlxd_via = "cookie" if principal else None
    else:
        principal = None
        state.mlxd_via = None
    state.mlxd_checked, state.mlxd_principal = True, principal
    return principal


async def _require(request: Request, role: str) -> Principal:
    principal = await _principal(request)
    writes = request.method not in SAFE_METHODS
    if principal is None:
        if role == "viewer" and not writes and _auth(request).public_read:
            return ANONYMOUS
        raise HTTPException(
            401,
            "a token is needed: 'Authorization: Bearer TOKEN', or log in at /login",
            {"WWW-Authenticate": "Bearer"},
        )
    if not principal.at_least(role):
        raise HTTPException(
            403, f"this needs the {role} role; {principal.name} is a {principal.role}"
        )
    if writes and request.state.mlxd_via == "cookie":
        await check_csrf(request)
    return principal


async def can_read(request: Request) -> Principal:
    """Dependency: any user (anyone, with --public-read, for reads)."""
    return await _require(request, "viewer")


async def can_submit(request: Request) -> Principal:
    """Dependency: a submitter or an admin."""
    return await _require(request, "submitter")


async def is_admin(request: Request) -> Principal:
    """Dependency: an admin."""
    return await _require(request, "admin")


# The three as parameter types: ``def f(who: IsAdmin)`` (ruff's B008 refuses Depends() defaults).
CanRead = Annotated[Principal, Depends(can_read)]
CanSubmit = Annotated[Principal, Depends(can_submit)]
IsAdmin = Annotated[Principal, Depends(is_admin)]


def may_cancel(principal: Principal, job_row: Any) -> bool:
    """Admins cancel (and retry) any job; submitters the jobs they submitted."""
    if principal.role == "admin":
        return True
    submitted_by = job_row["submitted_by"] if isinstance(job_row, dict) else job_row.submitted_by
    return principal.role == "submitter" and submitted_by == principal.name


# -- the session's own routes ---------------------------------------------------------------------

router = APIRouter(include_in_schema=False)


def _local_next(target: str | None) -> str:
    """Where to go after logging in: a path on this server only (no open redirect)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


@router.get("/session")
async def session_info(request: Request) -> JSONResponse:
    """Who this request is (and the CSRF token a script needs for cookie-authenticated
    changes)."""
    principal = await _principal(request)
    if principal is None and not _auth(request).public_read:
        return JSONResponse({"user": None, "role": None, "csrf_token": csrf_token(request)})
    principal = principal or ANONYMOUS
    return JSONResponse(
        {"user": principal.name, "role": principal.role, "csrf_token": csrf_token(request)}
    )


@router.post("/session")
async def login(request: Request) -> Response:
    """The login form's target: fields ``token``, ``csrf_token`` and ``next``. 303 to
    ``next`` with the session cookie."""
    form = await request.form()
    token = form.get("token")
    response = RedirectResponse(_local_next(str(form.get("next") or "")), status_code=303)
    await start_session(request, response, token if isinstance(token, str) else "")
    return response


@router.post("/session/end")
async def logout(request: Request) -> Response:
    await check_csrf(request)
    response = RedirectResponse("/login", status_code=303)
    end_session(request, response)
    return response
