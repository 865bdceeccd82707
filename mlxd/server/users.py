"""The team server's users: names, roles and tokens, kept in the catalog as hashes.

A token is 32 random bytes (``secrets.token_urlsafe``), shown once when the user is added;
the catalog keeps its SHA-256 only. A slow password hash (bcrypt, scrypt) protects guessable
passwords; a 256-bit random token cannot be guessed, so one SHA-256 is enough, and it lets a
request find its user by an indexed lookup instead of trying every row. The catalog holds
the users, not a file on one host: every host's server on a shared PostgreSQL catalog knows
the same people.

No web framework here: the `mlxd users` commands import this module.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass

from mlxd.config import Paths
from mlxd.vocab.choices import ROLES

# A token starts with this, so a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "mlxd_"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a user's name and role (``anonymous`` viewer when the server
    runs with --public-read and the request has no credentials)."""

    name: str
    role: str

    def at_least(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


ANONYMOUS = Principal("anonymous", "viewer")


class UserError(ValueError):
    """A bad name or role, a taken name, an unknown user: one line for the user."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise UserError(
            f"bad user name '{name[:64]}': 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    if name == ANONYMOUS.name:
        raise UserError(f"'{name}' is reserved for readers without a token")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"bad role '{role}': one of {', '.join(ROLES)}")
    return role


def add_user(paths: Paths, name: str, role: str, created_by: str | None = None) -> str:
    """Add a user; their token, which nothing keeps: show it once."""
    from mlxd.catalog.errors import CatalogError
    from mlxd.catalog.store import Store

    check_name(name)
    check_role(role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store = Store(paths)
    try:
        store.add_api_user(name, role, token_hash(token), created_by=created_by)
    except CatalogError as e:
        raise UserError(str(e)) from None
    finally:
        store.close()
    return token


def remove_user(paths: Paths, name: str) -> None:
    from mlxd.catalog.store import Store

    store = Store(paths)
    try:
        if not store.remove_api_user(name):
            raise UserError(f"no user named '{name}'; see 'mlxd users list'")
    finally:
        store.close()


# What a user row shows: never its token hash.
FIELDS = ("name", "role", "created_at", "created_by")


def list_users(paths: Paths) -> list[dict]:
    from mlxd.catalog.read import Reader

    with Reader(paths) as reader:
        return [{k: u[k] for k in FIELDS} for u in reader.api_users()]


def authenticate(paths: Paths, token: str) -> Principal | None:
    """The user a token belongs to, or None. The lookup is by the token's hash; the stored
    hash is compared again in constant time."""
    if not token or len(token) > 200:
        return None
    digest = token_hash(token)
    row = _with_reader(paths, lambda r: r.api_user_by_token(digest))
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    return Principal(row.name, row.role)


def user_named(paths: Paths, name: str):
    """A user's row (with its token hash, for a session cookie's check), or None."""
    return _with_reader(paths, lambda r: r.api_user(name))


# One Reader per server thread: opening one checks the schema revision and connects.
_local = threading.local()


def thread_reader(paths: Paths):
    """This thread's Reader on ``paths`` (opened on first use; a server's request threads
    reuse theirs). Call :func:`forget_reader` after an error that may have broken it."""
    from mlxd.catalog.read import Reader

    reader = getattr(_local, "reader", None)
    if reader is None or reader.paths != paths:
        if reader is not None:
            reader.close()
        reader = _local.reader = Reader(paths)
    return reader


def forget_reader() -> None:
    reader = getattr(_local, "reader", None)
    _local.reader = None
    if reader is not None:
        try:
            reader.close()
        except Exception:  # a connection already gone
            pass


def _with_reader(paths: Paths, read):
    """``read(reader)`` on this thread's Reader, once more on a fresh one if the connection
    broke (a PostgreSQL server restarted, say)."""
    try:
        return read(thread_reader(paths))
    except Exception:
        forget_reader()
        return read(thread_reader(paths))
