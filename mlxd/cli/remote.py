"""The remote CLI: with ``MLXD_URL`` (or after ``mlxd login URL``) every command that reads or
submits runs on the team server, through its API, and prints what it printed there.

The command line is checked here first with the same Click parser (a bad option is the
same one line and exit status without a round trip), then sent whole to ``/api/v1/cli``,
which runs the same command for the token's user (``cli/bridge.py``) and streams its stdout,
stderr, a ``--wait``'s progress and its exit status back. So tables, every format, notes,
exit statuses and ``--wait`` are the local ones by construction; the progress bar is drawn
here, from the server's progress events. Commands that need the machine they run on
(``daemon``, ``chat``, ``generate``, ``models synth``...) are refused in one line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

HELP_FLAGS = ("-h", "--help", "--version", "--help-env")
CONNECT_TIMEOUT_S = 10.0


class RemoteError(Exception):
    """Talking to the server failed: one line, and the exit status to end with."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def where() -> tuple[str, str | None]:
    """(the server's URL, the token): MLXD_URL / MLXD_TOKEN, else what `mlxd login` stored
    (its token only for its own URL)."""
    from mlxd.config import remote_login
    from mlxd.vocab import settings

    stored = remote_login()
    url = settings.URL.get() or stored.get("url")
    token = settings.TOKEN.get()
    if token is None and stored.get("url") and _same(stored["url"], url):
        token = stored.get("token")
    return url.rstrip("/"), token


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _local(args: list[str]) -> int:
    from mlxd.cli.main import cli

    return cli.run(args, prog_name="mlxd")


def remote_main(args: list[str]) -> int:
    """Run ``args`` on the team server; the exit status."""
    if not args or args[0] == "login" or any(a in HELP_FLAGS for a in args):
        return _local(args)  # help, the version and login are this machine's
    from mlxd.cli.bridge import Refused, check

    try:
        resolved = check(args, server=False)  # what the server refuses, it says
    except Refused as e:
        from mlxd.vocab import settings

        hint = ""
        if e.status != 400 or e.exit_code != 2:  # not a usage error: a local-only command
            if not settings.URL.get():  # the URL came from `mlxd login`
                hint = " ('mlxd login --forget' runs every command here again)"
        click.echo(f"Error: {e}{hint}", err=True)
        return e.exit_code
    url, token = where()
    seen = _Seen()
    try:
        if resolved.path == ("report",) and str(resolved.params.get("output")) != "-":
            return _report_here(url, token, resolved.params)
        return _stream(url, token, args, read=resolved.access == "read", seen=seen)
    except RemoteError as e:
        click.echo(f"Error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        from mlxd.cli.submit import interrupted

        # As a local --wait says it: the wait ends, the job goes on.
        what = interrupted(seen.job_id) if seen.job_id else "interrupted"
        click.echo(f"Error: {what}", err=True)
        return 130


class _Seen:
    """What the command printed so far that a Ctrl-C message names (the last job queued)."""

    job_id: int | None = None

    def out(self, text: str) -> None:
        import re

        for m in re.finditer(r"^Queued job (\d+)", text, re.M):
            self.job_id = int(m[1])


def _report_here(url: str, token: str | None, params: dict) -> int:
    """`mlxd report` writes its file here: the server renders it to standard output."""
    from datetime import UTC, datetime
    from pathlib import Path

    from mlxd.cli.bridge import command_argv
    from mlxd.reports.report import default_path

    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    fields["output"] = "-"
    argv = command_argv(("report",), fields)
    text: list[str] = []
    code = _stream(url, token, argv, read=True, out=text.append)
    if code != 0:
        return code
    fmt = params.get("fmt_name") or "md"
    path = params.get("output") or default_path(Path("reports"), fmt, datetime.now(UTC))
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(text), encoding="utf-8")
    except OSError as e:
        raise RemoteError(f"cannot write {path}: {e.strerror or e}") from None
    click.echo(f"Wrote {path} (from {url})")
    return 0


def _client(token: str | None):
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        headers=headers, timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=None), trust_env=True
    )


def request(method: str, url: str, token: str | None, path: str, **kwargs) -> Any:
    """One API call's JSON answer (``mlxd login`` checks its token with it)."""
    with _client(token) as client, _errors(url):
        r = client.request(method, f"{url}{path}", **kwargs)
        if r.status_code >= 400:
            raise _refusal(url, r.status_code, r.read())
        return r.json()


