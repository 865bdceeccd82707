"""The CLI's own commands, run by the team server (``mlxd serve``) for a remote user.

The JSON API's reads and submits are the commands themselves: ``GET /api/v1/jobs`` is
``mlxd jobs list --json``, ``POST /api/v1/jobs/quantize {"model": "tiny", "bits": 4}`` is
``mlxd quantize tiny --bits 4``, run in the server's process with the principal as the
submitting user. So the validation, the one-line messages, the exit statuses and the
``--json`` field names are the CLI's by construction: there is no second validator and no
second serializer to drift. The remote CLI (``cli/remote.py``) sends its command line the
same way and prints what comes back, so its tables and every format are the local ones too.

The server room may not import the CLI (the CLI imports it: ``mlxd serve``); ``attach``
hands it a :class:`Commands` when ``mlxd serve`` builds the app.

Each command runs in a thread of its own: its stdout and stderr go to that request only
(``_ThreadStreams``), its Reader is that thread's, ``current_user()`` is the principal, and
a ``--wait``'s progress goes out as events for the remote CLI's own progress bar.
"""

from __future__ import annotations

import io
import os
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

# What each command is, for the server: a read (viewer), a submit (submitter), a cancel
# (submitter, own jobs; admin any), an admin's write. Anything else needs the machine
# it runs on (the daemon, chat, generate, a local folder...) and is refused in one line.
ACCESS: dict[tuple[str, ...], str] = {
    ("adapters", "list"): "read",
    ("adapters", "show"): "read",
    ("finetune", "list"): "read",
    ("finetune", "show"): "read",
    ("jobs", "list"): "read",
    ("jobs", "show"): "read",
    ("jobs", "logs"): "read",
    ("jobs", "wait"): "read",
    ("machines", "list"): "read",
    ("models", "list"): "read",
    ("models", "show"): "read",
    ("quality", "list"): "read",
    ("eval", "list"): "read",
    ("eval", "show"): "read",
    ("recommend",): "read",
    ("regressions",): "read",
    ("report",): "read",
    ("results",): "read",
    ("sweep", "list"): "read",
    ("sweep", "show"): "read",
    ("batch",): "submit",
    ("bench",): "submit",
    ("cache-prompt",): "submit",
    ("convert",): "submit",
    ("finetune", "run"): "submit",
    ("fuse",): "submit",
    ("models", "import-gguf"): "submit",
    ("pull",): "submit",
    ("push",): "submit",
    ("quality", "run"): "submit",
    ("eval", "run"): "submit",
    ("quantize",): "submit",
    ("sweep", "run"): "submit",
    ("jobs", "retry"): "submit",
    ("jobs", "cancel"): "cancel",
    ("models", "rm"): "admin",
    ("adapters", "rm"): "admin",
}

# POST /api/v1/jobs/{kind}: the kind's command.
SUBMITS: dict[str, tuple[str, ...]] = {
    "quantize": ("quantize",),
    "convert": ("convert",),
    "bench": ("bench",),
    "sweep": ("sweep", "run"),
    "pull": ("pull",),
    "push": ("push",),
    "quality": ("quality", "run"),
    "eval": ("eval", "run"),
    "finetune": ("finetune", "run"),
    "fuse": ("fuse",),
    "batch": ("batch",),
    "cache-prompt": ("cache-prompt",),
    "import-gguf": ("models", "import-gguf"),
}

# Options that act on the server's own machine, not the catalog: refused through the API.
LOCAL_OPTIONS: dict[tuple[str, ...], set[str]] = {
    ("results",): {"sql"},
    ("report",): {"output"},
    ("batch",): {"foreground", "output"},
    ("cache-prompt",): {"foreground", "list_", "rm"},
}


class Refused(Exception):
    """The server will not run this command line (one line; ``status``: the HTTP one)."""

    def __init__(self, message: str, status: int = 400, exit_code: int = 2):
        super().__init__(message)
        self.status = status
        self.exit_code = exit_code


@dataclass
class Resolved:
    """A command line as the server sees it: the command's path (``("jobs", "list")``),
    its access, and its parameters as Click parsed them (nothing has run yet)."""

    path: tuple[str, ...]
    access: str
    params: dict[str, Any] = field(default_factory=dict)


def _root():
    from mlxd.cli.main import cli

    return cli


