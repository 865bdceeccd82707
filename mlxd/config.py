"""Where mlxd keeps its state, and the few settings that shape it.

Everything lives under one folder, ``MLXD_HOME`` (default: the platform's
app-data folder), so a test or a second team can point the whole tool elsewhere
with one environment variable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mlxd.vocab import settings

CONFIG_FILE = "config.toml"  # settings of one MLXD_HOME: database_url, host_id


class ConfigError(Exception):
    """MLXD_HOME/config.toml cannot be read; the message names the file and why."""


def read_config(p: Paths) -> dict:
    """The settings in ``MLXD_HOME/config.toml`` ({} when there is none)."""
    import tomllib

    cfg = p.home / CONFIG_FILE
    try:
        return tomllib.loads(cfg.read_text()) if cfg.is_file() else {}
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{cfg} cannot be read ({e})") from None


def recorded_host_id(p: Paths) -> str | None:
    """``host_id`` in this home's config.toml, where ``mlxd daemon start`` records it."""
    try:
        value = str(read_config(p).get("host_id") or "").strip()
    except ConfigError:
        return None  # the catalog's own read of the file says what is wrong with it
    return value or None


def host_id(p: Paths | None = None) -> str:
    """This machine's one name in a shared catalog: ``MLXD_HOST_ID`` (set by ``mlxd daemon
    start --host-id`` for its own process), else ``host_id`` in MLXD_HOME/config.toml (where
    the daemon records it, so every command run with that home files its models, runs and
    jobs under the daemon's id), else the hostname. ``job.host`` and ``model.host`` record it."""
    import socket

    return settings.HOST_ID.get() or recorded_host_id(p or paths()) or socket.gethostname()


def record_host_id(p: Paths, value: str) -> bool:
    """Make ``value`` this home's host id in its config.toml (other settings are kept);
    False when it already was. A missing file and the hostname need no line."""
    import socket

    if (recorded_host_id(p) or socket.gethostname()) == value:
        return False
    cfg = p.home / CONFIG_FILE
    lines = cfg.read_text().splitlines() if cfg.is_file() else []
    # A top-level key goes before the first [table]; the old line (if any) goes.
    kept = [ln for ln in lines if not re.match(r"\s*host_id\s*=", ln)]
    kept.insert(0, f'host_id = "{value}"')
    p.home.mkdir(parents=True, exist_ok=True)
    tmp = cfg.with_name(f".{CONFIG_FILE}.{os.getpid()}")
    tmp.write_text("\n".join(kept) + "\n")
    tmp.replace(cfg)
    return True


def default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("mlxd", appauthor=False))


REMOTE_FILE = "remote.toml"  # `mlxd login`'s URL and token, in the user's config folder


def user_config_dir() -> Path:
    """This user's mlxd config folder (not MLXD_HOME: a laptop has no state of its own)."""
    from platformdirs import user_config_dir as where

    return Path(where("mlxd", appauthor=False))


def remote_login() -> dict:
    """What `mlxd login` stored: ``url`` and ``token`` (empty when nobody logged in)."""
    import tomllib

    path = user_config_dir() / REMOTE_FILE
    try:
        with open(path, "rb") as f:
            return dict(tomllib.load(f))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def store_remote_login(url: str, token: str) -> Path:
    """Store ``url`` and ``token`` for `mlxd login`, readable by this user only (0600)."""
    import json

    folder = user_config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REMOTE_FILE
    tmp = path.with_name(f".{REMOTE_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:  # TOML basic strings are JSON strings
        f.write(f"url = {json.dumps(url)}\ntoken = {json.dumps(token)}\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class Paths:
    """The layout of one ``MLXD_HOME``."""

    home: Path

    @property
    def catalog_db(self) -> Path:
        return self.home / "catalog.db"

    @property
    def queue_db(self) -> Path:
        return self.home / "queue.db"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def partial(self) -> Path:
        # Jobs write here first; only a finished job's folder is renamed into models/.
        return self.models / ".partial"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def daemon_log(self) -> Path:
        return self.logs / "daemon.log"

    @property
    def pidfile(self) -> Path:
        return self.home / "daemon.pid"

    @property
    def lockfile(self) -> Path:
        return self.home / "daemon.lock"

    @property
    def server_file(self) -> Path:
        # The team server a daemon started beside itself (`daemon start --serve`): JSON.
        return self.home / "server.json"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    def job_log(self, job_id: int) -> Path:
        return self.logs / f"job-{job_id}.log"

    def ensure(self) -> Paths:
        for p in (self.home, self.models, self.partial, self.logs):
            p.mkdir(parents=True, exist_ok=True)
        return self


class HomeError(Exception):
    """MLXD_HOME cannot be used; the message says which path and why, in one line."""


def check_home(p: Paths) -> Paths:
    """``p`` if its home is a folder this process can write in (created if missing)."""
    home = p.home
    if home.exists() and not home.is_dir():
        raise HomeError(
            f"MLXD_HOME {home} is a file, not a folder; point {settings.HOME.name} at a folder"
        )
    try:
        home.mkdir(parents=True, exist_ok=True)
        # A write probe: catches read-only file systems and permissions alike (os.access
        # says yes to root on a read-only folder). Cheaper than importing tempfile.
        probe = home / f".write-probe-{os.getpid()}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600))
        probe.unlink(missing_ok=True)
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise HomeError(
            f"MLXD_HOME {home} is not usable ({why}); point {settings.HOME.name} at a folder you can write in"
        ) from None
    return p


def paths(home: str | os.PathLike | None = None) -> Paths:
    """The paths for ``home``, else ``$MLXD_HOME``, else the platform default."""
    if home is None:
        home = settings.HOME.get() or default_home()
    return Paths(Path(home).expanduser().resolve())
