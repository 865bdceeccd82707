"""Pulling from (and pushing to) the hub, for real, through a stand-in hub on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_for
from tests.hubstub import Hub, folder_files

pytestmark = pytest.mark.daemon

REPO = "org/tiny"


@pytest.fixture
def hub(tiny_model_dir):
    with Hub() as h:
        h.add_repo(REPO, folder=tiny_model_dir)
        yield h


def hub_env(hub: Hub, home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HF_TOKEN", None)
    env.update(
        MLXD_HOME=str(home),
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",  # the stand-in does not speak Xet
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    env.update(extra)
    return env


class HubDaemon(Daemon):
    """The conftest daemon, with the hub online (HF_ENDPOINT at the stand-in)."""

    def __init__(self, home: Path, env: dict[str, str]):
        super().__init__(home)
        self.env = env

    def start(self, timeout: float = 30) -> HubDaemon:
        log = open(self.home.parent / "daemon-stdio.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlxd", "daemon", "start", "--foreground"],
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        pidfile = self.home / "daemon.pid"
        wait_for(
            lambda: (
                self.proc.poll() is not None
                or (pidfile.exists() and pidfile.read_text().strip() == str(self.proc.pid))
            ),
            timeout,
            what="daemon start",
        )
        assert self.proc.poll() is None, self.stdio()
        return self


@pytest.fixture
def env(hub, mlxd_home):
    mlxd_home.mkdir(parents=True, exist_ok=True)
    return hub_env(hub, mlxd_home)


@pytest.fixture
def hubd(env, mlxd_home):
    d = HubDaemon(mlxd_home, env)
    yield d
    d.stop()


def mlxd(env: dict[str, str], *args: str, check: bool = True, timeout: float = 180):
    proc = subprocess.run(
        [sys.executable, "-m", "mlxd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mlxd {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def mlxd_json(env, *args):
    return json.loads(mlxd(env, *args, "--json").stdout)


def job_id(proc) -> int:
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("Queued job"))
    return int(line.split()[2].rstrip(":"))


def cache_repo(env, repo=REPO) -> Path:
    return Path(env["HF_HOME"]) / "hub" / ("models--" + repo.replace("/", "--"))


# -- pull, verify, register -----------------------------------------------------------------


def test_pull_verifies_and_registers_then_is_a_no_op(hub, hubd, env, mlxd_home, tiny_model_dir):
    hubd.start()
    out = mlxd(env, "pull", REPO, "--wait")
    assert "succeeded" in out.stdout, out.stdout
    commit = hub.repos[REPO].branches["main"]

    models = {m["name"]: m for m in mlxd_json(env, "models", "list")}
    m = models["tiny"]
    assert m["source"] == "hub" and m["format"] == "hf" and m["architecture"] == "llama"
    assert m["synthetic"] is True  # the repo carries mlxd_synth.json
    # The files stay in the shared HF cache: nothing copied into MLXD_HOME.
    assert m["path"] == str(cache_repo(env) / "snapshots" / commit)
    assert not any((mlxd_home / "models").glob("tiny*"))
    shown = mlxd_json(env, "models", "show", "tiny")
    assert shown["hub"]["repo"] == REPO and shown["hub"]["commit"] == commit
    assert shown["hub"]["revision"] == "main" and shown["hub"]["verified_at"]
    files = {f["path"]: f for f in shown["hub"]["files"]}
    expected = folder_files(tiny_model_dir)
    assert set(files) == set(expected)
    import hashlib

    for path, data in expected.items():
        assert files[path]["size_bytes"] == len(data)
        assert files[path]["sha256"] == hashlib.sha256(data).hexdigest()
    assert files["model.safetensors"]["lfs"] is True
    listing = mlxd(env, "models", "list").stdout
    assert REPO in listing and commit[:12] in listing

    # The same repo at the same commit again: nothing downloaded, and it says so.
    gets = sum(hub.gets.values())
    again = mlxd(env, "pull", REPO, "--wait")
    assert "nothing to do" in again.stdout
    assert sum(hub.gets.values()) == gets
    pinned = mlxd(env, "pull", f"{REPO}@{commit}")
    assert "Already pulled" in pinned.stdout and "Queued" not in pinned.stdout

    # A branch with another commit: pinned by branch name, then by its commit.
    files2 = dict(expected, **{"config.json": expected["config.json"].replace(b"1e-05", b"1e-06")})
    dev = hub.repos[REPO].add_commit(files2, branch="dev", message="dev")
    mlxd(env, "pull", f"{REPO}@dev", "--wait")
    dev_model = mlxd_json(env, "models", "show", f"{REPO}@dev")
    assert dev_model["name"] == f"tiny-{dev[:7]}"
    assert dev_model["hub"]["commit"] == dev and dev_model["hub"]["revision"] == "dev"
    assert (cache_repo(env) / "refs" / "dev").read_text() == dev  # as the hub library writes it
    # Only config.json changed: the weights' blob is shared, not fetched again.
    assert hub.gets[(REPO, "model.safetensors")] == 1
    from mlxd.catalog.read import Reader
    from mlxd.config import paths

    with Reader(paths(mlxd_home)) as reader:  # a commit prefix names it too (as any REF)
        assert reader.hub_model(f"{REPO}@{dev[:10]}").id == dev_model["id"]
        assert reader.hub_model(f"{REPO}@main").name == "tiny"


def test_a_pull_serves_the_hub_library_offline_and_env_drift_is_told(hub, hubd, env):
    """Seam 6: what mlxd pulls is the hub library's cache, usable offline by huggingface_hub
    and mlx-lm; a CLI whose hub settings differ from the daemon's hears it at submit."""
    hubd.start()
    # The CLI sees another endpoint and a token; the daemon (the stand-in, no token) pulls.
    cli_env = dict(env, HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_" + "x" * 34)
    out = mlxd(cli_env, "pull", REPO, "--wait")
    assert "succeeded" in out.stdout, out.stdout
    notes = [ln for ln in out.stderr.splitlines() if "the job uses the daemon's" in ln]
    assert len(notes) == 1, out.stderr
    assert f"HF_ENDPOINT {hub.url} (here: http://127.0.0.1:9)" in notes[0]
    assert "has no hub token (here: one)" in notes[0]
    assert "hf_xxx" not in out.stderr + out.stdout  # presence only, never the token
    same = mlxd(env, "pull", REPO, "--wait")  # the daemon's own settings: no note
    assert "the job uses the daemon's" not in same.stderr, same.stderr

    commit = hub.repos[REPO].branches["main"]
    offline = dict(env, HF_HUB_OFFLINE="1")
    asked = len(hub.requests)
    # The hub library and mlx-lm find the pulled snapshot with no hub (refs/main).
    code = (
        "from huggingface_hub import snapshot_download as s; "
        "print(s('org/tiny', local_files_only=True)); "
        "from mlx_lm.utils import _download; print(_download('org/tiny'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], env=offline, capture_output=True, text=True, timeout=120
    )
    assert found.returncode == 0, found.stderr[-2000:]
    snapshot = str(cache_repo(env) / "snapshots" / commit)
    assert found.stdout.split() == [snapshot, snapshot]
    # Offline, pulling it again says it is there and queues nothing.
    again = mlxd(offline, "pull", REPO)
    assert "Already pulled" in again.stdout and "Queued" not in again.stdout, again.stdout
    assert len(hub.requests) == asked


# -- refusals -------------------------------------------------------------------------------


def test_bad_repo_ids_are_refused_at_submit(env):
    # (the full list of refused spellings is in test_hub_names.py, without processes)
    for bad in ("../x", "a/b/c"):
        proc = mlxd(env, "pull", bad, check=False)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert proc.stderr.startswith("Error: invalid") and proc.stderr.count("\n") == 1
    cold = mlxd(dict(env, HF_HUB_OFFLINE="1"), "pull", REPO, check=False)
    assert cold.returncode == 1
    assert "offline (HF_HUB_OFFLINE=1) and org/tiny@main is not in the HF cache" in cold.stderr


def test_preflight_refuses_before_any_weight_moves(hub, hubd, env, mlxd_home, tiny_model_dir):
    files = folder_files(tiny_model_dir)
    config = json.loads(files["config.json"])
    hub.add_repo("org/gated", files, gated=True)
    weird = dict(
        files, **{"config.json": json.dumps(dict(config, model_type="nosuchmodel")).encode()}
    )
    hub.add_repo("org/weird", weird)
    custom_cfg = dict(config, auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    custom = dict(
        files, **{"config.json": json.dumps(custom_cfg).encode(), "modeling_x.py": b"pass\n"}
    )
    hub.add_repo("org/custom", custom)
    hubd.start()

    def refused(*args: str) -> str:
        proc = mlxd(env, "pull", *args, "--wait", check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: job "), proc.stderr
        return lines[0]

    assert "repo 'org/nope' not found" in refused("org/nope")
    assert "revision 'nosuch' not found in org/tiny" in refused("org/tiny@nosuch")
    assert "org/gated is gated" in refused("org/gated")
    import mlx_lm

    line = refused("org/weird")
    assert "model_type 'nosuchmodel' is not supported" in line and mlx_lm.__version__ in line
    assert "ships its own modelling code (modeling_x.py)" in refused("org/custom")
    assert "no file of org/tiny matches --include '*.gguf'" in refused(REPO, "--include", "*.gguf")
    # Not one weight file was served for any of them.
    assert not any(name.endswith(".safetensors") for _, name in hub.gets), hub.gets

    # Trusting the remote code is a per-job choice.
    mlxd(env, "pull", "org/custom", "--trust-remote-code", "--wait")
    # Not enough disk (free space against what is to fetch plus a margin) is refused too.
    hubd.stop()
    hubd.env = dict(env, MLXD_DISK_MARGIN_BYTES=str(10**18))
    hubd.start()
    assert "not enough disk space" in refused(REPO)
    assert hub.gets[(REPO, "model.safetensors")] == 0


# -- integrity and interruption --------------------------------------------------------------


def test_cut_corrupt_and_killed_pulls_recover(hub, hubd, env, mlxd_home, tiny_model_dir):
    from mlxd.catalog.store import Store
    from mlxd.config import paths

    files = folder_files(tiny_model_dir)
    weights = len(files["model.safetensors"])
    # A connection cut in the middle of the weights, and a flipped byte in the tokenizer: both
    # are fetched again and the pull succeeds.
    hub.cut(REPO, "model.safetensors", at=weights // 2)
    hub.corrupt(REPO, "tokenizer.json")
    hubd.start()
    out = mlxd(env, "pull", REPO, "--wait")
    assert "refetched tokenizer.json" in out.stdout, out.stdout
    assert hub.gets[(REPO, "model.safetensors")] == 2
    assert hub.gets[(REPO, "tokenizer.json")] == 2
    shown = mlxd_json(env, "models", "show", "tiny")
    assert shown["hub"]["verified_at"]

    # A byte corrupted every time: the job fails naming the file, and the bad copy is gone.
    hub.add_repo("org/bad", files)
    hub.corrupt("org/bad", "model.safetensors", times=2)
    proc = mlxd(env, "pull", "org/bad", "--wait", check=False)
    assert proc.returncode == 1
    assert "model.safetensors of org/bad failed verification" in proc.stderr, proc.stderr
    blobs = cache_repo(env, "org/bad") / "blobs"
    assert not any(p.stat().st_size == weights for p in blobs.iterdir() if p.is_file())

    # The daemon killed mid-download: started again, it finishes the pull without fetching
    # again what was complete.
    hub.add_repo("org/slow", files)
    hub.throttle("org/slow", "model.safetensors", 600_000)
    jid = job_id(mlxd(env, "pull", "org/slow"))
    store = Store(paths(mlxd_home))
    key = ("org/slow", "model.safetensors")
    wait_for(lambda: hub.bytes_served[key] > 300_000, 60, what="weights half-served")
    wait_for(lambda: "model.safetensors" in (store.get_job(jid).message or ""), 30, what="progress")
    shown = mlxd_json(env, "jobs", "show", str(jid))
    assert f"/ {weights / 1e6:.1f} MB" in shown["message"] and "/s" in shown["message"]
    small = [p for p in files if p != "model.safetensors"]
    assert all(hub.gets[("org/slow", p)] == 1 for p in small), hub.gets
    hubd.kill9()
    hub.throttle("org/slow", "model.safetensors", None)
    hubd.start()
    mlxd(env, "jobs", "wait", str(jid), "--timeout", "120")
    job = mlxd_json(env, "jobs", "show", str(jid))
    # The daemon's death was not the job's fault: no attempt charged, one interruption noted.
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert job["interruptions"] == 1, job
    assert all(hub.gets[("org/slow", p)] == 1 for p in small), hub.gets
    assert hub.gets[key] == 2
    assert not list((cache_repo(env, "org/slow") / "blobs").glob("*.incomplete"))
    store.close()


# -- one cache, shared -----------------------------------------------------------------------


def test_scan_du_offline_and_rm_through_the_hub_cache(hub, hubd, env, mlxd_home, tiny_model_dir):
    files = folder_files(tiny_model_dir)
    dev_files = dict(files, **{"config.json": files["config.json"].replace(b"1e-05", b"1e-06")})
    dev = hub.repos[REPO].add_commit(dev_files, branch="dev")
    main = hub.repos[REPO].branches["main"]
    # The cache filled by the hub library itself (as mlx-lm or `hf download` would).
    fill = "from huggingface_hub import snapshot_download as s; s('org/tiny'); s('org/tiny', revision='dev')"
    subprocess.run([sys.executable, "-c", fill], env=env, check=True, capture_output=True)

    out = mlxd(env, "models", "scan").stdout
    assert f"tiny ({REPO}@{main[:12]})" in out and f"tiny-{dev[:7]} ({REPO}@{dev[:12]})" in out
    assert "Nothing new" in mlxd(env, "models", "scan").stdout
    listed = {m["name"]: m for m in mlxd_json(env, "models", "list")}
    assert listed["tiny"]["hub_commit"] == main and listed[f"tiny-{dev[:7]}"]["hub_commit"] == dev

    usage = mlxd_json(env, "models", "du")
    rows = {r["commit"]: r for r in usage}
    config_size = len(files["config.json"])
    shared = sum(len(d) for p, d in files.items() if p != "config.json")
    assert rows[main]["model"] == "tiny" and rows[main]["refs"] == "main"
    assert rows[main]["unique_bytes"] == config_size and rows[main]["shared_bytes"] == shared
    assert rows[dev]["shared_bytes"] == shared
    assert f"HF cache {cache_repo(env).parent}: {(shared + 2 * config_size) / 1e6:.1f} MB" in (
        mlxd(env, "models", "du").stdout
    )

    # Offline with a warm cache: a pull registers from the cache and asks the hub nothing.
    mlxd(env, "models", "rm", "tiny")
    hubd.env = dict(env, HF_HUB_OFFLINE="1")
    hubd.start()
    asked = len(hub.requests)
    mlxd(dict(env, HF_HUB_OFFLINE="1"), "pull", REPO, "--name", "tiny-offline", "--wait")
    assert len(hub.requests) == asked
    shown = mlxd_json(env, "models", "show", "tiny-offline")
    assert shown["hub"]["commit"] == main and len(shown["hub"]["files"]) == len(files)

    # rm --files deletes that revision through the hub library; blobs the other revision
    # uses stay.
    out = mlxd(env, "models", "rm", "tiny-offline", "--files").stdout
    assert f"deleted {REPO}@{main[:12]} from the HF cache ({config_size} B freed)" in out
    assert not (cache_repo(env) / "snapshots" / main).exists()
    dev_weights = cache_repo(env) / "snapshots" / dev / "model.safetensors"
    assert dev_weights.read_bytes() == files["model.safetensors"]
    # A folder mlxd did not make or pull is never deleted.
    mlxd(env, "models", "add", str(tiny_model_dir), "--name", "local")
    refused = mlxd(env, "models", "rm", "local", "--files", check=False)
    assert refused.returncode == 1 and "was not made by mlxd" in refused.stderr
    assert (tiny_model_dir / "model.safetensors").exists()


# -- secrets and hub ids as REF --------------------------------------------------------------


def test_hub_id_as_ref_with_a_token_that_is_never_stored(hub, hubd, env, mlxd_home, tiny_model_dir):
    token = hub.allowed_token
    hub.add_repo("org/gated-tiny", folder_files(tiny_model_dir), gated=True)
    env = dict(env, HF_TOKEN=token)
    hubd.env = env
    hubd.start()
    # A hub id where a model is expected: a pull is queued first and the quantize waits on it.
    out = mlxd(env, "quantize", "org/gated-tiny", "--bits", "4", "--wait")
    pull_id, quant_id = [
        int(ln.split()[2].rstrip(":"))
        for ln in out.stdout.splitlines()
        if ln.startswith("Queued job")
    ]
    assert mlxd_json(env, "jobs", "show", str(quant_id))["after_job_id"] == pull_id
    models = {m["name"]: m for m in mlxd_json(env, "models", "list")}
    assert models["gated-tiny-4bit-g64"]["parent_id"] == models["gated-tiny"]["id"]
    assert models["gated-tiny"]["hub_repo"] == "org/gated-tiny"
    assert f"Bearer {token}" in hub.auth_headers  # the daemon's token reached the hub
    shown = []
    # Held in the catalog now: naming it again queues no second pull.
    bench = ("-p", "16", "-g", "4", "-n", "1", "--warmup", "0", "--wait")
    again = mlxd(env, "bench", "org/gated-tiny", *bench)
    assert again.stdout.count("Queued job") == 1
    mlxd(env, "bench", "gated-tiny-4bit-g64", *bench)

    # Push: a synthetic model only when asked; the card carries recipe, lineage and figures.
    refused = mlxd(env, "push", "gated-tiny-4bit-g64", "me/tiny-4bit", check=False)
    assert refused.returncode == 2 and "--allow-synthetic" in refused.stderr
    mlxd(env, "push", "gated-tiny-4bit-g64", "me/tiny-4bit", "--allow-synthetic", "--wait")
    pushed = hub.repos["me/tiny-4bit"].resolve("main").files
    assert (
        pushed["model.safetensors"]
        == (mlxd_home / "models" / "gated-tiny-4bit-g64" / "model.safetensors").read_bytes()
    )
    card = pushed["README.md"].decode()
    meta = hub.validated_cards[-1]
    assert meta["library_name"] == "mlx" and meta["base_model"] == "org/gated-tiny"
    assert {"mlx", "llama", "quantized", "4-bit", "synthetic"} <= set(meta["tags"])
    assert "quantize: bits=4, group_size=64, mode=affine" in card
    assert "pulled from [org/gated-tiny]" in card
    run = [r for r in mlxd_json(env, "results") if r["model"] == "gated-tiny-4bit-g64"][0]
    assert f"| {run['generation_tps_mean']:.1f} |" in card
    shown.append(card)

    # The token is nowhere: not in the catalog, job rows, logs, queue, or anything shown.
    shown += [
        mlxd(env, "jobs", "show", str(pull_id), "--json").stdout,
        mlxd(env, "jobs", "logs", str(pull_id)).stdout,
        mlxd(env, "models", "show", "gated-tiny", "--json").stdout,
        mlxd(env, "results", "--md").stdout,
    ]
    assert not any(token in text for text in shown)
    for path in mlxd_home.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
