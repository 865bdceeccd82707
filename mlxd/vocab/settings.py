"""Every MLXD_* environment variable, declared once: its name, default, type and meaning.

Code reads a variable only through its `Setting` here (``settings.LEASE_TIMEOUT_S.get()``),
and ``mlxd --help-env`` prints this table. A value that does not parse counts as unset (the
default), except where a reader says otherwise (``MLXD_MEMORY_BUDGET_BYTES`` in the CLI).
Stdlib only and cheap to import: ``mlxd --help`` and every command load it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def _positive_int(text: str) -> int:
    """A count or a number of bytes; "5e8" is taken too."""
    value = int(float(text))
    if value <= 0:
        raise ValueError(text)
    return value


def _bytes_or_zero(text: str) -> int:
    value = int(float(text))
    if value < 0:
        raise ValueError(text)
    return value


def _comma_list(text: str) -> list[str]:
    return list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))


def _on_unless_zero(text: str) -> bool:
    return text != "0"


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[str], Any]  # raises ValueError on a value it cannot take
    meaning: str
    shown_default: str = ""  # what --help-env prints as the default ("" : the default itself)
    internal: bool = False  # for the tests: declared here, not listed by --help-env

    def raw(self) -> str | None:
        """The variable's text, None when unset or blank."""
        value = os.environ.get(self.name, "").strip()
        return value or None

    def get(self) -> Any:
        """The parsed value; the default when unset or not parseable."""
        value = self.raw()
        if value is None:
            return self.default
        try:
            return self.parse(value)
        except ValueError:
            return self.default

    def describe_default(self) -> str:
        if self.shown_default:
            return self.shown_default
        return "unset" if self.default is None else str(self.default)


SETTINGS: list[Setting] = []


def _declare(*args: Any, **kwargs: Any) -> Setting:
    setting = Setting(*args, **kwargs)
    SETTINGS.append(setting)
    return setting


# -- where state lives, and who this machine is ----------------------------------------------
HOME = _declare(
    "MLXD_HOME",
    None,
    str,
    "the folder that holds the catalog, models, logs and queue",
    shown_default="the platform's app-data folder",
)
DATABASE_URL = _declare(
    "MLXD_DATABASE_URL",
    None,
    str,
    "a postgresql:// URL: one catalog and queue for many machines",
    shown_default="database_url in MLXD_HOME/config.toml, else SQLite files in MLXD_HOME",
)
HOST_ID = _declare(
    "MLXD_HOST_ID",
    None,
    str,
    "this machine's name in a shared catalog",
    shown_default="host_id in MLXD_HOME/config.toml, else the hostname",
)
POOLS = _declare(
    "MLXD_POOLS",
    [],
    _comma_list,
    "the pools a daemon serves, comma separated (daemon start --pool sets it)",
    shown_default="default",
)
SHARED_MODELS = _declare(
    "MLXD_SHARED_MODELS",
    None,
    str,
    "a folder every host sees: models in it are not pinned to one host",
)
BUSY_TIMEOUT_S = _declare(
    "MLXD_BUSY_TIMEOUT_S",
    30.0,
    _positive_float,
    "how long a catalog or queue write waits for another process's lock (seconds)",
)

# -- the daemon's reliability ----------------------------------------------------------------
LEASE_TIMEOUT_S = _declare(
    "MLXD_LEASE_TIMEOUT_S",
    120.0,
    _positive_float,
    "a job's child that shows no life (no heartbeat, no CPU) this long is killed (seconds)",
)
CHILD_HEARTBEAT_S = _declare(
    "MLXD_CHILD_HEARTBEAT_S",
    2.0,
    _positive_float,
    "how often a job's child says it is alive (seconds)",
)
HOUSEKEEPING_S = _declare(
    "MLXD_HOUSEKEEPING_S",
    2.0,
    _positive_float,
    "how often the daemon checks leases, the spare child and the queue (seconds)",
)
SPARE_CHILD = _declare(
    "MLXD_SPARE_CHILD", True, _on_unless_zero, "0: no pre-started spare child", shown_default="1"
)

