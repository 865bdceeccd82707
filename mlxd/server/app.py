"""The team server's ASGI app: the API, the dashboard, metrics, and the guard around them.

FastAPI on Starlette, served by uvicorn (``mlxd serve``, see ``run.py``): typed request
bodies and OpenAPI for the JSON API, plain Starlette underneath for the pages and
server-sent events, Jinja2 for templates, and no build step or CDN anywhere.

The guard (:class:`Guard`, pure ASGI, outside every route) does what no route may forget:
a request body over ``MLXD_SERVER_MAX_BODY_BYTES`` gets 413 before it is read (by its
Content-Length, or as it arrives when chunked); a change (POST, PUT, PATCH, DELETE) without
any credentials gets 401 before routing (the routes' dependencies then check the credentials
and the role: ``auth.py``); and the session cookie a request's handling asked for is set on
its response.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlxd import __version__
from mlxd.config import Paths
from mlxd.server import auth
from mlxd.vocab import settings

STATIC = Path(__file__).resolve().parent / "static"
# The other parts of the server: module -> its router (each optional while it is built).
ROUTERS = ("mlxd.server.api", "mlxd.server.pages", "mlxd.server.metrics")


# On every answer: no framing by another site (a form clicked through a frame), no content
# sniffing, no URL leaked to other sites in Referer.
SECURITY_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class TooLarge(StarletteHTTPException):
    """A request body past the limit, found while it arrives."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


class Guard:
    """Body size limit, no change without credentials, and the session cookie (see above)."""

    def __init__(self, app, *, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                return await _error(send, 400, "bad Content-Length header")
            if too_big:
                return await _error(send, 413, TooLarge(self.max_body).detail, close=True)
        if (
            scope["method"] not in auth.SAFE_METHODS
            and scope["path"] not in auth.LOGIN_PATHS
            and b"authorization" not in headers
            and auth.SESSION_COOKIE.encode() not in headers.get(b"cookie", b"")
        ):
            return await _error(
                send,
                401,
                "a token is needed: 'Authorization: Bearer TOKEN', or log in at /login",
                extra=[(b"www-authenticate", b"Bearer")],
            )
        state = scope.setdefault("state", {})
        received = 0
        limit = self.max_body

        async def receive_limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(limit)
            return message

        private = scope["path"].startswith(("/api/", "/session"))

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                extra = list(SECURITY_HEADERS)
                if private:  # answers that may hold a token or a user's data: never cached
                    extra.append((b"cache-control", b"no-store"))
                cookie = state.get("mlxd_set_cookie")
                if cookie:
                    extra.append((b"set-cookie", cookie.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive_limited, send_with_cookie)


async def _error(send, status: int, message: str, *, close: bool = False, extra=()) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *extra,
    ]
    if close:  # the body we did not read stays on the connection: end it
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _wants_html(request: Request) -> bool:
    if request.url.path.startswith(("/api/", "/metrics", "/session")):
        return False
    return "text/html" in request.headers.get("accept", "")


async def _http_error(request: Request, exc: StarletteHTTPException):
    """Errors are JSON ``{"error": "..."}`` (the CLI's one line); a browser asking for a page
    without a session is sent to the login page, and other page errors are a short page."""
    message = str(exc.detail)
    if _wants_html(request):
        if exc.status_code == 401 and request.method == "GET":
            from urllib.parse import quote

            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        from html import escape

        page = f"<!doctype html><title>{exc.status_code}</title><p>{escape(message)}</p>"
        return HTMLResponse(page, exc.status_code, headers=exc.headers)
    return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError):
    """A bad request body or parameter: 400 with one line naming the field (the value sent
    is not repeated: it might be a secret)."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(
            f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid")
        )
    return JSONResponse({"error": "; ".join(parts) or "bad request"}, 400)


def _include_parts(app: FastAPI) -> None:
    for name in ROUTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that part is not built (yet)
                continue
            raise
        app.include_router(module.router)


def create_app(
    paths: Paths,
    *,
    public_read: bool = False,
    secret_key: bytes | None = None,
    tls: bool = False,
):
    """The server's app on the catalog of ``paths``. ``secret_key`` signs session cookies
    (default: MLXD_HOME/server-secret); ``tls``: cookies are marked Secure."""
    app = FastAPI(
        title="mlxd",
        version=__version__,
        openapi_url=None,  # served below, behind can_read
        docs_url=None,
        redoc_url=None,
    )
    app.state.paths = paths
    app.state.public_read = public_read
    app.state.auth = auth.Auth(
        paths,
        secret_key if secret_key is not None else auth.load_secret(paths),
        public_read=public_read,
        secure=tls,
    )
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(Guard, max_body=settings.SERVER_MAX_BODY_BYTES.get())

    @app.get("/api/v1/openapi.json", include_in_schema=False)
    def openapi(_: auth.CanRead):
        return app.openapi()

    @app.get("/health", include_in_schema=False)
    def health():
        """For load balancers and the tests: the server answers (no catalog data)."""
        return {"status": "ok", "version": __version__}

    app.include_router(auth.router)
    from mlxd.server import users_api

    app.include_router(users_api.router)
    _include_parts(app)
    if STATIC.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
