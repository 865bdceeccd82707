"""Starting the team server: where it listens, TLS, and uvicorn.

The checks come before any web import, so a refused start costs nothing: the address must be
loopback unless the server speaks TLS (or the user said --insecure-http, which warns); the
certificate and key must load; the port must be free. The socket is bound here and handed to
uvicorn, so "in use" is one line, not a traceback.

uvicorn's settings that matter for safety: ``proxy_headers`` off (a client cannot choose the
address the failed-login limit counts by with X-Forwarded-For); a connection must send its
request line and headers within ``MLXD_SERVER_HEADER_TIMEOUT_S`` (a slow client is dropped,
and never blocks others: each connection is a task on one event loop); ``limit_concurrency``
answers 503 past that many connections and tasks; the access log has no query strings
holding secrets (tokens travel in headers and cookies, which uvicorn does not log).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.config import Paths
from mlxd.vocab import settings

DEFAULT_BIND = "127.0.0.1:8765"
DEFAULT_PORT = 8765
LIMIT_CONCURRENCY = 1000


class ServeError(Exception):
    """The server cannot start as asked; one line for the user."""


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def display(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: whatever it resolves to, not known to be local
            return False


def parse_bind(text: str) -> Bind:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``HOST`` (port 8765) or ``:PORT`` (127.0.0.1)."""
    text = text.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.startswith("["):
        raise ServeError(f"bad --bind '{text}': [IPV6]:PORT, e.g. [::1]:{DEFAULT_PORT}")
    elif text.count(":") > 1:  # a bare IPv6 address
        host, port = text, None
    else:
        host, _, port = text.partition(":")
        host = host or "127.0.0.1"
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ServeError(f"bad --bind '{text}': a port is 0-65535 (HOST:PORT, e.g. {DEFAULT_BIND})")
    if not host:
        raise ServeError(f"bad --bind '{text}': HOST:PORT, e.g. {DEFAULT_BIND}")
    return Bind(host, number)


def check_tls(cert: str | None, key: str | None):
    """An SSL context from the certificate and key (both or neither), or None."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ServeError("--tls-cert and --tls-key go together")
    for what, name in (("certificate", cert), ("key", key)):
        p = Path(name)
        if not p.is_file():
            raise ServeError(f"the TLS {what} file {name} does not exist")
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        why = getattr(e, "reason", None) or e.strerror or str(e)
        raise ServeError(
            f"cannot use the TLS certificate {cert} with the key {key} ({why})"
        ) from None
    return context


def check_exposure(bind: Bind, *, tls: bool, insecure_http: bool) -> str | None:
    """Refuse plain HTTP on a non-loopback address; the warning to print, if any."""
    if bind.loopback or tls:
        return None
    if not insecure_http:
        raise ServeError(
            f"refusing to serve plain HTTP on {bind.display()}: tokens would cross the network "
            "in clear; give --tls-cert and --tls-key, or --insecure-http if you must"
        )
    return (
        f"Warning: serving plain HTTP on {bind.display()} (--insecure-http): tokens and "
        "session cookies cross the network in clear"
    )


def bind_socket(bind: Bind) -> socket.socket:
    sock = socket.socket(bind.family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind.host, bind.port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ServeError(
                f"{bind.display()} is in use (another server?); choose another with --bind"
            ) from None
        if e.errno == errno.EACCES:
            raise ServeError(f"no permission to listen on {bind.display()}") from None
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(e, socket.gaierror):
            raise ServeError(
                f"cannot listen on {bind.display()}: not an address of this machine"
            ) from None
        raise ServeError(f"cannot listen on {bind.display()} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


class _RedactQuery(logging.Filter):
    """The access log's request line without the values of secret-looking query fields."""

    SECRET = re.compile(
        r"((?:^|[?&])[^=&]*(?:token|key|secret|password|session)[^=&]*=)[^&]*", re.I
    )

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], self.SECRET.sub(r"\1***", args[2]), *args[3:])
        return True


def _protocol_class():
    """uvicorn's h11 protocol with a deadline for each request's line and headers: a
    connection that has not sent them whole in time is closed (uvicorn's own keep-alive timer
    restarts with every byte, so a client trickling a header would hold its connection)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    timeout = settings.SERVER_HEADER_TIMEOUT_S.get()

    class HeaderDeadline(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._deadline = self.loop.call_later(timeout, self._too_slow)

        def handle_events(self):
            super().handle_events()
            if self._deadline is not None and self.conn.their_state is not h11.IDLE:
                self._deadline.cancel()  # this request's headers are in
                self._deadline = None

        def on_response_complete(self):
            super().on_response_complete()
            if self._deadline is None and not self.transport.is_closing():
                self._deadline = self.loop.call_later(timeout, self._too_slow)

        def connection_lost(self, exc):
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

        def _too_slow(self):
            self._deadline = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if self.conn.their_state is h11.IDLE and not busy and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


def serve(
    paths: Paths,
    bind_text: str = DEFAULT_BIND,
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    public_read: bool = False,
    insecure_http: bool = False,
    prepare: Callable[[Any], None] | None = None,
) -> None:
    """Check, bind and run until SIGINT/SIGTERM. Raises ServeError before serving.
    ``prepare(app)`` completes the app first: ``mlxd serve`` gives it the CLI's commands,
    which the API runs (the server room does not import the CLI)."""
    bind = parse_bind(bind_text)
    tls = check_tls(tls_cert, tls_key) is not None
    warning = check_exposure(bind, tls=tls, insecure_http=insecure_http)

    from mlxd.catalog.read import Reader
    from mlxd.server import auth

    Reader(paths).close()  # the catalog exists, at head (a new home gets one)
    try:
        secret = auth.load_secret(paths)
    except (OSError, ValueError) as e:
        raise ServeError(f"cannot read the server's secret: {e}") from None
    sock = bind_socket(bind)
    bind = Bind(bind.host, sock.getsockname()[1])  # --bind HOST:0 picks a free port

    import uvicorn

    from mlxd.server.app import create_app

    app = create_app(paths, public_read=public_read, secret_key=secret, tls=tls)
    if prepare is not None:
        prepare(app)
    config = uvicorn.Config(
        app,
        ssl_certfile=tls_cert if tls else None,
        ssl_keyfile=tls_key if tls else None,
        proxy_headers=False,
        server_header=False,
        http=_protocol_class(),
        timeout_keep_alive=5,
        limit_concurrency=LIMIT_CONCURRENCY,
        timeout_graceful_shutdown=5,
        log_level="info",
    )
    logging.getLogger("uvicorn.access").addFilter(_RedactQuery())
    if warning:
        print(warning, file=sys.stderr)
    scheme = "https" if tls else "http"
    print(
        f"mlxd serve: listening on {scheme}://{bind.display()} for {paths.home} "
        f"(reads {'open to all' if public_read else 'need a token'})",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(config)
    parent = settings.SERVER_PARENT_PID.get()
    if parent:
        threading.Thread(target=_stop_without, args=(server, parent), daemon=True).start()
    server.run(sockets=[sock])


def _stop_without(server, parent_pid: int) -> None:
    """A daemon's server stops (gracefully) once its daemon is gone, kill -9 included: its
    parent changes. The daemon's next start would end it anyway (``server.json``); this
    frees the port and stops serving a queue that nobody works through now."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    print(f"mlxd serve: its daemon (pid {parent_pid}) is gone; stopping", file=sys.stderr)
    server.should_exit = True