def resolve(argv: Sequence[str], home: Path | None = None, *, server: bool = True) -> Resolved:
    """What ``argv`` would run, checked for the server: a known command that does not need
    the local machine, no local-only option, files only inside MLXD_HOME. A bad command
    line is the CLI's own usage error (raised as Click raises it)."""
    cmd, path, args = _root(), [], list(argv)
    ctx = cmd.make_context("mlxd", list(args), resilient_parsing=False)
    while isinstance(cmd, click.Group):
        args = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        if not args:
            break
        name, sub, rest = cmd.resolve_command(ctx, args)
        if home is not None and not isinstance(sub, click.Group):
            _files_inside(sub, rest, home)  # before Click looks at them: no oracle of files
        path.append(name)
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub
    key = tuple(path)
    access = ACCESS.get(key)
    shown = " ".join(["mlxd", *path]) if path else "mlxd"
    if access is None:
        raise Refused(
            f"'{shown}' needs the machine it runs on; run it there, without MLXD_URL",
            status=400,
            exit_code=1,
        )
    params = dict(ctx.params)
    for name in LOCAL_OPTIONS.get(key, ()) if server else ():  # the remote CLI: its own
        if params.get(name) and str(params[name]) != "-":  # "-": standard output
            option = next(p for p in cmd.params if p.name == name)
            raise Refused(
                f"{_opt(option)} of '{shown}' acts on the server's machine; "
                "run it there, without MLXD_URL",
                exit_code=1,
            )
    if home is not None:
        for p, value in _named_files(cmd, params):
            check_inside(home, value, _opt(p))
    return Resolved(key, access, params)


# Options that take a file or a name (``eval --task FILE|NAME``): a value that looks like a
# path (a separator, a JSON suffix, or an existing file) is a file the server would read.
FILE_OR_NAME = {"tasks"}


def _named_files(cmd: click.Command, params: dict[str, Any]) -> Iterator[tuple[Any, str]]:
    """Each file a command line names, with its parameter: every value of a ``click.Path``
    parameter, and the path-like values of a file-or-name one (comma lists split)."""
    for p in cmd.params:
        path_type = isinstance(p.type, click.Path)
        if not path_type and p.name not in FILE_OR_NAME:
            continue
        values = params.get(p.name)
        for value in values if isinstance(values, list | tuple) else [values]:
            if value is None or str(value) in ("", "-"):  # "-": standard input or output
                continue
            if path_type:
                yield p, str(value)
                continue
            for part in str(value).split(","):
                part = part.strip()
                if part and (
                    os.sep in part or part.endswith((".jsonl", ".json")) or os.path.exists(part)
                ):
                    yield p, part


def _files_inside(cmd: click.Command, args: list[str], home: Path) -> None:
    """Refuse a file option or argument naming a file outside ``home`` as given, before the
    command's own checks (whether it exists) could tell anything about it."""
    ctx = click.Context(cmd, info_name=cmd.name, resilient_parsing=True)
    try:
        raw, _, _ = cmd.make_parser(ctx).parse_args(args=list(args))
    except click.UsageError:
        return  # the real parse says what is wrong
    for p, value in _named_files(cmd, raw):
        check_inside(home, value, _opt(p))


