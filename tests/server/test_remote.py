"""The remote CLI (MLXD_URL + MLXD_TOKEN, or `mlxd login`) against a live `mlxd serve` on
127.0.0.1 with a daemon: the README tour gives the same output as the same commands run on
the server's machine, --wait follows, exit statuses match, and errors are one line.

One server and one daemon for the module; the remote CLI runs in this process (Click's
runner) with a laptop's empty MLXD_HOME, so nothing it prints can come from a local catalog.
"""

from __future__ import annotations

import json
import re
import stat

import pytest

from tests.conftest import Daemon
from tests.server.cli import Local


@pytest.fixture(scope="module")
def tour(server, tiny_model_dir, tmp_path_factory):
    """The server's home with a daemon and the model 'tiny'; (local, remote as alice)."""
    local = Local(server.home)
    assert local.invoke("models", "add", str(tiny_model_dir), "--name", "tiny").exit_code == 0
    daemon = Daemon(server.home).start()
    laptop = tmp_path_factory.mktemp("laptop") / "mlxd-home"
    remote = Local(laptop, {"MLXD_URL": server.url, "MLXD_TOKEN": server.tokens["submitter"]})
    try:
        yield local, remote
    finally:
        daemon.stop()


def test_the_readme_tour_through_the_api_prints_what_it_prints_locally(tour, server):
    local, remote = tour
    # `models synth` makes a model on the machine it runs on: refused in one line.
    r = remote.invoke("models", "synth", "tiny2")
    assert r.exit_code == 1
    assert r.stderr == (
        "Error: 'mlxd models synth' needs the machine it runs on; run it there, without MLXD_URL\n"
    )

    r = remote.invoke("quantize", "tiny", "--bits", "4", "--wait")
    assert r.exit_code == 0, r.output
    quantized = int(re.match(r"Queued job (\d+): quantize tiny -> tiny-4bit-g64\n", r.stdout)[1])
    assert re.search(rf"^Job {quantized} succeeded: model tiny-4bit-g64, ", r.stdout, re.M), (
        r.stdout
    )
    r = remote.invoke("bench", "tiny-4bit-g64", "-p", "16", "-g", "4", "-n", "2", "--wait")
    assert r.exit_code == 0, r.output
    bench = int(re.match(r"Queued job (\d+): ", r.stdout)[1])
    assert f"Job {bench} succeeded" in r.stdout

    reads = [
        ["results", "--model", "tiny-4bit-g64"],
        ["results", "--model", "tiny-4bit-g64", "--json"],
        ["results", "--model", "tiny-4bit-g64", "--csv"],
        ["results", "--model", "tiny-4bit-g64", "--md"],
        ["results", "--model", "tiny-4bit-g64", "--jsonl"],
        ["jobs", "list"],
        ["jobs", "list", "--json"],
        ["jobs", "show", str(bench)],
        ["jobs", "show", str(bench), "--json"],
        ["jobs", "logs", str(bench)],
        ["jobs", "logs", str(bench), "--follow"],  # an ended job: its whole log, then the end
        ["jobs", "wait", str(quantized)],
        ["models", "list", "--json"],
        ["models", "show", "tiny-4bit-g64", "--json"],
        ["sweep", "list"],
    ]
    for args in reads:
        here, there = local.invoke(*args), remote.invoke(*args)
        assert (there.exit_code, there.stdout, there.stderr) == (
            here.exit_code,
            here.stdout,
            here.stderr,
        ), args
    assert len(json.loads(remote.invoke("results", "--json").stdout)) == 1

    # A long bench behind everything, cancelled by the one who queued it.
    r = remote.invoke("bench", "tiny", "-n", "50", "--priority", "-1")
    assert r.exit_code == 0, r.output
    long_job = int(re.match(r"Queued job (\d+): ", r.stdout)[1])
    # A wait streams the job's progress (the remote CLI draws its bar from it), and one that
    # runs out ends 124, as locally.
    with server.client("viewer") as c:
        argv = ["jobs", "wait", str(long_job), "--wait-timeout", "2"]
        with c.stream("GET", "/api/v1/cli", params={"argv": argv}) as answer:
            events = [json.loads(line) for line in answer.iter_lines() if line.strip()]
    progress = [e["progress"] for e in events if "progress" in e]
    assert progress and {p["desc"] for p in progress} == {f"job {long_job} bench"}
    assert events[-1]["exit"]["exit_code"] == 124
    r = remote.invoke("jobs", "cancel", str(long_job))
    assert r.exit_code == 0, r.output
    assert local.json("jobs", "show", str(long_job))["status"] == "cancelled"
    assert local.json("jobs", "show", str(long_job))["submitted_by"] == server.users["submitter"]


