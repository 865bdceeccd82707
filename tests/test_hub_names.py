"""Hub repo ids and revisions as users type them: parsed, refused, turned into names."""

from __future__ import annotations

import pytest

from mlxd.hub.names import HubRefError, default_model_name, looks_like_repo_id, parse_repo_ref
from mlxd.jobs.base import SpecError
from mlxd.jobs.download import Spec


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Qwen/Qwen3-0.6B", ("Qwen/Qwen3-0.6B", None)),
        (
            "mlx-community/Qwen3-4B-Instruct-2507-4bit@main",
            ("mlx-community/Qwen3-4B-Instruct-2507-4bit", "main"),
        ),
        ("org/m@" + "a" * 40, ("org/m", "a" * 40)),
        ("org/m@refs/pr/1", ("org/m", "refs/pr/1")),
    ],
)
def test_repo_refs_parse(text, expected):
    assert parse_repo_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "../x",
        "a b/c",
        "a/b/c",
        "org/",
        "/abs/path",
        "org/m@",
        "org/x..y",
        "org/a--b",
        "org/m.git",
        "org/m@../x",
    ],
)
def test_bad_repo_refs_are_refused(text):
    with pytest.raises(HubRefError):
        parse_repo_ref(text)
    with pytest.raises(SpecError):
        Spec(repo=text)


def test_repo_ids_against_local_names_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_like_repo_id("Qwen/Qwen3-0.6B")
    assert not looks_like_repo_id("tiny")  # a catalog name
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    assert not looks_like_repo_id("models/tiny")  # an existing folder is a path
    assert not looks_like_repo_id("./org/x")
    assert default_model_name("mlx-community/Qwen3-4B-Instruct-2507-4bit") == (
        "Qwen3-4B-Instruct-2507-4bit"
    )


def test_download_spec_round_trips_and_names_one_revision():
    spec = Spec(repo="org/m@dev", include=["*.json"])
    assert (spec.repo, spec.revision, spec.ref) == ("org/m", "dev", "org/m@dev")
    assert Spec.from_params(spec.to_params()) == spec
    with pytest.raises(SpecError, match="two revisions"):
        Spec(repo="org/m@dev", revision="main")
