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