def test_exit_statuses_and_messages_match_the_local_ones(tour):
    local, remote = tour
    for args in (
        ["quantize", "nope", "--bits", "4"],  # 2: not found
        ["quantize", "tiny", "--bits", "7"],  # 2: a bad value (Click's own message)
        ["jobs", "retry", "1"],  # 1: a job that succeeded is not retried
        ["jobs", "show", "9999"],  # 2
        ["jobs", "list", "--json", "--csv"],  # 2: formats that do not go together
    ):
        here, there = local.invoke(*args), remote.invoke(*args)
        assert here.exit_code != 0, args
        assert (there.exit_code, there.stderr) == (here.exit_code, here.stderr), args


def test_refusals_and_transport_errors_are_one_line(tour, server):
    _, remote = tour
    viewer = Local(remote.home, {**remote.env, "MLXD_TOKEN": server.tokens["viewer"]})
    r = viewer.invoke("quantize", "tiny", "--bits", "8")
    assert (r.exit_code, r.stderr) == (
        1,
        "Error: this needs the submitter role; viewer is a viewer\n",
    )
    wrong = Local(remote.home, {**remote.env, "MLXD_TOKEN": "not-a-token"})
    r = wrong.invoke("jobs", "list")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "refused: that token is not valid" in r.stderr and "not-a-token" not in r.stderr
    gone = Local(remote.home, {**remote.env, "MLXD_URL": "http://127.0.0.1:9"})
    r = gone.invoke("jobs", "list")
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: cannot reach the team server at http://127.0.0.1:9:")
    assert r.stderr.count("\n") == 1
    tls = Local(remote.home, {**remote.env, "MLXD_URL": server.url.replace("http:", "https:")})
    r = tls.invoke("jobs", "list")  # TLS to a plain-HTTP server
    assert r.exit_code == 1 and r.stderr.startswith("Error: TLS error talking to https://")
    assert r.stderr.count("\n") == 1
    r = remote.invoke("daemon", "status")
    assert r.exit_code == 1 and "'mlxd daemon status' needs the machine it runs on" in r.stderr


def test_login_stores_the_token_for_this_user_only_and_is_used(tour, server, tmp_path):
    local, remote = tour
    config = tmp_path / "config"
    laptop = Local(remote.home, {"XDG_CONFIG_HOME": str(config)})
    token = server.tokens["viewer"]
    r = laptop.invoke("login", server.url, input=f"{token}\n")
    assert r.exit_code == 0, r.output
    assert token not in r.output
    assert f"Logged in to {server.url} as viewer (viewer)" in r.stdout
    stored = config / "mlxd" / "remote.toml"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert token in stored.read_text()
    # No MLXD_URL or MLXD_TOKEN: the stored login is used.
    assert laptop.json("jobs", "list") == local.json("jobs", "list")
    r = laptop.invoke("daemon", "status")  # the stored login is why: say how to undo it
    assert r.exit_code == 1 and "'mlxd login --forget' runs every command here again" in r.stderr
    r = laptop.invoke("login", "--forget")
    assert r.exit_code == 0 and not stored.exists()
    r = laptop.invoke("login", server.url, input="wrong\n")
    assert r.exit_code == 1 and "that token is not valid" in r.stderr and not stored.exists()


def test_a_remote_report_is_written_here_from_the_servers_catalog(tour, server, tmp_path):
    local, remote = tour
    out = tmp_path / "team.md"
    r = remote.invoke("report", "-o", str(out))
    assert (r.exit_code, r.stdout) == (0, f"Wrote {out} (from {server.url})\n"), r.output
    assert out.read_text() == local.invoke("report", "-o", "-").stdout
    assert "tiny-4bit-g64" in out.read_text()
