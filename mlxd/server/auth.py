"""TEMPORARY stand-in for T1's auth module (the names of the server contract), so the
dashboard can be built and tested before T1's branch is merged; T1's file replaces it."""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

ROLES = ("viewer", "submitter", "admin")
COOKIE = "mlxd_session"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def _serializer(request: Request):
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(request.app.state.secret_key, salt="mlxd-session")


def authenticate(request: Request, token: str) -> Principal | None:
    path = request.app.state.paths.home / "server-tokens.json"
    users = json.loads(path.read_text()) if path.exists() else {}
    for known, (name, role) in users.items():
        if hmac.compare_digest(known, token):
            return Principal(name, role)
    return None


def _principal(request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return authenticate(request, header[7:].strip())
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            data = _serializer(request).loads(raw, max_age=7 * 86400)
        except Exception:
            return None
        return Principal(data["name"], data["role"])
    return None


def _need(request: Request, role: str) -> Principal:
    p = _principal(request)
    if p is None:
        raise HTTPException(401, "log in first")
    if ROLES.index(p.role) < ROLES.index(role):
        raise HTTPException(403, f"needs the {role} role")
    return p


def can_read(request: Request) -> Principal:
    return _need(request, "viewer")


def can_submit(request: Request) -> Principal:
    return _need(request, "submitter")


def is_admin(request: Request) -> Principal:
    return _need(request, "admin")


def csrf_token(request: Request) -> str:
    raw = request.cookies.get(COOKIE, "")
    return hmac.new(request.app.state.secret_key, raw.encode(), "sha256").hexdigest()


async def check_csrf(request: Request) -> None:
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return
    form = await request.form()
    if not hmac.compare_digest(str(form.get("csrf_token", "")), csrf_token(request)):
        raise HTTPException(403, "missing or wrong CSRF token")


def may_cancel(principal: Principal, job) -> bool:
    if principal.role == "admin":
        return True
    return principal.role == "submitter" and job.submitted_by == principal.name


async def start_session(request: Request, response: Response, token: str) -> Principal:
    await check_csrf(request)
    p = authenticate(request, token)
    if p is None:
        raise HTTPException(401, "that token is not valid")
    value = _serializer(request).dumps({"name": p.name, "role": p.role, "n": secrets.token_hex(4)})
    response.set_cookie(COOKIE, value, httponly=True, samesite="strict")
    return p


def end_session(request: Request, response: Response) -> None:
    response.delete_cookie(COOKIE)


router = APIRouter()


@router.post("/session/end")
async def logout(request: Request) -> Response:
    await check_csrf(request)
    response = RedirectResponse("/login", status_code=303)
    end_session(request, response)
    return response