def _stream(
    url: str, token: str | None, args: list[str], *, read: bool, seen=None, out=None
) -> int:
    """Run ``args`` on the server, printing what it prints (stdout to ``out`` when given);
    its exit status."""
    from mlxd.cli.submit import progress_bar

    with _client(token) as client, _errors(url):
        if read:
            call = client.stream("GET", f"{url}/api/v1/cli", params={"argv": args})
        else:
            call = client.stream("POST", f"{url}/api/v1/cli", json={"argv": args})
        with call as r:
            if r.status_code >= 400:
                raise _refusal(url, r.status_code, r.read())
            bar = progress_bar(sys.stderr.isatty())
            tasks: dict[str, Any] = {}
            with bar:
                for line in r.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if "out" in event and out is not None:
                        out(event["out"])
                    elif "out" in event:
                        sys.stdout.write(event["out"])
                        sys.stdout.flush()
                        if seen is not None:
                            seen.out(event["out"])
                    elif "err" in event:
                        sys.stderr.write(event["err"])
                        sys.stderr.flush()
                    elif "progress" in event:
                        p = event["progress"]
                        if p["desc"] not in tasks:
                            tasks[p["desc"]] = bar.add_task(p["desc"], total=1.0, message="")
                        bar.update(tasks[p["desc"]], completed=p["progress"], message=p["message"])
                    elif "exit" in event:
                        return int(event["exit"]["exit_code"] or 0)
    raise RemoteError(f"the team server at {url} ended the answer early; see its log")


class _errors:
    """httpx's errors as one line naming the server (never the token)."""

    def __init__(self, url: str):
        self.url = url

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        import httpx

        if e is None or isinstance(e, RemoteError):
            return False
        if isinstance(e, httpx.ConnectError):
            reason = " ".join(str(e).split()) or "connection failed"
            if "SSL" in reason or "CERTIFICATE" in reason.upper():
                hint = " (a self-signed certificate: point SSL_CERT_FILE at it)"
                hint = hint if "CERTIFICATE" in reason.upper() else ""
                raise RemoteError(f"TLS error talking to {self.url}: {reason}{hint}") from None
            raise RemoteError(f"cannot reach the team server at {self.url}: {reason}") from None
        if isinstance(e, httpx.TimeoutException):
            raise RemoteError(f"the team server at {self.url} did not answer in time") from None
        if isinstance(e, httpx.HTTPError):
            reason = " ".join(str(e).split()) or type(e).__name__
            raise RemoteError(f"talking to the team server at {self.url}: {reason}") from None
        return False


def _refusal(url: str, status: int, body: bytes) -> RemoteError:
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    message = answer.get("error") or answer.get("detail") or f"HTTP {status}"
    if status == 401:
        how = "set MLXD_TOKEN or run 'mlxd login " + url + "'"
        return RemoteError(f"the team server at {url} refused: {message} ({how})")
    return RemoteError(str(message), int(answer.get("exit_code") or (2 if status == 400 else 1)))


@click.command()
@click.argument("url", required=False)
@click.option("--forget", is_flag=True, help="Forget the stored URL and token: run locally again")
def login(url: str | None, forget: bool):
    """Use the team server at URL from this machine (MLXD_URL without setting it).

    Asks for your token (never echoed), checks it with the server and stores the URL and
    token in your config folder, readable by you only (mode 0600)."""
    from mlxd.cli.context import BadUsage, UserError
    from mlxd.config import REMOTE_FILE, store_remote_login, user_config_dir

    if forget:
        path = user_config_dir() / REMOTE_FILE
        path.unlink(missing_ok=True)
        click.echo(f"Forgot the team server login ({path}); commands run on this machine")
        return
    if not url:
        raise BadUsage("give the team server's URL, e.g. 'mlxd login https://team-mac:8765'")
    if not url.startswith(("http://", "https://")):
        raise BadUsage(f"'{url}' is not an http:// or https:// URL")
    url = url.rstrip("/")
    token = click.prompt("Token", hide_input=True, err=True).strip()
    try:
        me = request("GET", url, token, "/api/v1/me")
    except RemoteError as e:
        raise UserError(str(e)) from None
    path = store_remote_login(url, token)
    click.echo(
        f"Logged in to {url} as {me.get('name')} ({me.get('role')}); "
        f"the token is in {path} (readable by you only)"
    )