# -- memory and disk ---------------------------------------------------------------------------
MEMORY_BUDGET_BYTES = _declare(
    "MLXD_MEMORY_BUDGET_BYTES",
    None,
    _positive_int,
    "the memory a job or a loaded model may use (admission and the foreground check)",
    shown_default="75% of RAM for queued jobs; Metal's working set or free memory in the CLI",
)
JOB_MEMORY_LIMIT_BYTES = _declare(
    "MLXD_JOB_MEMORY_LIMIT_BYTES", None, _positive_int, "RLIMIT_AS for each job's child"
)
DISK_RESERVE_BYTES = _declare(
    "MLXD_DISK_RESERVE_BYTES",
    512_000_000,
    _positive_int,
    "a job that writes models or checkpoints stops when less is free",
    shown_default="512000000 (512 MB)",
)
DISK_MARGIN_BYTES = _declare(
    "MLXD_DISK_MARGIN_BYTES",
    512 * 1024**2,
    _bytes_or_zero,
    "a pull is refused unless this much stays free after the download",
    shown_default="536870912 (512 MiB)",
)
QUEUE_LIMIT_PER_USER = _declare(
    "MLXD_QUEUE_LIMIT_PER_USER",
    None,
    _positive_int,
    "the most queued and running jobs one user may have",
    shown_default="no limit",
)

# -- the team server, from a laptop ---------------------------------------------------------
URL = _declare(
    "MLXD_URL",
    None,
    str,
    "the team server (https://team-mac:8765): every read and submit goes through its API",
    shown_default="the URL `mlxd login` stored, else none: this machine's catalog",
)
TOKEN = _declare(
    "MLXD_TOKEN",
    None,
    str,
    "the token the team server knows you by (from `mlxd users add`)",
    shown_default="the token `mlxd login` stored",
)

# -- the team server (mlxd serve) ---------------------------------------------------------------
SERVER_MAX_BODY_BYTES = _declare(
    "MLXD_SERVER_MAX_BODY_BYTES",
    1_048_576,
    _positive_int,
    "the largest request body mlxd serve reads; a bigger one gets 413",
    shown_default="1048576 (1 MiB)",
)
SERVER_HEADER_TIMEOUT_S = _declare(
    "MLXD_SERVER_HEADER_TIMEOUT_S",
    10.0,
    _positive_float,
    "mlxd serve closes a connection whose request line and headers take longer",
)
SERVER_FAILED_LOGINS = _declare(
    "MLXD_SERVER_FAILED_LOGINS",
    20,
    _positive_int,
    "wrong tokens in a row from one address before mlxd serve answers 429",
)
SERVER_LOCKOUT_S = _declare(
    "MLXD_SERVER_LOCKOUT_S",
    60.0,
    _positive_float,
    "how long an address stays refused (429) after too many wrong tokens",
)

SERVER_PARENT_PID = _declare(
    "MLXD_SERVER_PARENT_PID",
    None,
    int,
    "the daemon whose team server this is (set by `daemon start --serve`): the server stops "
    "when that process is gone, kill -9 included",
    internal=True,
)

# -- for the tests -----------------------------------------------------------------------------
FAULT_POINT = _declare(
    "MLXD_FAULT_POINT",
    None,
    str,
    "the named point where the fault tests make the daemon kill itself",
    internal=True,
)


def help_env() -> str:
    """The table ``mlxd --help-env`` prints: each variable, its default and meaning."""
    shown = [s for s in SETTINGS if not s.internal]
    width = max(len(s.name) for s in shown)
    lines = ["Environment variables (each overrides the default shown):", ""]
    for s in shown:
        lines.append(f"  {s.name:<{width}}  {s.meaning}")
        lines.append(f"  {'':<{width}}  [default: {s.describe_default()}]")
    return "\n".join(lines)