def _opt(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return param.human_readable_name
    return max(param.opts, key=len)


def check_inside(home: Path, value: str, what: str, shown: str | None = None) -> Path:
    """``value``, a file the server is asked to read, resolved (symlinks followed) inside
    ``home`` (MLXD_HOME or a folder of it); refused otherwise (``../``, an absolute path
    elsewhere, a link out), naming it as ``shown`` (default: ``value``)."""
    root = Path(os.path.realpath(home))
    target = Path(os.path.realpath(value))  # as the command will open it
    if target != root and root not in target.parents:
        raise Refused(
            f"{what} '{shown or value}' is outside the server's MLXD_HOME", status=403, exit_code=1
        )
    return target


def check(argv: Sequence[str], home: Path | None = None, *, server: bool = True) -> Resolved:
    """:func:`resolve`, with the CLI's own usage errors as :class:`Refused` (their one
    line and exit status: the same message the command would print)."""
    from mlxd.cli.main import failure

    try:
        return resolve(argv, home, server=server)
    except click.exceptions.Exit as e:  # --help, --version: nothing to run remotely
        raise Refused("help is shown by the mlxd command itself", exit_code=e.exit_code) from None
    except click.ClickException as e:
        code, message = failure(e)
        raise Refused(message or "bad command line", status=400, exit_code=code) from None


def command(path: Sequence[str]) -> click.Command:
    cmd = _root()
    for name in path:
        cmd = cmd.get_command(click.Context(cmd), name)
    return cmd


def command_argv(
    path: Sequence[str], fields: dict[str, Any], options: Sequence[str] = ()
) -> list[str]:
    """The command line of ``path`` with ``fields`` (a read endpoint's query and path
    parameters) and ``options`` (``--json``): ``("results",), {"model": ["tiny"]}`` is
    ``results --model tiny``."""
    return [*path, *options, *params_argv(command(path), fields, f"'{' '.join(path)}'")]


def fields_argv(kind: str, fields: dict[str, Any]) -> list[str]:
    """The command line of ``POST /api/v1/jobs/{kind}``: ``{"model": "tiny", "bits": 4}``
    is ``quantize tiny --bits 4``. A field is an option's name (``group_size``, or the
    Python name: ``timeout_s``); ``model`` is the command's REF; a list is a comma list
    (or the option repeated, when it repeats); ``true`` a flag."""
    if kind not in SUBMITS:
        raise Refused(
            f"unknown job kind '{kind}'; choose from {', '.join(sorted(SUBMITS))}", status=404
        )
    path = SUBMITS[kind]
    return [*path, *params_argv(command(path), fields, f"'{kind}'")]


def params_argv(cmd: click.Command, fields: dict[str, Any], what: str) -> list[str]:
    """The arguments of ``cmd`` that ``fields`` name (see :func:`fields_argv`)."""
    by_name: dict[str, click.Parameter] = {}
    for p in cmd.params:
        if p.name in ("wait",) or p.name.endswith("_") and p.name[:-1] in ("json", "csv", "md"):
            continue
        by_name[p.name] = p
        for opt in getattr(p, "opts", ()):
            if opt.startswith("--"):
                by_name.setdefault(opt[2:].replace("-", "_"), p)
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    if arguments:
        by_name.setdefault("model", arguments[0])
        by_name.setdefault("models", arguments[0])
    options, positional = [], []
    for key, value in fields.items():
        p = by_name.get(key)
        if p is None:
            if key == "wait":
                raise Refused("'wait' is the remote CLI's; follow the job with GET /api/v1/jobs/ID")
            known = sorted(k for k in by_name if not k.startswith("_"))
            raise Refused(f"unknown field '{key}' for {what}; fields: {', '.join(known)}")
        if value is None or value is False or (isinstance(value, list | tuple) and not value):
            continue
        if isinstance(p, click.Argument):
            positional += [str(v) for v in value] if isinstance(value, list) else [str(value)]
        elif getattr(p, "is_flag", False):
            if value is True or str(value).lower() in ("true", "1", "yes"):
                options.append(_opt(p))
        elif p.nargs > 1 and isinstance(value, list):  # --compare A B
            options += [_opt(p), *(_value(v) for v in value)]
        elif getattr(p, "multiple", False) and isinstance(value, list):
            for v in value:
                options += [_opt(p), _value(v)]
        else:
            options += [_opt(p), _value(value)]
    return [*options, "--", *positional] if positional else options


def _value(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ",".join(_value(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# -- running a command for a request ---------------------------------------------------------


class _ThreadStreams(io.TextIOBase):
    """sys.stdout / sys.stderr of a server: what a command thread writes goes to its
    request's sink, everything else to the real stream."""

    def __init__(self, real, name: str):
        self.real, self.name = real, name

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "strict"

    def _sink(self):
        return getattr(_local, "sink", None)

    def write(self, text) -> int:
        sink = self._sink()
        if sink is None:
            return self.real.write(text)
        if isinstance(text, bytes | bytearray):  # Click probes with b""
            text = bytes(text).decode("utf-8", "replace")
        sink(self.name, text)
        return len(text)

    def flush(self) -> None:
        sink = self._sink()
        if sink is None:
            self.real.flush()
        else:
            sink(self.name, "")  # a quiet command still hears that its client went away

    def isatty(self) -> bool:
        return False if self._sink() is not None else self.real.isatty()

    @property
    def buffer(self):
        return _Binary(self) if self._sink() is not None else self.real.buffer

    def fileno(self) -> int:
        return self.real.fileno()

    def writable(self) -> bool:
        return True


class _Binary(io.RawIOBase):
    """The ``buffer`` of a command thread's stream (a log's raw bytes), decoded."""

    def __init__(self, text: _ThreadStreams):
        self.text = text

    def write(self, data) -> int:
        self.text.write(bytes(data))
        return len(data)

    def writable(self) -> bool:
        return True


_local = threading.local()
_install_lock = threading.Lock()


def _install_streams() -> None:
    with _install_lock:
        if not isinstance(sys.stdout, _ThreadStreams):
            sys.stdout = _ThreadStreams(sys.stdout, "out")
        if not isinstance(sys.stderr, _ThreadStreams):
            sys.stderr = _ThreadStreams(sys.stderr, "err")


class Gone(KeyboardInterrupt):
    """The client went away: a follow ends as Ctrl-C ends it (the job goes on)."""


@dataclass
class Run:
    """One command running for a request: iterate :meth:`events` (``("out", text)``,
    ``("err", text)``, ``("progress", {...})``, then ``("exit", {...})``)."""

    argv: list[str]
    user: str
    _events: queue.Queue = field(default_factory=queue.Queue)
    _gone: threading.Event = field(default_factory=threading.Event)
    job_ids: list[int] = field(default_factory=list)
    error: BaseException | None = None
    message: str | None = None
    exit_code: int | None = None

    def start(self) -> Run:
        threading.Thread(
            target=self._main, name=f"mlxd {' '.join(self.argv[:2])}", daemon=True
        ).start()
        return self

    def _main(self) -> None:
        from mlxd.cli import context
        from mlxd.cli.submit import PROGRESS_HOOK, QUEUED_IDS
        from mlxd.scheduling.admission import ACTING_USER

        def sink(name: str, text: str) -> None:
            if self._gone.is_set():
                raise Gone()
            if text:
                self._events.put((name, text))

        def progress(desc: str, fraction: float, message: str) -> None:
            if self._gone.is_set():
                raise Gone()
            self._events.put(("progress", {"desc": desc, "progress": fraction, "message": message}))

        def on_error(e: BaseException, message: str) -> None:
            self.error, self.message = e, message

        _local.sink = sink
        ACTING_USER.set(self.user)
        QUEUED_IDS.set(self.job_ids)
        PROGRESS_HOOK.set(progress)
        try:
            self.exit_code = _root().run(list(self.argv), prog_name="mlxd", on_error=on_error)
        except BaseException as e:  # noqa: BLE001  the request hears of it, not the server
            self.error, self.message, self.exit_code = e, f"internal error ({e})", 1
        finally:
            _local.sink = None
            context.close_reader()
            self._events.put(("exit", {"exit_code": self.exit_code, "error": self.message}))

    def next_event(self, timeout_s: float) -> tuple[str, Any] | None:
        """The next event, or None if none came within ``timeout_s``."""
        try:
            return self._events.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def stop(self) -> None:
        """The client went away: the command's next write or progress ends it."""
        self._gone.set()

    def events(self) -> Iterator[tuple[str, Any]]:
        try:
            while True:
                event = self._events.get()
                yield event
                if event[0] == "exit":
                    return
        finally:
            self._gone.set()  # the client went away (or all was read): stop following

    def collect(self) -> tuple[str, str]:
        """Wait for the end; (stdout, stderr)."""
        out, err = [], []
        for name, value in self.events():
            if name == "out":
                out.append(value)
            elif name == "err":
                err.append(value)
        return "".join(out), "".join(err)


class Commands:
    """What the server room is given to run the CLI's commands (``app.state.commands``)."""

    check = staticmethod(check)
    command_argv = staticmethod(command_argv)
    fields_argv = staticmethod(fields_argv)
    check_inside = staticmethod(check_inside)
    Refused = Refused
    SUBMITS = SUBMITS

    def run(self, argv: Sequence[str], user: str) -> Run:
        _install_streams()
        return Run(list(argv), user).start()


def attach(app) -> None:
    """Give ``app`` (``mlxd.server.app.create_app``'s) the CLI's commands."""
    app.state.commands = Commands()
