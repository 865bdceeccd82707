"""Users over the API (admins only): list, add (the token comes back once), remove."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from mlxd.server import users
from mlxd.server.auth import IsAdmin

router = APIRouter(prefix="/api/v1")


class NewUser(BaseModel):
    name: str
    role: str


@router.get("/users")
async def list_users(request: Request, _: IsAdmin) -> list[dict]:
    """Every user: name, role, when and by whom added (no token, no hash)."""
    rows = await run_in_threadpool(users.list_users, request.app.state.paths)
    return [{**r, "created_at": r["created_at"].isoformat()} for r in rows]


@router.post("/users", status_code=201)
async def add_user(request: Request, body: NewUser, admin: IsAdmin) -> dict:
    """A new user; the answer holds their token, which is shown this once."""
    try:
        token = await run_in_threadpool(
            users.add_user, request.app.state.paths, body.name, body.role, admin.name
        )
    except users.UserError as e:
        status = 409 if "already exists" in str(e) else 400
        raise HTTPException(status, str(e)) from None
    return {"name": body.name, "role": body.role, "token": token}


@router.delete("/users/{name}")
async def remove_user(request: Request, name: str, _: IsAdmin) -> dict:
    """Remove a user: their token and sessions stop working at once."""
    try:
        await run_in_threadpool(users.remove_user, request.app.state.paths, name)
    except users.UserError as e:
        raise HTTPException(404, str(e)) from None
    return {"removed": name}
