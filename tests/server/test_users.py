"""The server's users in the catalog, on SQLite and PostgreSQL: only a hash is kept, the token
finds its user, a removed user's token finds nobody."""

from __future__ import annotations

import hashlib

import pytest

from mlxd.config import paths
from mlxd.server import users


def test_users_are_kept_as_hashes_and_found_by_their_token(mlxd_home, catalog_backend):
    p = paths(mlxd_home)
    token = users.add_user(p, "ana", "admin", created_by="root")
    other = users.add_user(p, "ben", "viewer")
    assert token != other and token.startswith(users.TOKEN_PREFIX) and len(token) >= 45
    assert users.authenticate(p, token) == users.Principal("ana", "admin")
    assert users.authenticate(p, other) == users.Principal("ben", "viewer")
    assert users.authenticate(p, token + "x") is None and users.authenticate(p, "") is None
    listed = users.list_users(p)
    assert [(u["name"], u["role"], u["created_by"]) for u in listed] == [
        ("ana", "admin", "root"),
        ("ben", "viewer", None),
    ]
    from mlxd.catalog.read import Reader

    with Reader(p) as reader:
        rows = reader.api_users()
    assert token not in repr(rows) and hashlib.sha256(token.encode()).hexdigest() in repr(rows)
    with pytest.raises(users.UserError, match="already exists"):
        users.add_user(p, "ana", "viewer")
    with pytest.raises(users.UserError, match="bad role"):
        users.add_user(p, "cy", "root")
    with pytest.raises(users.UserError, match="bad user name"):
        users.add_user(p, "no spaces", "viewer")
    users.remove_user(p, "ana")
    users.forget_reader()
    assert users.authenticate(p, token) is None
    with pytest.raises(users.UserError, match="no user named 'ana'"):
        users.remove_user(p, "ana")
    assert users.Principal("x", "admin").at_least("submitter")
    assert not users.Principal("x", "viewer").at_least("submitter")


def test_the_cli_imports_no_web_framework():
    """`mlxd --help` and `mlxd users ...` stay as fast as any command: fastapi, starlette and
    uvicorn load only when `mlxd serve` runs."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom mlxd.cli.main import cli\n"
        "for a in (['--help'], ['serve', '--help'], ['users', 'list', '--help']):\n"
        "    assert CliRunner().invoke(cli, a).exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'starlette', 'uvicorn', 'itsdangerous')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "text,host,port,loopback",
    [
        ("127.0.0.1:8765", "127.0.0.1", 8765, True),
        ("localhost", "localhost", 8765, True),
        (":9000", "127.0.0.1", 9000, True),
        ("[::1]:8000", "::1", 8000, True),
        ("::1", "::1", 8765, True),
        ("0.0.0.0:80", "0.0.0.0", 80, False),
        ("team-mac.local:8765", "team-mac.local", 8765, False),
    ],
)
def test_bind_addresses(text, host, port, loopback):
    from mlxd.server.run import parse_bind

    bind = parse_bind(text)
    assert (bind.host, bind.port, bind.loopback) == (host, port, loopback)


@pytest.mark.parametrize("text", ["127.0.0.1:x", "127.0.0.1:70000", "[::1]:-1"])
def test_a_bad_bind_is_one_line(text):
    from mlxd.server.run import ServeError, parse_bind

    with pytest.raises(ServeError, match="bad --bind"):
        parse_bind(text)
