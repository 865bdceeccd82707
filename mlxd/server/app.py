"""TEMPORARY stand-in for T1's app (the server contract's ``create_app``), so the dashboard
runs before T1's branch is merged; T1's file replaces it."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from mlxd.config import Paths


def create_app(
    paths: Paths, *, public_read: bool = False, secret_key: bytes | None = None
) -> FastAPI:
    from mlxd.server import pages

    app = FastAPI(title="mlxd")
    app.state.paths = paths
    app.state.public_read = public_read
    app.state.secret_key = secret_key or secrets.token_bytes(32)
    from fastapi.responses import RedirectResponse
    from starlette.exceptions import HTTPException

    from mlxd.server import auth

    @app.exception_handler(HTTPException)
    async def _login_first(request, exc):
        from fastapi.responses import JSONResponse

        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        return JSONResponse({"error": str(exc.detail)}, exc.status_code)

    app.include_router(auth.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app
